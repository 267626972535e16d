"""The fused UMAP epoch (``umap_epoch``) and t-SNE step (``tsne_step``): proven without a GPU.

- ``cudasim``: the kernels on numba-cuda's simulator against their array-generic references
  (:func:`gpu_sc.kernels.umap.layout_epoch` with hashed negatives,
  :func:`gpu_sc.kernels.tsne.descent_step`), on tiny inputs with an isolated vertex / a row of
  ``P`` without neighbours; the same input twice gives the same bits;
- ``ptx``: their PTX (sm_80, sm_90) holds no atomic instruction (the determinism argument);
- unmarked: the hashed negatives give the stream's embedding quality, and the CuPy double
  prices one launch per UMAP epoch.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from gpu_sc.dispatch import array_module
from gpu_sc.kernels import cuda as kcuda
from gpu_sc.kernels import tsne as tsne_k
from gpu_sc.kernels import umap as umap_k

NUMPY = array_module("numpy")
A, B = 1.577, 0.895  # find_ab_params(1.0, 0.5)


def _graph(n=24, isolated=5, seed=1):
    g = sp.random(n, n, density=0.15, random_state=seed, format="csr")
    g = (g + g.T).tolil()
    g.setdiag(0)
    g[isolated, :] = 0
    g[:, isolated] = 0
    g = g.tocsr()
    g.eliminate_zeros()
    return g


def _simulator_only(kernel_xp):
    if kernel_xp is not np:
        pytest.skip("runs the numpy engine through the simulator")


@pytest.fixture
def kernel_xp():
    status = kcuda.numba_cuda_status()
    if status.simulator:
        return np
    if status.fused:
        import cupy

        return cupy
    pytest.fail(f"cudasim tests need the simulator or a device: {status.reason}")


# -- UMAP -----------------------------------------------------------------------------------------


def _layout(g, y0, n_epochs, *, simulate, seed=7):
    kw = dict(n_epochs=n_epochs, a=A, b=B, gamma=1.0, initial_alpha=1.0, seed=seed)
    if not simulate:
        return umap_k.optimize_layout(NUMPY, y0, g, negatives="hash", **kw), None
    with kcuda.kernel_log() as ran, kcuda.simulate():
        y = umap_k.optimize_layout(NUMPY, y0, g, negatives="hash", **kw)
    return y, ran


@pytest.mark.cudasim
def test_umap_epoch_kernel_matches_the_reference_and_repeats_bit_for_bit(kernel_xp):
    _simulator_only(kernel_xp)
    g = _graph()
    y0 = np.random.default_rng(0).uniform(0, 10, (g.shape[0], 2)).astype(np.float32)
    # Two epochs (epoch 0 samples nothing, epoch 1 every edge of maximal weight, with its
    # negative samples): the same sums in the same order, so equal up to the float32 rounding
    # of pow (simulator vs NumPy).
    ref1, _ = _layout(g, y0, 2, simulate=False)
    got1, ran = _layout(g, y0, 2, simulate=True)
    assert [e["how"] for e in ran] == [kcuda.SIMULATED] * 2
    assert ran[0]["kernel"] == "umap_epoch"
    np.testing.assert_allclose(got1, ref1, rtol=0, atol=2e-6)
    assert not np.array_equal(got1, y0)
    # Six epochs (schedule, negative debt, alpha decay): still the reference's trajectory.
    ref, _ = _layout(g, y0, 6, simulate=False)
    got, ran = _layout(g, y0, 6, simulate=True)
    assert len(ran) == 6 and {e["how"] for e in ran} == {kcuda.SIMULATED}
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4)
    # The isolated vertex never moves (no edge, never a sample's source).
    np.testing.assert_array_equal(got[5], y0[5])
    # Deterministic: the same input and seed give the same bits; another seed does not.
    again, _ = _layout(g, y0, 6, simulate=True)
    assert np.array_equal(got, again)
    other, _ = _layout(g, y0, 6, simulate=True, seed=8)
    assert not np.array_equal(got, other)


@pytest.mark.cudasim
def test_umap_epoch_kernel_keeps_the_edge_schedule_of_the_reference(kernel_xp):
    # The double-buffered schedule and the negative debt after an epoch equal the reference's
    # in-place ones (light edges: some inactive in the epoch).
    _simulator_only(kernel_xp)
    g = _graph(n=20, isolated=0, seed=4)
    g.data = np.linspace(0.05, 1.0, g.nnz)[np.argsort(g.data)]
    g = ((g + g.T) / 2).tocsr()
    y0 = np.random.default_rng(2).uniform(0, 10, (20, 2)).astype(np.float32)
    states, ys = [], []
    for mode in ("reference", "kernel"):
        st = umap_k.layout_state(NUMPY, g, n_epochs=20, seed=3, negatives="hash")
        y = y0.copy()
        for epoch in range(4):
            if mode == "reference":
                y = umap_k.layout_epoch(NUMPY, y, st, epoch, 1.0 - epoch / 20, A, B, 1.0)
            else:
                with kcuda.simulate():
                    y = kcuda.run_kernel(
                        NUMPY, "umap_epoch", y, st, epoch, 1.0 - epoch / 20, A, B, 1.0
                    )
        states.append(st)
        ys.append(y)
    np.testing.assert_array_equal(states[1].next_sample, states[0].next_sample)
    np.testing.assert_array_equal(states[1].next_neg, states[0].next_neg)
    assert (states[0].next_sample > 1).any() and (states[0].next_sample < 4).any()
    np.testing.assert_allclose(ys[1], ys[0], rtol=0, atol=1e-4)


def test_hashed_negative_samples_are_uniform_and_counter_based():
    edges = np.repeat(np.arange(2000), 5)
    samples = np.tile(np.arange(5), 2000)
    k = umap_k.negative_samples(NUMPY, 11, 3, edges, samples, 50)
    assert k.min() >= 0 and k.max() < 50
    counts = np.bincount(k, minlength=50)
    assert counts.min() > 130 and counts.max() < 270  # 200 expected per vertex
    again = umap_k.negative_samples(NUMPY, 11, 3, edges[::-1], samples[::-1], 50)
    np.testing.assert_array_equal(again[::-1], k)  # a function of the counters, not the order
    assert not np.array_equal(umap_k.negative_samples(NUMPY, 11, 4, edges, samples, 50), k)


def test_hashed_negatives_give_the_stream_embedding_quality():
    # The kernel's scheme against the exact path's random stream: the same statistics
    # (neighbourhood preservation and trustworthiness within 0.02) on five Gaussian clusters.
    from gpu_sc.kernels.connectivities import fuzzy_simplicial_set
    from gpu_sc.kernels.embedding_quality import neighbourhood_preservation, trustworthiness
    from gpu_sc.kernels.knn import knn

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 10)) + 4 * rng.normal(size=(5, 10))[rng.integers(0, 5, 300)]
    idx, dist = knn(NUMPY, X, 15)
    g = fuzzy_simplicial_set(NUMPY, idx, dist, 300, 15).tocsr()
    g.data[g.data < g.data.max() / 200] = 0
    g.eliminate_zeros()
    y0 = rng.uniform(0, 10, (300, 2)).astype(np.float32)
    quality = {}
    for negatives in ("stream", "hash"):
        y = umap_k.optimize_layout(
            NUMPY, y0, g, n_epochs=200, a=A, b=B, seed=1, negatives=negatives
        )
        quality[negatives] = (
            neighbourhood_preservation(X, y, k=15),
            trustworthiness(X, y, k=15),
        )
    (p_s, t_s), (p_h, t_h) = quality["stream"], quality["hash"]
    assert abs(p_h - p_s) <= 0.02, quality
    assert abs(t_h - t_s) <= 0.02, quality
    assert t_h > 0.8, quality


def test_double_prices_one_launch_per_umap_epoch():
    from gpu_sc.testing.cupy_double import install

    g = _graph(n=60, isolated=3)
    y0 = np.random.default_rng(0).uniform(0, 10, (60, 2)).astype(np.float32)
    with install() as double:
        am = array_module("cupy")
        before = double.counters.snapshot()
        with kcuda.kernel_log() as ran:
            y = umap_k.optimize_layout(
                am,
                am.asarray(y0),
                am.sparse.csr_matrix(g),
                n_epochs=30,
                a=A,
                b=B,
                seed=7,
                negatives="hash",
            )
        after = double.counters.snapshot()
        y = y.get()
    assert len(ran) == 30 and {e["how"] for e in ran} == {kcuda.PRICED}
    assert (
        after["by_name"]["kernel:umap_epoch"] - before["by_name"].get("kernel:umap_epoch", 0) == 30
    )
    # the reference's per-epoch calls (fancy indexing, sparse products, bincount) are gone
    assert after["by_name"].get("cupy.bincount", 0) == before["by_name"].get("cupy.bincount", 0)
    ref, _ = _layout(g, y0, 30, simulate=False)
    np.testing.assert_array_equal(y, ref)  # the double runs the reference


# -- t-SNE ----------------------------------------------------------------------------------------


def _tsne_case(n=40, seed=0, empty_row=7):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    X[: n // 2] += 3
    P = tsne_k.joint_probabilities(NUMPY, X, 5.0).tolil()
    P[empty_row, :] = 0
    P[:, empty_row] = 0
    P = P.tocsr()
    P.eliminate_zeros()
    P.sort_indices()
    y = (rng.normal(size=(n, 2)) * 3).astype(np.float32)
    upd = (rng.normal(size=(n, 2)) * 0.1).astype(np.float32)
    gains = rng.uniform(0.5, 1.5, (n, 2)).astype(np.float32)
    return P, y, upd, gains


@pytest.mark.cudasim
@pytest.mark.parametrize("repulsion", ["exact", "fft"])
def test_tsne_step_kernels_match_the_reference(kernel_xp, repulsion):
    # Attraction (a row of P without entries included), repulsion, Z, gains, momentum, step,
    # and the KL error of a check iteration: the reference's, to float32 rounding.
    P, y, upd, gains = _tsne_case()
    rows = tsne_k._entry_rows(NUMPY, P)
    ref = tsne_k.descent_step(
        NUMPY,
        y.copy(),
        upd.copy(),
        gains.copy(),
        tsne_k.TsneState(P, rows, repulsion),
        0.5,
        100.0,
        True,
    )
    spec = kcuda.registry()["tsne_step"]
    xp = kernel_xp
    state = tsne_k.TsneState(P, rows, repulsion)
    if xp is not np:
        import cupyx.scipy.sparse as csp

        state = tsne_k.TsneState(csp.csr_matrix(P), None, repulsion)
    args = [xp.asarray(a.copy()) for a in (y, upd, gains)]
    got = spec.launch(xp, kcuda.jitted("tsne_step"), *args, state, 0.5, 100.0, True)
    host = [np.asarray(a.get() if xp is not np else a) for a in got[:4]]
    for name, g, r in zip(("y", "update", "gains", "grad"), host, ref[:4], strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5, err_msg=name)
    np.testing.assert_array_equal(host[2], ref[2])  # gains: the same sign decisions
    assert got[4] == pytest.approx(ref[4], rel=1e-9)
    # The row without neighbours feels only the repulsion.
    assert np.all(np.asarray(ref[3])[7] != 0)
    # Deterministic: again, the same bits.
    args = [xp.asarray(a.copy()) for a in (y, upd, gains)]
    again = spec.launch(xp, kcuda.jitted("tsne_step"), *args, state, 0.5, 100.0, True)
    host2 = [np.asarray(a.get() if xp is not np else a) for a in again[:4]]
    for g, g2 in zip(host, host2, strict=True):
        assert np.array_equal(g, g2)


@pytest.mark.cudasim
def test_tsne_through_the_kernels_matches_the_reference(kernel_xp, monkeypatch):
    # The whole optimisation (both phases, error checks, stopping) through tsne_step on the
    # simulator, shortened: 4 exaggerated iterations, checks every 3.
    _simulator_only(kernel_xp)
    monkeypatch.setattr(tsne_k, "_EXPLORATION_ITER", 4)
    monkeypatch.setattr(tsne_k, "_N_ITER_CHECK", 3)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 5))
    X[:20] += 3
    for repulsion in ("exact", "fft"):
        y_ref, kl_ref, it_ref, _ = tsne_k.tsne(
            NUMPY, X, perplexity=5.0, max_iter=8, repulsion=repulsion
        )
        with kcuda.kernel_log() as ran, kcuda.simulate():
            y, kl, it, _ = tsne_k.tsne(NUMPY, X, perplexity=5.0, max_iter=8, repulsion=repulsion)
        steps = [e for e in ran if e["kernel"] == "tsne_step"]  # (the kNN of P runs too)
        assert len(steps) == 8 and {e["how"] for e in steps} == {kcuda.SIMULATED}
        assert it == it_ref == 7
        np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-4 * np.abs(y_ref).max())
        assert kl == pytest.approx(kl_ref, rel=1e-6)


def test_tsne_step_costs_declare_two_launches_exact_and_three_kernels_fft():
    from gpu_sc.kernels.cuda import tsne as kt

    exact = kt.exact_cost(2000, 60_000)
    assert exact.launches == 2 and exact.syncs == 0
    assert exact.flops >= 12 * 2000 * 1999
    fft = kt.fft_cost(10**6, 9 * 10**7)
    assert fft.syncs == 1 and 3 < fft.launches < 40
    with_error = kt.exact_cost(2000, 60_000, compute_error=True)
    assert with_error.syncs == 1 and with_error.launches > exact.launches


# -- PTX ------------------------------------------------------------------------------------------


@pytest.mark.ptx
def test_embedding_kernels_compile_without_atomics():
    # No atomic instruction in any of them: the per-vertex / per-row sums are gathers in a
    # fixed order, which is why a launch gives the same bits every time.
    code = (
        "import re\n"
        "from numba import cuda\n"
        "from gpu_sc.kernels import cuda as k\n"
        "for name in ('umap_epoch', 'tsne_step'):\n"
        "    spec = k.registry()[name]\n"
        "    funcs = spec.kernels()\n"
        "    for fname, sigs in spec.signatures.items():\n"
        "        for cc in ((8, 0), (9, 0)):\n"
        "            ptx, _ = cuda.compile_ptx(funcs[fname].py_func, sigs[0], cc=cc)\n"
        "            assert '.entry' in ptx and f'.target sm_{cc[0]}{cc[1]}' in ptx\n"
        "            print(fname, cc, bool(re.search(r'\\b(atom|red)\\.', ptx)))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.split("\n")
    lines = [line for line in lines if line.strip()]
    assert len(lines) == 10, out.stdout
    assert all(line.endswith("False") for line in lines), out.stdout


def test_umap_negatives_follow_the_precision_and_are_recorded():
    # exact (numpy's default): the random stream, as before; fast: the hashed negatives the
    # kernel computes (through umap_epoch: the reference on numpy); the provenance says which.
    import anndata

    import gpu_sc
    from gpu_sc.provenance import last as last_record

    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 6)) + 3 * rng.normal(size=(3, 6))[rng.integers(0, 3, 120)]
    base = anndata.AnnData(X.astype(np.float32))
    base.obsm["X_pca"] = X
    gpu_sc.pp.neighbors(base, n_neighbors=10, use_rep="X_pca", backend="numpy")
    out = {}
    for precision in ("exact", "fast"):
        a = base.copy()
        gpu_sc.tl.umap(a, maxiter=30, backend="numpy", precision=precision)
        record = last_record(a)  # a single step's record: the in-process log
        engine = record["engine"]
        assert engine["precision"] == precision
        want = "stream" if precision == "exact" else "hash"
        assert engine["umap"] == {"negative_samples": want}
        ran = "umap_epoch x30 (reference)" in str(record)  # the note lists the kernel calls
        assert ran == (precision == "fast"), record
        out[precision] = a.obsm["X_umap"]
    assert not np.array_equal(out["exact"], out["fast"])
    assert np.isfinite(out["fast"]).all()
