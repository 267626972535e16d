"""pp.neighbors on the engine: exact kNN and connectivities against scanpy's exact path."""

from __future__ import annotations

import numpy as np
import pytest
import scanpy as sc
import scipy.spatial.distance
from _graph_data import assert_ran_on_engine, pbmc3k_tutorial, synthetic_atlas

import gpu_sc
from gpu_sc.dispatch.arrays import array_module
from gpu_sc.dispatch.registry import EngineContext, EngineUnsupported, engine_impl
from gpu_sc.kernels.knn import knn

BACKENDS = ["numpy", pytest.param("cupy", marks=pytest.mark.gpu)]


@pytest.fixture(scope="module")
def pbmc(pbmc3k_raw):
    return pbmc3k_tutorial(pbmc3k_raw)


def _sorted_csr(m):
    m = m.tocsr().copy()
    m.sort_indices()
    return m


def _neighbour_overlap(d_ref, d_new) -> float:
    """Mean fraction of each row's reference neighbours that the new graph also lists."""
    d_ref, d_new = d_ref.tocsr(), d_new.tocsr()
    kept = [
        np.intersect1d(d_ref[i].indices, d_new[i].indices).size / d_ref[i].nnz
        for i in range(d_ref.shape[0])
    ]
    return float(np.mean(kept))


def _connectivity_rel_diff(c_ref, c_new) -> float:
    """Largest relative difference per nonzero; raises if the sparsity patterns differ."""
    c_ref, c_new = _sorted_csr(c_ref), _sorted_csr(c_new)
    np.testing.assert_array_equal(c_ref.indptr, c_new.indptr)
    np.testing.assert_array_equal(c_ref.indices, c_new.indices)
    return float(np.max(np.abs(c_new.data - c_ref.data) / np.abs(c_ref.data)))


