"""tl.umap and tl.tsne on the engine: embedding quality against scanpy, and determinism."""

from __future__ import annotations

import numpy as np
import pytest
import scanpy as sc
import scipy.sparse
from _graph_data import assert_ran_on_engine, pbmc3k_tutorial, synthetic_atlas

import gpu_sc
from gpu_sc.dispatch.arrays import array_module
from gpu_sc.kernels import tsne as tsne_kernel
from gpu_sc.kernels.embedding_quality import (
    kl_divergence,
    neighbourhood_preservation,
    trustworthiness,
)

BACKENDS = ["numpy", pytest.param("cupy", marks=pytest.mark.gpu)]


@pytest.fixture(scope="module")
def pbmc_graph(pbmc3k_raw):
    """Tutorial PBMC3k with scanpy's tutorial neighbour graph (k=10, 40 PCs)."""
    adata = pbmc3k_tutorial(pbmc3k_raw).copy()
    sc.pp.neighbors(adata, n_neighbors=10, n_pcs=40)
    return adata


@pytest.fixture(scope="module")
def small_graph():
    adata = synthetic_atlas(600).copy()
    sc.pp.neighbors(adata, n_neighbors=15)
    return adata


def _quality(X, Y):
    return neighbourhood_preservation(X, Y, k=15), trustworthiness(X, Y, k=15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_pbmc3k_umap_quality_matches_scanpy(pbmc_graph, backend):
    ref = pbmc_graph.copy()
    sc.tl.umap(ref)
    new = pbmc_graph.copy()
    gpu_sc.tl.umap(new, backend=backend)
    assert_ran_on_engine(new, "umap", backend)
    # The graph UMAP reads is left exactly as it was.
    before, after = pbmc_graph.obsp["connectivities"], new.obsp["connectivities"]
    assert (before != after).nnz == 0 and np.array_equal(before.indices, after.indices)
    X = pbmc_graph.obsm["X_pca"][:, :40]
    ref_q, new_q = _quality(X, ref.obsm["X_umap"]), _quality(X, new.obsm["X_umap"])
    (p_ref, t_ref), (p_new, t_new) = ref_q, new_q
    assert abs(p_new - p_ref) <= 0.02, (p_new, p_ref)
    assert abs(t_new - t_ref) <= 0.02, (t_new, t_ref)
    Y = new.obsm["X_umap"]
    assert Y.shape == (new.n_obs, 2) and Y.dtype == np.float32 and np.isfinite(Y).all()
    assert new.uns["umap"] == ref.uns["umap"]  # {"params": {"a": ..., "b": ...}}


@pytest.mark.parametrize("backend", BACKENDS)
def test_umap_same_seed_gives_identical_embedding(small_graph, backend):
    runs = []
    for seed in (3, 3, 4):
        adata = small_graph.copy()
        gpu_sc.tl.umap(adata, random_state=seed, maxiter=60, backend=backend)
        runs.append(adata.obsm["X_umap"])
    assert np.array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])
    assert adata.uns["umap"]["params"]["random_state"] == 4  # scanpy records seeds != 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("init", ["obsm_key", "paga"])
