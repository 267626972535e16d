"""Engine PAGA vs scanpy's on the same graph and labels; its output drives scanpy's plots."""

from __future__ import annotations

import numpy as np
import pytest
import scanpy as sc
from _cluster_pbmc3k import tutorial_clusters

import gpu_sc
from gpu_sc.provenance import last as last_record

BACKENDS = ["numpy", pytest.param("cupy", marks=pytest.mark.gpu)]


@pytest.fixture(scope="module")
def pbmc(pbmc3k_raw):
    return tutorial_clusters(pbmc3k_raw)


@pytest.mark.parametrize("backend", BACKENDS)
def test_paga_connectivities_equal_scanpys(pbmc, backend):
    ref = pbmc.copy()
    sc.tl.paga(ref, groups="leiden")
    ours = pbmc.copy()
    gpu_sc.tl.paga(ours, groups="leiden", backend=backend)
    assert last_record(ours)["backend"] == backend, last_record(ours)["fallback_reason"]
    r, o = ref.uns["paga"], ours.uns["paga"]
    assert o["groups"] == r["groups"] == "leiden"
    for key in ("connectivities", "connectivities_tree"):
        assert o[key].shape == r[key].shape
        np.testing.assert_allclose(o[key].toarray(), r[key].toarray(), rtol=0, atol=1e-6)
        np.testing.assert_array_equal(o[key].toarray() != 0, r[key].toarray() != 0)
    np.testing.assert_array_equal(ours.uns["leiden_sizes"], ref.uns["leiden_sizes"])


def test_paga_output_drives_scanpy_plot_and_umap_init(pbmc):
    adata = pbmc.copy()
    gpu_sc.tl.paga(adata, groups="leiden", backend="numpy")
    sc.pl.paga(adata, plot=False)  # computes the layout scanpy's plot and umap init use
    assert adata.uns["paga"]["pos"].shape == (len(adata.obs["leiden"].cat.categories), 2)
    sc.tl.umap(adata, init_pos="paga", maxiter=5, random_state=0)
    assert np.isfinite(adata.obsm["X_umap"]).all()
