"""IVF-Flat approximate neighbours (gpu_sc.kernels.ivf): recall, determinism, the auto switch,
the provenance."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

import gpu_sc
from gpu_sc.dispatch.arrays import array_module
from gpu_sc.engine.neighbors import knn_algorithm
from gpu_sc.kernels.ivf import (
    AUTO_IVF_CELLS,
    IVFFlat,
    default_nlist,
    default_nprobe,
    ivf_knn,
    kmeans,
)
from gpu_sc.kernels.knn import knn
from gpu_sc.pipeline import PipelineConfig
from gpu_sc.pipeline.plan import knn_transformer
from gpu_sc.provenance import last as last_record

NP = array_module("numpy")


def _blobs(n: int, d: int = 10, centers: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, d)) * 4
    return c[rng.integers(0, centers, n)] + rng.normal(size=(n, d))


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = [np.intersect1d(a[1:], b[1:]).size for a, b in zip(found, truth, strict=True)]
    return float(np.mean(hits) / (truth.shape[1] - 1))


@pytest.fixture(scope="module")
def atlas_pca():
    """50-component PCA of a 20,000-cell synthetic atlas (the tutorial's preprocessing)."""
    adata = gpu_sc.datasets.synthetic(20_000, 1000, seed=0)
    off = ("neighbors", "leiden", "paga", "umap", "tsne", "rank_genes_groups")
    gpu_sc.pipeline(adata, {s: {"enabled": False} for s in off}, backend="numpy", atomic=False)
    return np.ascontiguousarray(adata.obsm["X_pca"][:, :50])


@pytest.mark.slow
def test_recall_at_defaults_on_20k_synthetic_atlas(atlas_pca):
    """Recall@15 >= 0.95 at the default nlist/nprobe, against exact search of 2000 queries."""
    X, k = atlas_pca, 15
    idx, dist, info = ivf_knn(NP, X, k)
    assert info["nlist"] == default_nlist(X.shape[0]) == 128
    assert info["nprobe"] == default_nprobe(128) == 16
    rows = np.sort(np.random.default_rng(0).choice(X.shape[0], 2000, replace=False))
    sq = np.einsum("ij,ij->i", X, X)
    d = sq[rows, None] - 2 * X[rows] @ X.T + sq[None, :]
    d[np.arange(len(rows)), rows] = -np.inf
    truth = np.argsort(d, axis=1, kind="stable")[:, :k]
    assert _recall(idx[rows], truth) >= 0.95
    assert (idx[:, 0] == np.arange(X.shape[0])).all() and (dist[:, 0] == 0).all()
    assert (np.diff(dist, axis=1) >= 0).all()


def test_probing_every_list_is_exact_search():
    X = _blobs(1500)
    ei, ed = knn(NP, X, 12)
    ii, idd, info = ivf_knn(NP, X, 12, params=IVFFlat(nlist=16, nprobe=16))
    assert info["nprobe"] == 16 and "exact_rows" not in info
    np.testing.assert_array_equal(ii, ei)
    np.testing.assert_allclose(idd, ed, rtol=1e-9, atol=1e-12)


def test_cosine_probing_every_list_matches_exact_cosine():
    X = _blobs(800, seed=3)
    ei, ed = knn(NP, X, 8, "cosine")
    ii, idd, _ = ivf_knn(NP, X, 8, "cosine", params=IVFFlat(nlist=8, nprobe=8))
    assert _recall(ii, ei) == 1.0
    np.testing.assert_allclose(np.sort(idd, axis=1), np.sort(ed, axis=1), atol=1e-9)


def test_deterministic_and_short_rows_searched_exactly():
    """Bitwise the same twice; with one probed list of ~6 points and k = 10, rows without
    enough candidates are searched exactly (every row ends with k finite neighbours)."""
    X = _blobs(200, seed=1)
    p = IVFFlat(nlist=32, nprobe=1)
    a = ivf_knn(NP, X, 10, params=p)
    b = ivf_knn(NP, X, 10, params=p)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2]["exact_rows"] > 0
    assert np.isfinite(a[1]).all() and (a[0] < 200).all()
    assert (a[0][:, 0] == np.arange(200)).all()
    assert len({tuple(sorted(r)) for r in a[0][:5]}) == 5  # no duplicated padding


