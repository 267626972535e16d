"""Engine Leiden vs scanpy's igraph Leiden on the same graph: agreement, quality, determinism."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from _cluster_pbmc3k import tutorial_clusters
from sklearn.metrics import adjusted_rand_score

import gpu_sc
from gpu_sc.dispatch.arrays import array_module
from gpu_sc.kernels.leiden import leiden as leiden_kernel
from gpu_sc.kernels.leiden import modularity
from gpu_sc.provenance import last as last_record

BACKENDS = ["numpy", pytest.param("cupy", marks=pytest.mark.gpu)]
NP = array_module("numpy")
TUTORIAL = dict(resolution=0.9, n_iterations=2, directed=False, random_state=0)


def _synthetic_graph(difficulty: str):
    adata = gpu_sc.datasets.synthetic(3000, difficulty=difficulty, seed=0)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sc.pp.highly_variable_genes(adata, n_top_genes=1000)
    adata = adata[:, adata.var.highly_variable].copy()
    sc.pp.scale(adata, max_value=10)
    sc.tl.pca(adata, svd_solver="arpack")
    sc.pp.neighbors(adata, n_neighbors=10, n_pcs=40)
    return adata


@pytest.fixture(scope="module")
def graphs(pbmc3k_raw):
    """name -> AnnData with a neighbors graph and scanpy's igraph Leiden in obs['leiden']."""
    out = {"pbmc3k": tutorial_clusters(pbmc3k_raw)}
    for difficulty in ("separated", "overlapping"):
        adata = _synthetic_graph(difficulty)
        sc.tl.leiden(adata, flavor="igraph", **TUTORIAL)
        out[difficulty] = adata
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "dataset", [pytest.param("pbmc3k", marks=pytest.mark.slow), "separated", "overlapping"]
)
def test_leiden_matches_igraph_partition_and_quality(graphs, dataset, backend):
    ref = graphs[dataset]
    adata = ref.copy()
    del adata.obs["leiden"]
    gpu_sc.tl.leiden(adata, flavor="igraph", backend=backend, **TUTORIAL)
    assert last_record(adata)["backend"] == backend, last_record(adata)["fallback_reason"]
    ours = adata.obs["leiden"].cat.codes.to_numpy()
    theirs = ref.obs["leiden"].cat.codes.to_numpy()
    A = ref.obsp["connectivities"]
    q_ours, q_theirs = modularity(NP, A, ours, 0.9), modularity(NP, A, theirs, 0.9)
    ari = adjusted_rand_score(theirs, ours)
    print(
        f"{dataset}: clusters {len(set(ours))} (igraph {len(set(theirs))}), ARI {ari:.4f}, "
        f"modularity {q_ours:.5f} (igraph {q_theirs:.5f})"
    )
    assert ari >= 0.95
    assert q_ours >= q_theirs * 0.995


@pytest.mark.parametrize("backend", BACKENDS)
def test_leiden_writes_scanpy_layout_and_is_reproducible(graphs, backend):
    runs = []
    for _ in range(2):
        adata = graphs["pbmc3k"].copy()
        gpu_sc.tl.leiden(adata, flavor="igraph", key_added="cl", backend=backend, **TUTORIAL)
        runs.append(adata)
    a, b = runs
    assert isinstance(a.obs["cl"].dtype, pd.CategoricalDtype)
    n = len(a.obs["cl"].cat.categories)
    assert list(a.obs["cl"].cat.categories) == [str(i) for i in range(n)]
    sizes = a.obs["cl"].value_counts().reindex(a.obs["cl"].cat.categories).to_numpy()
    assert (np.diff(sizes) <= 0).all(), "clusters are numbered by decreasing size"
    assert a.uns["cl"]["params"] == {"resolution": 0.9, "random_state": 0, "n_iterations": 2}
    np.testing.assert_array_equal(a.obs["cl"].to_numpy(), b.obs["cl"].to_numpy())


def test_leiden_kernel_until_stable_matches_igraph_and_keeps_quality(graphs):
    """n_iterations=-1 (until no change) against igraph's own until-stable Leiden."""
    adata = graphs["separated"].copy()
    A = adata.obsp["connectivities"]
    sc.tl.leiden(
        adata,
        flavor="igraph",
        resolution=1.0,
        n_iterations=-1,
        directed=False,
        random_state=0,
        key_added="stable",
    )
    reference = adata.obs["stable"].cat.codes.to_numpy()
    labels = leiden_kernel(NP, A, resolution=1.0, n_iterations=-1, random_state=3)
    assert adjusted_rand_score(reference, labels) >= 0.95
    assert modularity(NP, A, labels) >= modularity(NP, A, reference) * (1 - 0.005)
    again = leiden_kernel(NP, A, resolution=1.0, n_iterations=1, random_state=3)
    assert modularity(NP, A, labels) >= modularity(NP, A, again) - 1e-12


def test_modularity_equals_igraph_modularity_of_scanpys_graph(graphs):
    from scanpy._utils import get_igraph_from_adjacency

    ref = graphs["pbmc3k"]
    A = ref.obsp["connectivities"]
    g = get_igraph_from_adjacency(A, directed=False)
    labels = ref.obs["leiden"].cat.codes.to_numpy()
    for gamma in (0.5, 0.9, 1.0):
        expected = g.modularity(labels.tolist(), weights="weight", resolution=gamma)
        assert modularity(NP, A, labels, gamma) == pytest.approx(expected, rel=1e-10)


def test_leiden_unsupported_options_fall_back_to_scanpy(graphs):
    adata = graphs["separated"].copy()
    gpu_sc.tl.leiden(
        adata, flavor="igraph", restrict_to=("leiden", ["0"]), backend="numpy", **TUTORIAL
    )
    assert "leiden_R" in adata.obs
    assert last_record(adata)["backend"] == "scanpy"
    assert "restrict_to" in last_record(adata)["fallback_reason"]


@pytest.mark.gpu
def test_leiden_cupy_agrees_with_numpy(graphs):
    import cupy

    A = graphs["pbmc3k"].obsp["connectivities"]
    host = leiden_kernel(NP, A, resolution=0.9, n_iterations=2, random_state=0)
    cp_am = array_module("cupy")
    device = leiden_kernel(
        cp_am,
        cp_am.asarray(A),
        resolution=0.9,
        n_iterations=2,
        random_state=0,
    )
    assert isinstance(device, cupy.ndarray)
    assert adjusted_rand_score(host, cupy.asnumpy(device)) >= 0.99
