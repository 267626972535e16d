"""Bugs the CuPy double found, one regression test each (each fails without its fix).

`gpu` tests run on real CUDA when usable, else on the double (tests/conftest.py); the probe
test installs the double itself because it breaks the double's cuBLAS on purpose.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import gpu_sc
from gpu_sc.dispatch.provenance import provenance
from gpu_sc.provenance import last as last_record

BACKENDS = ["numpy", pytest.param("cupy", marks=pytest.mark.gpu)]


def _counts(n_cells=300, n_genes=300):
    return gpu_sc.datasets.synthetic(n_cells, n_genes=n_genes, seed=1)


# Rule: CuPy forbids implicit device->host conversion (np.asarray raises TypeError), and a
# cupyx matrix is not a scipy.sparse matrix (np.asarray makes it a 0-d object array).
@pytest.mark.gpu
@pytest.mark.parametrize("fmt", ["dense", "csr", "csc"])
def test_pipeline_accepts_counts_already_on_the_device(fmt):
    from gpu_sc.dispatch.arrays import array_module
    from gpu_sc.pipeline.validate import InputError, validate_counts

    am = array_module("cupy")
    adata = _counts()
    host = adata.X.toarray() if fmt == "dense" else adata.X.asformat(fmt)
    adata.X = am.asarray(host)
    validate_counts(adata)
    validate_counts(adata[::2])  # AnnData's view classes of device arrays, too
    bad = adata.copy()
    neg = host.astype(np.float64)
    neg[0, :] *= -1
    bad.X = am.asarray(sp.csr_matrix(neg) if fmt != "dense" else neg)
    with pytest.raises(InputError, match="negative values"):
        validate_counts(bad)

    gpu_sc.pipeline(adata, {"tsne": {"enabled": False}, "umap": {"enabled": False}}, backend="cupy")
    steps = provenance(adata)
    assert [p["step"] for p in steps if p["fallback_reason"]] == []


# Rule: cuBLAS/cuSPARSE load lazily (cupy/cublas.py imports cupy_backends...libs.cublas on
# first use); a missing libcublasLt raises ImportError then, so the probe must load them.
@pytest.mark.parametrize("error", [ImportError, OSError])
def test_cuda_probe_loads_cublas_and_a_missing_library_makes_cupy_unusable(monkeypatch, error):
    from gpu_sc.dispatch import cuda_status
    from gpu_sc.testing.cupy_double import install

    with install():
        import cupy

        def broken(self, other):
            raise error('Failure finding "libcublasLt.so.13 or libcublasLt.so.12"')

        monkeypatch.setattr(cupy.ndarray, "__matmul__", broken)
        cuda_status.cache_clear()
        status = cuda_status()
        assert not status.available and "libcublasLt" in status.reason
        adata = _counts(100, 150)
        gpu_sc.pp.normalize_total(adata, backend="auto")
        assert last_record(adata)["backend"] == "scanpy"
        monkeypatch.undo()
    assert cuda_status().reason != status.reason


# Rule (both backends): PAGA counts every stored kNN entry as an edge, as scanpy does (it sets
# a copy's data to ones), and must not change the caller's obsp["distances"] in place.
@pytest.mark.parametrize("backend", BACKENDS)
def test_paga_keeps_explicit_zero_distances_and_leaves_the_graph_alone(backend):
    import scanpy as sc

    rng = np.random.default_rng(0)
    n = 60
    rows = np.repeat(np.arange(n), 4)
    cols = (rows + rng.integers(1, n, rows.size)) % n
    data = rng.uniform(0.5, 2.0, rows.size)
    data[::7] = 0.0  # duplicate cells: explicit zero distances
    dist = sp.csr_matrix((data, (rows, cols)), shape=(n, n))
    dist.sum_duplicates()
    import anndata as ad
    import pandas as pd

    adata = ad.AnnData(np.zeros((n, 2), dtype=np.float32))
    adata.obs["g"] = pd.Categorical(np.arange(n) % 5 // 2 * 1 + (np.arange(n) % 7 == 0))
    conn = dist.copy()
    conn.data[:] = 1.0
    adata.obsp["distances"], adata.obsp["connectivities"] = dist, conn
    adata.uns["neighbors"] = {
        "connectivities_key": "connectivities",
        "distances_key": "distances",
        "params": {"method": "umap", "n_neighbors": 4},
    }
    ref = adata.copy()
    sc.tl.paga(ref, groups="g")
    nnz = adata.obsp["distances"].nnz
    gpu_sc.tl.paga(adata, groups="g", backend=backend)
    assert last_record(adata)["backend"] == backend
    assert adata.obsp["distances"].nnz == nnz  # the caller's graph is unchanged
    np.testing.assert_allclose(
        adata.uns["paga"]["connectivities"].toarray(),
        ref.uns["paga"]["connectivities"].toarray(),
        atol=1e-12,
    )