def test_kmeans_fixed_seed_and_empty_lists_kept():
    X = _blobs(300, d=4, centers=3)
    c1 = kmeans(NP, X, 8, n_iter=5, seed=0)
    c2 = kmeans(NP, X, 8, n_iter=5, seed=0)
    np.testing.assert_array_equal(c1, c2)
    assert c1.shape == (8, 4) and np.isfinite(c1).all()
    dup = np.repeat(X[:2], 10, axis=0)  # 2 distinct points, 4 centroids: 2 stay empty
    assert np.isfinite(kmeans(NP, dup, 4, n_iter=3)).all()


def test_auto_switch_threshold_and_overrides():
    assert AUTO_IVF_CELLS == 200_000
    assert knn_algorithm(None, AUTO_IVF_CELLS - 1) == "exact"
    assert knn_algorithm(None, AUTO_IVF_CELLS) == "ivf"
    assert knn_algorithm("sklearn", 10**7) == "exact"
    assert knn_algorithm("ivf", 100) == "ivf"
    assert knn_algorithm(IVFFlat(nlist=4), 100) == "ivf"
    # The pipeline config: algorithm / nlist / nprobe become scanpy's transformer.
    c = PipelineConfig.from_dict({"neighbors": {"algorithm": "auto", "nprobe": 32}}).neighbors
    assert knn_transformer(c, AUTO_IVF_CELLS - 1) is None  # below: scanpy's default
    assert knn_transformer(c, AUTO_IVF_CELLS) == IVFFlat(nprobe=32)
    c = PipelineConfig.from_dict({"neighbors": {"algorithm": "exact"}}).neighbors
    assert knn_transformer(c, 10**7) == "sklearn"
    c = PipelineConfig.from_dict({"neighbors": {"algorithm": "ivf"}}).neighbors
    assert knn_transformer(c, 10) == "ivf"
    assert knn_transformer(PipelineConfig().neighbors, 1000) is None
    with pytest.raises(ValueError, match="algorithm"):
        PipelineConfig.from_dict({"neighbors": {"algorithm": "hnsw"}})


def _adata(n=600) -> ad.AnnData:
    a = ad.AnnData(np.zeros((n, 3), dtype=np.float32))
    a.obsm["X_pca"] = _blobs(n, d=20, seed=2).astype(np.float32)
    return a


def test_provenance_records_algorithm_nlist_nprobe():
    a = _adata()
    gpu_sc.pp.neighbors(
        a, n_neighbors=10, use_rep="X_pca", transformer=IVFFlat(nlist=16, nprobe=4), backend="numpy"
    )
    eng = last_record(a)["engine"]
    assert eng["knn"]["algorithm"] == "ivf_flat"
    assert (eng["knn"]["nlist"], eng["knn"]["nprobe"]) == (16, 4)
    assert eng["knn"]["auto"] is False and eng["precision"] == "exact"
    assert a.obsp["distances"].nnz == 600 * 9
    b = _adata()
    gpu_sc.pp.neighbors(b, n_neighbors=10, use_rep="X_pca", backend="numpy")
    assert last_record(b)["engine"]["knn"] == {"algorithm": "exact", "auto": True}


@pytest.mark.gpu
def test_ivf_on_cupy_matches_numpy():
    """The same lists and neighbours on the cupy backend (the double in CI)."""
    X = _blobs(500, seed=4)
    cp = array_module("cupy")
    i_np, d_np, info_np = ivf_knn(NP, X, 10, params=IVFFlat(nlist=8, nprobe=3))
    i_cp, d_cp, info_cp = ivf_knn(cp, cp.asarray(X), 10, params=IVFFlat(nlist=8, nprobe=3))
    assert info_np == info_cp
    np.testing.assert_array_equal(cp.to_host(i_cp), i_np)
    np.testing.assert_allclose(cp.to_host(d_cp), d_np, rtol=1e-12)