def _run_both(adata, backend, **kw):
    ref = adata.copy()
    sc.pp.neighbors(ref, **kw)
    new = adata.copy()
    gpu_sc.pp.neighbors(new, backend=backend, **kw)
    assert_ran_on_engine(new, "neighbors", backend)
    return ref, new


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "kw", [dict(), dict(n_neighbors=10, n_pcs=40)], ids=["default", "tutorial_k10_pcs40"]
)
def test_pbmc3k_umap_graph_matches_scanpy_exact_neighbours(pbmc, backend, kw):
    ref, new = _run_both(pbmc, backend, **kw)
    assert _neighbour_overlap(ref.obsp["distances"], new.obsp["distances"]) == 1.0
    d_ref, d_new = ref.obsp["distances"], new.obsp["distances"]
    k = kw.get("n_neighbors", 15)
    assert np.all(np.diff(d_new.indptr) == k - 1)  # self excluded, k - 1 per row
    # scanpy stores neighbours by increasing distance (unsorted columns); so does the engine.
    np.testing.assert_array_equal(d_new.indices, d_ref.indices)
    np.testing.assert_allclose(d_new.data, d_ref.data, rtol=1e-6)
    assert d_new.dtype == d_ref.dtype and new.obsp["connectivities"].dtype == np.float32
    rel = _connectivity_rel_diff(ref.obsp["connectivities"], new.obsp["connectivities"])
    assert rel <= 1e-5, rel
    assert new.uns["neighbors"] == ref.uns["neighbors"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_pbmc3k_gauss_connectivities_match_scanpy(pbmc, backend):
    ref, new = _run_both(pbmc, backend, n_neighbors=10, method="gauss")
    rel = _connectivity_rel_diff(ref.obsp["connectivities"], new.obsp["connectivities"])
    assert rel <= 1e-5, rel
    assert new.uns["neighbors"]["params"]["method"] == "gauss"


@pytest.mark.parametrize("backend", BACKENDS)
def test_pbmc3k_cosine_neighbours_match_scanpy(pbmc, backend):
    # scikit-learn computes cosine distances in float32 and the engine in float64: rare
    # near-ties at the k-th neighbour may resolve differently, distances agree to float32.
    ref, new = _run_both(pbmc, backend, metric="cosine")
    assert _neighbour_overlap(ref.obsp["distances"], new.obsp["distances"]) >= 0.999
    common = ref.obsp["distances"].multiply(new.obsp["distances"] > 0).tocsr()
    new_common = new.obsp["distances"].multiply(ref.obsp["distances"] > 0).tocsr()
    np.testing.assert_allclose(_sorted_csr(new_common).data, _sorted_csr(common).data, rtol=1e-4)
    assert new.uns["neighbors"]["params"]["metric"] == "cosine"


@pytest.mark.parametrize("backend", BACKENDS)
def test_synthetic_atlas_graph_matches_scanpy(backend):
    adata = synthetic_atlas(3000)
    ref, new = _run_both(adata, backend, n_neighbors=15)
    assert _neighbour_overlap(ref.obsp["distances"], new.obsp["distances"]) == 1.0
    rel = _connectivity_rel_diff(ref.obsp["connectivities"], new.obsp["connectivities"])
    assert rel <= 1e-5, rel


@pytest.mark.parametrize("backend", BACKENDS)
def test_key_added_and_use_rep_written_like_scanpy(pbmc, backend):
    ref, new = _run_both(pbmc, backend, n_neighbors=8, use_rep="X_pca", key_added="nn8")
    assert set(new.obsp.keys()) == {"nn8_distances", "nn8_connectivities"}
    assert new.uns["nn8"] == ref.uns["nn8"]
    assert new.uns["nn8"]["params"]["use_rep"] == "X_pca"


@pytest.mark.parametrize("backend", BACKENDS)
def test_knn_is_independent_of_tiling_and_breaks_ties_by_index(backend):
    # A tile's shape may change a distance's last bit through the BLAS (1.3e-15 was seen on
    # another machine), so tilings must agree to rounding, not bit for bit: same neighbours in
    # the same order wherever distances are not tied to rounding, distances within 1e-12.
    am = array_module(backend)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 12))
    X[150:160] = X[10]  # ten exact duplicates of point 10: ties at distance 0
    one_tile = knn(am, am.asarray(X), 20)
    tiled = knn(am, am.asarray(X), 20, tile_elements=20 * 64)
    idx, dist = am.to_host(one_tile[0]), am.to_host(one_tile[1])
    idx_t, dist_t = am.to_host(tiled[0]), am.to_host(tiled[1])
    np.testing.assert_allclose(dist_t, dist, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(_canonical_order(idx_t, dist_t), _canonical_order(idx, dist))
    assert np.array_equal(idx[:, 0], np.arange(300))  # self first
    assert set(idx[10, 1:11]) == set(range(150, 160))  # the duplicates are the nearest
    # after the point itself, exactly equal distances list the smaller index first
    tied = dist[:, 2:] == dist[:, 1:-1]
    assert tied.sum() >= 11 * 9  # the duplicates' rows do hold exact ties
    assert (idx[:, 2:][tied] > idx[:, 1:-1][tied]).all()
    exact = np.sqrt(((X[:, None] - X[None]) ** 2).sum(-1))
    np.testing.assert_allclose(dist, np.take_along_axis(exact, idx, axis=1), atol=1e-12)


def _canonical_order(idx, dist, tol=1e-9):
    """Neighbours ordered by distance rounded to ``tol``, then index: ties to rounding have
    one order whichever way the last bits fell."""
    key = np.round(dist / tol)
    order = np.stack([np.lexsort((i, k)) for i, k in zip(idx, key, strict=True)])
    return np.take_along_axis(idx, order, axis=1)


def test_unsupported_parameters_are_refused_before_touching_adata(pbmc):
    adata = pbmc.copy()
    impl = engine_impl("neighbors", "numpy")
    ctx = EngineContext(am=array_module("numpy"))
    base = dict(
        n_neighbors=15,
        n_pcs=None,
        use_rep=None,
        knn=True,
        method="umap",
        transformer=None,
        metric="euclidean",
        metric_kwds={},
        random_state=0,
        key_added=None,
        copy=False,
    )
    for change in (dict(transformer="pynndescent"), dict(knn=False), dict(metric="manhattan")):
        with pytest.raises(EngineUnsupported):
            impl(adata, ctx, **{**base, **change})
    assert "neighbors" not in adata.uns and "distances" not in adata.obsp


@pytest.mark.slow
def test_knn_merges_few_candidates_even_on_data_sorted_by_type(monkeypatch):
    # Atlases are often stored sorted by sample or cell type. The column blocks after the first
    # are filtered against each row's current k-th distance; with columns visited in order, a
    # first block of one type would let nearly all of a row's own type through (~1/8 of all
    # entries here). The engine must keep about k * (1 + ln(n / 1024)) candidates per row.
    from gpu_sc.kernels import knn as knn_k

    am = array_module("numpy")
    rng = np.random.default_rng(1)
    n, k, n_types = 8000, 15, 8
    centers = rng.normal(scale=5.0, size=(n_types, 20))
    X = np.concatenate([c + rng.normal(size=(n // n_types, 20)) for c in centers])
    seen = {"entries": 0, "candidates": 0}
    original = knn_k._within_threshold

    def counting(xp, d, kth, columns):
        out = original(xp, d, kth, columns)
        seen["entries"] += d.size
        if out is not None:
            seen["candidates"] += int(np.isfinite(out[0]).sum())
        return out

    monkeypatch.setattr(knn_k, "_within_threshold", counting)
    idx, dist = knn_k.knn(am, X, k, tile_elements=2**20)
    assert seen["entries"] > 0.8 * n * n  # the filter saw (nearly) every distance
    assert seen["candidates"] / n < 2 * k * (1 + np.log(n / 1024))
    # by differences, as the broadcast (X[:, None] - X[None]) would, without its 9.5 GiB cube
    exact = scipy.spatial.distance.cdist(X, X, "sqeuclidean")
    expected = np.argsort(exact, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(idx, expected)


def test_knn_tile_size_does_not_follow_free_device_memory():
    # The tile's shape sets the matrix products' shapes, which can change a distance's last
    # bit: sizing it from free memory would make neighbours at near ties vary between runs.
    from types import SimpleNamespace

    from gpu_sc.kernels import knn as knn_k

    def with_free(free):
        return knn_k.default_tile_elements(SimpleNamespace(free_memory=lambda: free))

    host = with_free(None)
    roomy = {with_free(gib * 2**30) for gib in (20, 40, 70, 139)}
    assert len(roomy) == 1 and roomy.pop() > host
    tight = with_free(2 * 2**30)  # little free memory: smaller tiles rather than out-of-memory
    assert host <= tight < with_free(40 * 2**30)
