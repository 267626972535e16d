"""Fused CUDA kernels (gpu_sc.kernels.cuda): proven without a GPU.

- ``cudasim``: each kernel runs on numba-cuda's simulator (NUMBA_ENABLE_CUDASIM=1, set by
  conftest.py before numba's import; on a machine with a CUDA device, on the device) against
  its array-generic reference, on small inputs with the edge cases;
- ``ptx``: each registered kernel compiles to PTX for sm_80 and sm_90 (a subprocess without
  the simulator: ``python -m gpu_sc.kernels.cuda.compile``);
- unmarked: the chooser (what runs on numpy, on the CuPy double, without numba-cuda) and the
  declared costs reaching the double's counters.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from gpu_sc.dispatch import array_module
from gpu_sc.kernels import cuda as kcuda
from gpu_sc.kernels import knn as knn_k
from gpu_sc.kernels import markers as markers_k

NUMPY = array_module("numpy")
EMPTY = np.iinfo(np.int64).max


@pytest.fixture
def kernel_xp():
    """The arrays the kernels take here: NumPy on the simulator, CuPy on a real device."""
    status = kcuda.numba_cuda_status()
    if status.simulator:
        return np
    if status.fused:
        import cupy

        return cupy
    pytest.fail(f"cudasim tests need the simulator or a device: {status.reason}")


def _launch(xp, name, *args, **kwargs):
    """Run kernel ``name`` on host ``args`` (moved to ``xp``), results back on the host."""
    spec = kcuda.registry()[name]
    moved = [xp.asarray(a) if isinstance(a, np.ndarray) else a for a in args]
    out = spec.launch(xp, kcuda.jitted(name), *moved, **kwargs)
    to_host = (lambda a: a.get()) if xp is not np else np.asarray
    return tuple(to_host(o) for o in out)


def _reference(name, *args, **kwargs):
    args = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    return kcuda.registry()[name].reference(NUMPY, *args, **kwargs)


# -- kNN: tile + top-k -------------------------------------------------------------------------


def _tile_case(
    r, c, k, d=6, *, seed=0, metric="euclidean", dtype=np.float64, dup=False, self_every=True
):
    rng = np.random.default_rng(seed)
    a = rng.integers(-2, 3, size=(r, d)).astype(dtype)  # small integers: many exact ties
    b = rng.integers(-2, 3, size=(c, d)).astype(dtype)
    if dup:
        b[1::2] = b[0::2][: len(b[1::2])]  # duplicate points: equal distances, other indices
    if metric == "cosine":
        for m in (a, b):
            norms = np.sqrt((m * m).sum(1))
            m /= np.where(norms > 0, norms, 1)[:, None]
    g = a @ b.T
    sq_a, sq_b = (a * a).sum(1), (b * b).sum(1)
    col_ids = rng.permutation(10 * c)[:c].astype(np.int64)
    self_col = np.where(np.arange(r) < c, np.arange(r), -1).astype(np.int64)
    if not self_every:
        self_col[:] = -1
    best_d = np.full((r, k), np.inf)
    best_i = np.full((r, k), EMPTY, dtype=np.int64)
    return g, sq_a.astype(dtype), sq_b.astype(dtype), col_ids, self_col, best_d, best_i


@pytest.mark.cudasim
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_knn_tile_topk_matches_reference_with_ties_over_two_tiles(kernel_xp, metric):
    # Two tiles merged in turn into the same running top k; integer coordinates and duplicated
    # points make many exactly equal distances, which must be ranked by the smaller index.
    t1 = _tile_case(9, 140, 5, metric=metric, dup=True, seed=1)
    t2 = _tile_case(9, 70, 5, metric=metric, dup=True, seed=2, self_every=False)
    ref = _reference("knn_tile_topk", *t1, metric=metric)
    ref = _reference("knn_tile_topk", *t2[:5], *ref, metric=metric)
    got = _launch(kernel_xp, "knn_tile_topk", *t1, metric=metric)
    got = _launch(kernel_xp, "knn_tile_topk", *t2[:5], *got, metric=metric)
    np.testing.assert_array_equal(got[1], ref[1])
    np.testing.assert_array_equal(got[0], ref[0])
    assert (got[0][:, 0] == -np.inf).all()  # the point itself first (tile 1 holds it)
    d = np.diff(np.where(np.isinf(got[0]), -1e300, got[0]), axis=1)
    assert (d >= 0).all()


@pytest.mark.cudasim
def test_knn_tile_topk_k_larger_than_candidates_and_empty_rows(kernel_xp):
    # 3 candidate columns for k = 6: three slots stay empty (inf, 2**63 - 1); a tile with no
    # columns at all leaves every row as it was; float32 tiles are computed in float32.
    case = _tile_case(5, 3, 6, dtype=np.float32, self_every=False)
    ref = _reference("knn_tile_topk", *case)
    got = _launch(kernel_xp, "knn_tile_topk", *case)
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_array_equal(g, r)
    assert (got[1][:, 3:] == EMPTY).all() and np.isinf(got[0][:, 3:]).all()
    assert (got[1][:, :3] != EMPTY).all()
    empty = _tile_case(5, 0, 6)
    got_e = _launch(kernel_xp, "knn_tile_topk", *empty[:5], got[0].copy(), got[1].copy())
    np.testing.assert_array_equal(got_e[1], got[1])


@pytest.mark.cudasim
def test_knn_tile_topk_float32_tile_with_float64_norms(kernel_xp):
    # precision="fast": a float32 GEMM tile with float64 norms, rounded to float32 after each
    # operation as NumPy/CuPy's in-place float32 arithmetic does; self given out of range
    # (any value outside [0, c) means "not in this tile").
    g, sq_a, sq_b, col_ids, self_col, best_d, best_i = _tile_case(7, 50, 4, dtype=np.float32)
    rng = np.random.default_rng(5)
    sq_a = sq_a.astype(np.float64) + rng.random(7) * 1e-3  # not float32-exact
    sq_b = sq_b.astype(np.float64) + rng.random(50) * 1e-3
    self_col[3] = 50 + 3  # past the tile: no self here
    case = (g, sq_a, sq_b, col_ids, self_col, best_d, best_i)
    ref = _reference("knn_tile_topk", *case)
    got = _launch(kernel_xp, "knn_tile_topk", *case)
    np.testing.assert_array_equal(got[1], ref[1])
    np.testing.assert_array_equal(got[0], ref[0])
    assert np.isfinite(got[0][3]).all() and got[0][2, 0] == -np.inf


@pytest.mark.cudasim
@pytest.mark.parametrize(
    ("metric", "dtype", "tile"), [("euclidean", np.float64, 200), ("cosine", np.float32, 10**6)]
)
def test_knn_through_the_kernel_matches_the_reference(kernel_xp, metric, dtype, tile):
    # The whole exact kNN with every tile merged by the kernel: the reference's neighbours
    # (same indices, same distances) on duplicated points, with several column blocks (small
    # tiles) and with a single one. (The simulator runs each of the 128 threads of a block in
    # turn, so the sizes are tiny.)
    if kernel_xp is not np:
        pytest.skip("runs the numpy engine through the simulator; on a device: test_gpu_*")
    rng = np.random.default_rng(3)
    X = rng.integers(0, 3, size=(20, 4)).astype(dtype)
    X[10:] = X[:10]  # exact duplicates: ties at distance 0
    ref = knn_k.knn(NUMPY, X, 5, metric, tile_elements=tile)
    with kcuda.kernel_log() as ran, kcuda.simulate():
        got = knn_k.knn(NUMPY, X, 5, metric, tile_elements=tile)
    assert {e["how"] for e in ran} == {kcuda.SIMULATED}
    assert len(ran) == (2 if tile == 200 else 1)  # column blocks of 10 or one of 20
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])
    assert (got[0][:10] != got[0][10:]).any()  # duplicates: each point lists itself first


# -- wilcoxon: ranks and rank sums per group ------------------------------------------------------


def _groups(labels, n_groups):
    masks = np.stack([labels == g for g in range(n_groups)])
    G = markers_k.indicator(NUMPY, masks)
    return masks, G, markers_k.group_codes(NUMPY, masks)


@pytest.mark.cudasim
def test_wilcoxon_kernel_matches_reference_on_a_sparse_block(kernel_xp):
    # Ties among stored values, negatives (ranked before the implicit zeros), an all-zero
    # column, a fully stored column, and cells in no group (ranked, summed nowhere).
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    n = 40
    dense = rng.integers(-2, 4, size=(n, 5)).astype(np.float64)
    dense[rng.random((n, 5)) < 0.5] = 0
    dense[:, 2] = 0  # empty column
    dense[:, 3] = rng.integers(1, 3, size=n)  # every cell stored, two values only
    labels = rng.integers(-1, 3, size=n)  # -1: in no group
    masks, G, codes = _groups(labels, 3)
    blk = sp.csc_matrix(dense)
    ref = markers_k.block_rank_sums(NUMPY, blk, G)
    if kernel_xp is np:
        got = kcuda.registry()["wilcoxon_rank_sums"].launch(
            np, kcuda.jitted("wilcoxon_rank_sums"), blk, G, codes
        )
    else:
        import cupyx.scipy.sparse as csp

        got = kcuda.registry()["wilcoxon_rank_sums"].launch(
            kernel_xp,
            kcuda.jitted("wilcoxon_rank_sums"),
            csp.csc_matrix(blk),
            csp.csr_matrix(G),
            kernel_xp.asarray(codes),
        )
        got = tuple(g.get() for g in got)
    np.testing.assert_array_equal(got[0], ref[0])  # exact: sums of half-integers
    np.testing.assert_array_equal(got[1], ref[1])
    # scipy's average ranks agree
    from scipy.stats import rankdata

    for j in range(5):
        r = rankdata(dense[:, j])
        np.testing.assert_array_equal(got[0][:, j], [r[labels == g].sum() for g in range(3)])


@pytest.mark.cudasim
def test_wilcoxon_kernel_matches_reference_on_dense_blocks_and_subsets(kernel_xp):
    # The whole wilcoxon_rank_sums through the kernel: a dense float32 block with a constant
    # column (one run of n ties), one group and a subset of ranked cells (the per-group
    # reference comparison), against the reference.
    if kernel_xp is not np:
        pytest.skip("runs the numpy engine through the simulator; on a device: test_gpu_*")
    rng = np.random.default_rng(1)
    n = 30
    X = rng.integers(0, 4, size=(n, 4)).astype(np.float32)
    X[:, 1] = 7.0
    labels = rng.integers(0, 2, size=n)
    masks, _, _ = _groups(labels, 2)
    cells = np.ones(n, dtype=bool)
    cells[::4] = False
    for args in [(X, masks), (X, masks[:1], cells)]:
        ref = markers_k.wilcoxon_rank_sums(NUMPY, *args, block_elements=2 * n)
        with kcuda.kernel_log() as ran, kcuda.simulate():
            got = markers_k.wilcoxon_rank_sums(NUMPY, *args, block_elements=2 * n)
        assert [e["how"] for e in ran] == [kcuda.SIMULATED] * 2  # two blocks of 2 genes
        for g, r in zip(got, ref, strict=True):
            np.testing.assert_array_equal(g, r)
    assert ref[1][1] == float(cells.sum()) ** 3 - cells.sum()  # the constant column's ties


@pytest.mark.cudasim
def test_wilcoxon_overlapping_groups_run_the_reference_and_say_why():
    rng = np.random.default_rng(2)
    X = rng.integers(0, 3, size=(12, 2)).astype(np.float64)
    masks = np.stack([np.arange(12) < 8, np.arange(12) >= 4])  # cells 4..7 in both
    ref = markers_k.wilcoxon_rank_sums(NUMPY, X, masks)
    with kcuda.kernel_log() as ran, kcuda.simulate():
        got = markers_k.wilcoxon_rank_sums(NUMPY, X, masks)
    assert [e["how"] for e in ran] == [
        "reference (fused kernel does not take these inputs: groups overlap (a cell in two groups))"
    ]
    np.testing.assert_array_equal(got[0], ref[0])


# -- the chooser and the declared costs ---------------------------------------------------------


def test_numpy_runs_the_reference_and_says_so():
    X = np.random.default_rng(0).normal(size=(40, 3))
    with kcuda.kernel_log() as ran:
        idx, _ = knn_k.knn(NUMPY, X, 4)
    assert ran and {e["how"] for e in ran} == {kcuda.REFERENCE}
    assert {e["kernel"] for e in ran} == {"knn_tile_topk"}
    exact = ((X[:, None] - X[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(idx, np.argsort(exact, axis=1, kind="stable")[:, :4])
    assert kcuda.summarize_kernels(ran).startswith("kernels: knn_tile_topk x")


def test_double_prices_the_declared_cost_not_the_reference_calls():
    from gpu_sc.testing.cupy_double import install

    X = np.random.default_rng(0).normal(size=(300, 8))
    with install() as double:
        am = array_module("cupy")
        Xd = am.asarray(X)
        before = double.counters.snapshot()
        with kcuda.kernel_log() as ran:
            idx, _ = knn_k.knn(am, Xd, 5)
        after = double.counters.snapshot()
        idx = idx.get()
    assert {e["how"] for e in ran} == {kcuda.PRICED}
    assert after["by_name"]["kernel:knn_tile_topk"] - before["by_name"].get(
        "kernel:knn_tile_topk", 0
    ) == len(ran)
    # the reference's selection calls (argpartition, argsort, nonzero) are not counted
    for name in ("ndarray.argpartition", "cupy.argpartition", "cupy.nonzero", "cupy.argsort"):
        assert after["by_name"].get(name, 0) == before["by_name"].get(name, 0), name
    assert after["kernels"] - before["kernels"] == len(ran)
    # the GEMMs stay library calls, counted with their float64 flops
    assert after["flops_fp64"] - before["flops_fp64"] >= 2 * 300 * 300 * 8
    ref, _ = knn_k.knn(NUMPY, X, 5)
    np.testing.assert_array_equal(idx, ref)


def test_priced_as_replaces_the_block_counts_by_the_declared_ones():
    from gpu_sc.testing.cupy_double._rules import Counters

    c = Counters()
    c.op("cupy.add", read=8, written=8)
    with c.priced_as(
        "k",
        kcuda.KernelCost(read=100, written=40, flops=7, flop_dtype="float32", launches=2, syncs=1),
    ):
        c.op("cupy.sort", read=1000, written=1000)
        c.add_flops(50, np.float64)
        c.sync()
    s = c.snapshot()
    assert (s["ops"], s["syncs"], s["bytes_read"], s["bytes_written"]) == (3, 1, 108, 48)
    assert (s["flops"], s["flops_fp64"], s["kernels"]) == (7, 0, 1)
    assert "cupy.sort" not in s["by_name"] and s["by_name"]["kernel:k"] == 2


def test_every_kernel_declares_a_cost_from_its_example():
    specs = kcuda.registry()
    assert {"knn_tile_topk", "wilcoxon_rank_sums"} <= set(specs)
    for name, spec in specs.items():
        args, kwargs = spec.example(np, 0)
        cost = spec.cost(*args, **kwargs)
        assert cost.read > 0 and cost.written > 0 and cost.launches >= 1, name
        assert spec.reference.__module__.startswith("gpu_sc.kernels."), name
        assert spec.signatures and all(spec.signatures.values()), name


def test_gpu_sc_imports_and_runs_without_numba_cuda():
    # numba-cuda absent: gpu_sc imports, the status says why, the numpy engine is unchanged.
    code = (
        "import sys; sys.modules['numba.cuda'] = None\n"
        "import numpy as np, gpu_sc\n"
        "from gpu_sc.kernels import cuda, knn\n"
        "from gpu_sc.dispatch import array_module\n"
        "s = cuda.numba_cuda_status(); assert not s.importable and not s.fused, s\n"
        "X = np.random.default_rng(0).normal(size=(30, 3))\n"
        "idx, _ = knn.knn(array_module('numpy'), X, 3)\n"
        "print(s.reason.split(':')[0])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "numba.cuda not importable"


@pytest.mark.cudasim
def test_kernel_timing_rehearses_on_the_simulator():
    # scripts/gpu_session.sh kernels times every kernel on a GPU; here its Python part runs on
    # the simulator at scale 0 and says that its times are not a GPU's.
    if not kcuda.numba_cuda_status().simulator:
        pytest.skip("on a device, scripts/gpu_session.sh kernels is the real run")
    from gpu_sc.bench import kernel_timing

    report = kernel_timing.time_kernels(scale=0, repeats=1)
    assert "simulator" in report["where"] and "not a GPU" in report["where"]
    assert {r["kernel"] for r in report["kernels"]} == set(kcuda.registry())
    assert all(
        r["ok"] and r["measured_s"] > 0 and r["model_s_h200"] > 0 for r in report["kernels"]
    ), report
    text = kernel_timing.table(report)
    assert "knn_tile_topk" in text and "GB/s" in text


# -- PTX ------------------------------------------------------------------------------------------


@pytest.mark.ptx
@pytest.mark.parametrize("name", sorted(kcuda.registry()))
def test_kernel_compiles_to_ptx_for_sm80_and_sm90(name, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    report = tmp_path / "ptx.json"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "gpu_sc.kernels.cuda.compile",
            "--cc",
            "80,90",
            "--kernel",
            name,
            "--json",
            str(report),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    records = json.loads(report.read_text())
    spec = kcuda.registry()[name]
    n_sigs = sum(len(v) for v in spec.signatures.values())
    assert len(records) == 2 * n_sigs
    assert {r["cc"] for r in records} == {"sm_80", "sm_90"}
    assert all(r["ok"] and r["ptx_bytes"] > 1000 for r in records)


@pytest.mark.parametrize("backend", ["numpy", pytest.param("cupy", marks=pytest.mark.gpu)])
def test_the_provenance_note_says_which_kernels_ran_and_how(backend):
    # never silent: the step's note names each fused kernel and how it ran
    import anndata as ad

    import gpu_sc
    from gpu_sc.provenance import last as last_record

    X = np.random.default_rng(0).normal(size=(60, 5)).astype(np.float32)
    adata = ad.AnnData(X)
    gpu_sc.pp.neighbors(adata, n_neighbors=5, use_rep="X", backend=backend)
    note = last_record(adata)["note"]  # a single step's record: the in-process log
    how = kcuda.how_to_run(array_module(backend))
    assert f"kernels: knn_tile_topk x1 ({how})" in note, note