def test_umap_given_initial_positions_are_used_like_scanpy(small_graph, backend, init):
    # With zero epochs, UMAP returns its initial layout rescaled to [0, 10]: both
    # implementations must start from the same place.
    adata = small_graph.copy()
    if init == "obsm_key":
        adata.obsm["X_start"] = adata.obsm["X_pca"][:, :2] * 3.0
        init_pos = "X_start"
    else:
        # What sc.tl.paga + sc.pl.paga leave in uns (scanpy 1.11's paga fails on the graph
        # type scipy 1.17 returns, so the coarse graph and positions are made up here).
        n_groups = adata.obs["cell_type"].cat.categories.size
        rng = np.random.default_rng(0)
        coarse = np.triu(rng.uniform(size=(n_groups, n_groups)), 1)
        adata.uns["paga"] = {
            "groups": "cell_type",
            "pos": rng.uniform(-5, 5, size=(n_groups, 2)),
            "connectivities": scipy.sparse.csr_matrix(coarse + coarse.T),
        }
        init_pos = "paga"
    ref, new = adata.copy(), adata.copy()
    sc.tl.umap(ref, init_pos=init_pos, maxiter=0)
    gpu_sc.tl.umap(new, init_pos=init_pos, maxiter=0, backend=backend)
    assert_ran_on_engine(new, "umap", backend)
    np.testing.assert_allclose(new.obsm["X_umap"], ref.obsm["X_umap"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_umap_spectral_initialisation_matches_umap_learn(small_graph, backend):
    ref, new = small_graph.copy(), small_graph.copy()
    sc.tl.umap(ref, maxiter=0)
    gpu_sc.tl.umap(new, maxiter=0, backend=backend)
    # Eigenvectors are defined up to sign (and rotation within a degenerate pair): compare
    # the two layouts through their pairwise-distance structure.
    d_ref = np.linalg.norm(ref.obsm["X_umap"][:, None] - ref.obsm["X_umap"][None], axis=-1)
    d_new = np.linalg.norm(new.obsm["X_umap"][:, None] - new.obsm["X_umap"][None], axis=-1)
    assert np.corrcoef(d_ref.ravel(), d_new.ravel())[0, 1] > 0.95


def test_unconverged_spectral_start_falls_back_to_random_layout_with_a_warning(monkeypatch):
    # CuPy's eigsh returns its last iterate instead of raising as ARPACK does: the engine
    # checks the residuals itself, so both backends reject an unconverged start alike.
    import scipy.sparse.linalg as spla

    from gpu_sc.kernels import umap as umap_kernel

    am = array_module("numpy")
    rng = np.random.default_rng(0)
    A = scipy.sparse.random(200, 200, density=0.05, random_state=1)
    A = ((A + A.T) + scipy.sparse.diags(np.ones(200))).tocsr()  # connected: self loops + noise
    A = (A + scipy.sparse.csr_matrix(np.ones((200, 200)) * 1e-3)).tocsr()
    good = umap_kernel.spectral_layout(am, A, 2, seed=0)
    assert good.shape == (200, 2) and np.abs(good).max() < 1.0  # eigenvectors, not [-10, 10]

    def unconverged(M, k, **kwargs):
        return np.linspace(0.1, 0.9, k), rng.normal(size=(M.shape[0], k))

    monkeypatch.setattr(spla, "eigsh", unconverged)
    with pytest.warns(UserWarning, match="Spectral initialisation failed.*residual"):
        fallback = umap_kernel.spectral_layout(am, A, 2, seed=0)
    expected = am.random_state(0).uniform(-10.0, 10.0, (200, 2))
    np.testing.assert_array_equal(fallback, expected)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_synthetic_atlas_umap_and_tsne_quality_match_scanpy(small_graph, backend):
    ref, new = small_graph.copy(), small_graph.copy()
    sc.tl.umap(ref)
    gpu_sc.tl.umap(new, backend=backend)
    sc.tl.tsne(ref)
    gpu_sc.tl.tsne(new, backend=backend)
    assert_ran_on_engine(new, "tsne", backend)
    X = small_graph.obsm["X_pca"]
    for key in ("X_umap", "X_tsne"):
        (p_ref, t_ref), (p_new, t_new) = _quality(X, ref.obsm[key]), _quality(X, new.obsm[key])
        assert abs(p_new - p_ref) <= 0.02, (key, p_new, p_ref)
        assert abs(t_new - t_ref) <= 0.02, (key, t_new, t_ref)
    P = tsne_kernel.joint_probabilities(array_module("numpy"), X, 30.0)
    kl_ref, kl_new = kl_divergence(P, ref.obsm["X_tsne"]), kl_divergence(P, new.obsm["X_tsne"])
    assert kl_new <= 1.05 * kl_ref, (kl_new, kl_ref)


@pytest.fixture(scope="module")
def pbmc_tsne(pbmc3k_raw):
    """scanpy's and the numpy engine's t-SNE of tutorial PBMC3k (40 PCs), computed once."""
    base = pbmc3k_tutorial(pbmc3k_raw).copy()
    ref, new = base.copy(), base.copy()
    sc.tl.tsne(ref, n_pcs=40)
    gpu_sc.tl.tsne(new, n_pcs=40, backend="numpy")
    assert_ran_on_engine(new, "tsne", "numpy")
    return base, ref, new


@pytest.mark.slow
def test_pbmc3k_tsne_quality_and_kl_match_scanpy(pbmc_tsne):
    base, ref, new = pbmc_tsne
    X = base.obsm["X_pca"][:, :40]
    ref_q, new_q = _quality(X, ref.obsm["X_tsne"]), _quality(X, new.obsm["X_tsne"])
    (p_ref, t_ref), (p_new, t_new) = ref_q, new_q
    assert abs(p_new - p_ref) <= 0.02, (p_new, p_ref)
    assert abs(t_new - t_ref) <= 0.02, (t_new, t_ref)
    # One objective for both: KL(P || Q) on the same affinities P.
    P = tsne_kernel.joint_probabilities(array_module("numpy"), X, 30.0)
    kl_ref, kl_new = kl_divergence(P, ref.obsm["X_tsne"]), kl_divergence(P, new.obsm["X_tsne"])
    assert kl_new <= 1.05 * kl_ref, (kl_new, kl_ref)
    assert abs(new.uns["tsne"]["kl_divergence"] - kl_new) <= 0.05 * kl_new


def test_tsne_writes_scanpy_outputs(pbmc_tsne):
    _, ref, new = pbmc_tsne
    Y = new.obsm["X_tsne"]
    assert Y.shape == ref.obsm["X_tsne"].shape and Y.dtype == ref.obsm["X_tsne"].dtype
    assert new.uns["tsne"]["params"] == ref.uns["tsne"]["params"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("repulsion", ["exact", pytest.param("fft", marks=pytest.mark.slow)])
def test_tsne_same_input_gives_identical_embedding(backend, repulsion):
    am = array_module(backend)
    X = am.asarray(synthetic_atlas(600).obsm["X_pca"][:300])
    runs = [
        tsne_kernel.tsne(am, X, learning_rate=200, max_iter=260, repulsion=repulsion)
        for _ in range(2)
    ]
    assert np.array_equal(am.to_host(runs[0][0]), am.to_host(runs[1][0]))
    assert runs[0][1] == runs[1][1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_tsne_fft_repulsion_agrees_with_exact(backend):
    am = array_module(backend)
    rng = np.random.default_rng(1)
    y = np.concatenate([rng.normal(size=(400, 2)) * 5, rng.normal(size=(300, 2)) + 20])
    y = am.asarray(y.astype(np.float32))
    rep_exact, z_exact = tsne_kernel._repulsion_exact(am, y)
    rep_exact = am.to_host(rep_exact)
    scale = np.abs(rep_exact).mean()
    # FIt-SNE's default grid (one box per unit, 3 nodes per box), and a finer one.
    for boxes_per_unit, tol_force, tol_z in ((1.0, 0.06, 3e-3), (2.0, 0.015, 5e-4)):
        rep_fft, z_fft = tsne_kernel._repulsion_fft(am, y, boxes_per_unit=boxes_per_unit)
        err = np.abs(am.to_host(rep_fft) - rep_exact).mean() / scale
        assert err <= tol_force, (boxes_per_unit, err)
        assert abs(z_fft - z_exact) <= tol_z * z_exact, (boxes_per_unit, z_fft, z_exact)


def test_tsne_joint_probabilities_under_fast_precision_use_float32_knn_and_stay_close():
    # precision="fast" computes t-SNE's kNN distances in float32 (the bulk of its work at
    # scale); the joint probabilities must stay those of the float64 search to rounding.
    from gpu_sc.dispatch.arrays import array_module
    from gpu_sc.kernels import tsne as tsne_k

    am = array_module("numpy")
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(c, 1.0, size=(150, 10)) for c in (0.0, 6.0)])
    P64 = tsne_k.joint_probabilities(am, X, 30.0)
    P32 = tsne_k.joint_probabilities(am, X, 30.0, knn_dtype=np.float32)
    assert P32.dtype == np.float64 and P32.nnz == P64.nnz
    assert (P32.indices == P64.indices).all()  # the same neighbours
    np.testing.assert_allclose(P32.toarray(), P64.toarray(), rtol=1e-4, atol=1e-9)
