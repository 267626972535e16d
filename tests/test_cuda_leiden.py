"""The Leiden fused kernel ``leiden_sweeps`` (gpu_sc.kernels.cuda.leiden) against its
array-generic reference (gpu_sc.kernels.leiden.phase_sweeps).

- ``cudasim``: on numba-cuda's simulator (a real device where one answers), whole Leiden runs
  and single phases give the reference's partition, on tiny graphs with dyadic weights (every
  sum exact in float64, so summation order cannot matter) and the edge cases: isolated
  vertices, one clique, two disconnected cliques, ties (a ring), self-loops, empty
  communities opened by badly connected nodes;
- ``ptx``: the kernels compile for sm_80 and sm_90 with grid barriers and integer atomics only;
- unmarked: on the CuPy double Leiden is priced as the kernel, with a handful of host syncs,
  and gives numpy's partition.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from gpu_sc.dispatch import array_module
from gpu_sc.kernels import cuda as kcuda
from gpu_sc.kernels import leiden as L

NUMPY = array_module("numpy")
_nothing = contextlib.nullcontext


def _clique(m: int, w: float = 1.0) -> np.ndarray:
    a = np.full((m, m), w)
    np.fill_diagonal(a, 0.0)
    return a


def _dyadic(n: int, p: float, seed: int, loops: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = (rng.random((n, n)) < p) * rng.choice([0.25, 0.5, 1.0, 2.0], size=(n, n))
    a = np.triu(a, 0 if loops else 1)
    return a + np.triu(a, 1).T


def _graphs() -> dict[str, np.ndarray]:
    two = np.zeros((12, 12))
    two[:5, :5] = _clique(5)
    two[6:11, 6:11] = _clique(5, 0.5)  # nodes 5 and 11 isolated
    ring = np.zeros((8, 8))
    for i in range(8):  # every node ties between its two neighbours
        ring[i, (i + 1) % 8] = ring[(i + 1) % 8, i] = 1.0
    return {
        "two_cliques_and_isolated": two,
        "one_clique": _clique(6),
        "ring_ties": ring,
        "dyadic_self_loops": _dyadic(40, 0.12, seed=3, loops=True),
    }


@pytest.fixture
def kernel_am():
    """Where the kernel runs here: NumPy arrays on the simulator (inside ``simulate()``), or
    CuPy arrays on a real device (the chooser's fused path)."""
    status = kcuda.numba_cuda_status()
    if status.simulator:
        with kcuda.simulate():
            yield NUMPY
        return
    if status.fused:
        yield array_module("cupy")
        return
    pytest.fail(f"cudasim tests need the simulator or a device: {status.reason}")


def _leiden(am, A, n_iterations):
    return am.to_host(
        L.leiden(am, A, resolution=1.0, n_iterations=n_iterations, random_state=1, n_batches=4)
    )


@pytest.mark.cudasim
@pytest.mark.parametrize("name", sorted(_graphs()))
def test_leiden_through_the_kernel_gives_the_reference_partition(name):
    # Whole Leiden runs (levels, refinement, aggregation, iterations until stable) with every
    # local-moving and refinement sweep run by the kernel: the reference's labels exactly,
    # and the same labels again on a second run.
    A = sp.csr_matrix(_graphs()[name])
    expected = {it: _leiden(NUMPY, A, it) for it in (2, -1)}
    status = kcuda.numba_cuda_status()
    am = NUMPY if status.simulator else array_module("cupy")
    with kcuda.kernel_log() as ran, kcuda.simulate() if status.simulator else _nothing():
        for it in (2, -1):
            np.testing.assert_array_equal(_leiden(am, A, it), expected[it])
        np.testing.assert_array_equal(_leiden(am, A, 2), expected[2])
    assert ran and {e["how"] for e in ran} == {kcuda.SIMULATED if status.simulator else kcuda.FUSED}
    if name == "two_cliques_and_isolated":
        assert len(np.unique(expected[2])) == 4  # two cliques, two isolated vertices
        assert len(set(expected[2][:5])) == 1 and len(set(expected[2][6:11])) == 1
    if name == "one_clique":
        assert (expected[2] == 0).all()


def _phase_pair(am, phase, A, memb, gamma, sweeps, seed):
    """The same phase run by the reference (numpy) and by the kernel (``am``) from ``memb``."""
    spec = kcuda.registry()["leiden_sweeps"]
    perms = np.stack(
        [np.random.RandomState(seed + s).permutation(A.shape[0]) for s in range(sweeps)]
    )
    g = L._Graph.from_adjacency(NUMPY, sp.csr_matrix(A))
    ref = L.PhaseState(phase, g, memb.copy(), gamma, 4)
    ran_ref = spec.reference(NUMPY, ref, perms)
    gk = L._Graph.from_adjacency(am, sp.csr_matrix(A))
    ker = L.PhaseState(phase, gk, am.asarray(memb.copy()), gamma, 4)
    ran_ker = spec.launch(am.xp, kcuda.jitted("leiden_sweeps"), ker, am.asarray(perms))
    return ref.result, am.to_host(ker.result), ran_ref, ran_ker


@pytest.mark.cudasim
@pytest.mark.parametrize("gamma", [0.5, 1.0, 3.0])
def test_leiden_phases_match_the_reference_sweep_by_sweep(kernel_am, gamma):
    # One local-moving phase and one refinement phase from scrambled memberships (nodes put
    # in communities they have no edge to; half the ids unused): same partition, same number
    # of sweeps (the device's convergence test is the reference's). At resolution 3 badly
    # connected nodes open empty communities (ids unused at the start), in batch order.
    A = _dyadic(36, 0.15, seed=5)
    rng = np.random.default_rng(11)
    memb = (2 * rng.integers(0, 6, size=36)).astype(np.int64)  # ids 0, 2, ..., 10: odd ones free
    ref, ker, ran_ref, ran_ker = _phase_pair(kernel_am, "move", A, memb, gamma, 8, seed=7)
    np.testing.assert_array_equal(ker, ref)
    assert ran_ker == ran_ref and 1 <= ran_ref < 8  # converged inside the call
    if gamma == 3.0:
        assert not set(ref.tolist()) <= set(memb.tolist())  # empty communities opened
    ref2, ker2, ran_ref2, ran_ker2 = _phase_pair(kernel_am, "refine", A, ref, gamma, 3, seed=20)
    np.testing.assert_array_equal(ker2, ref2)
    assert ran_ker2 == ran_ref2
    assert (ref2 != np.arange(36)).any()  # the refinement merged something
    # deterministic: a second kernel run gives the same partition
    _, ker3, _, _ = _phase_pair(kernel_am, "move", A, memb, gamma, 8, seed=7)
    np.testing.assert_array_equal(ker3, ker)


@pytest.mark.ptx
def test_leiden_kernels_compile_with_grid_barriers_and_integer_atomics_only(tmp_path):
    # The sweeps kernels are cooperative (cudaCGSynchronize) and their atomics are 64-bit
    # integer adds: no floating-point atomic whose order could change the result.
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    code = (
        "import json, sys\n"
        "from numba import cuda\n"
        "from gpu_sc.kernels.cuda import leiden as L, _leiden_src as S\n"
        "out = {}\n"
        "for name, sigs in L.SPEC.signatures.items():\n"
        "    for cc in ((8, 0), (9, 0)):\n"
        "        ptx, _ = cuda.compile_ptx(getattr(S, name).py_func, sigs[0], cc=cc)\n"
        "        out[f'{name}@{cc[0]}{cc[1]}'] = ptx\n"
        "json.dump(out, open(sys.argv[1], 'w'))\n"
    )
    report = tmp_path / "ptx.json"
    done = subprocess.run(
        [sys.executable, "-c", code, str(report)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    ptx = json.loads(report.read_text())
    assert len(ptx) == 8
    for key, text in ptx.items():
        cc = key.rsplit("@", 1)[1]
        assert f".target sm_{cc}" in text
        atomics = set(re.findall(r"\batom\.[\w.]+", text))
        assert not any(".f64" in a or ".f32" in a for a in atomics), (key, atomics)
        if "sweeps" in key:
            assert "cudaCGSynchronize" in text and atomics, key
    assert any(
        ".u64" in a or ".s64" in a for a in re.findall(r"\batom\.[\w.]+", "".join(ptx.values()))
    )


def test_leiden_on_the_double_is_priced_as_the_kernel():
    # The cupy backend on the CuPy double runs the reference but counts the kernel's declared
    # cost: a handful of launches and host reads per level instead of thousands, and the
    # partition is numpy's.
    from gpu_sc.testing.cupy_double import install

    A = sp.csr_matrix(_dyadic(300, 0.03, seed=2))
    expected = L.leiden(NUMPY, A, n_iterations=2, random_state=0)
    with install() as double:
        cp = array_module("cupy")
        before = double.counters.snapshot()
        with kcuda.kernel_log() as ran:
            labels = cp.to_host(L.leiden(cp, A, n_iterations=2, random_state=0))
        after = double.counters.snapshot()
    np.testing.assert_array_equal(labels, expected)
    assert ran and {e["how"] for e in ran} == {kcuda.PRICED}
    calls = after["kernels"] - before["kernels"]
    syncs = after["syncs"] - before["syncs"]
    reference_ops = sum(v for k, v in after["by_name"].items() if not k.startswith("kernel:"))
    assert 2 <= calls <= 60
    assert syncs < 120  # the reference alone makes thousands (one per batch and more)
    before_ops = sum(v for k, v in before["by_name"].items() if not k.startswith("kernel:"))
    assert reference_ops - before_ops < 2000  # the per-level driver: unique, coarsening
    assert after["by_name"]["kernel:leiden_sweeps"] >= calls  # launches + priced barriers


def test_leiden_declared_cost_is_a_function_of_sizes():
    from gpu_sc.kernels.cuda.leiden import BARRIER_AS_LAUNCHES, sweep_cost

    small, large = sweep_cost(10**3, 3 * 10**4, 64), sweep_cost(10**6, 3 * 10**7, 64)
    assert large.read == pytest.approx(1000 * small.read)
    assert large.written == pytest.approx(1000 * small.written)
    assert large.launches == small.launches == (3 * 64 + 2) * BARRIER_AS_LAUNCHES
    assert small.syncs == 0 and small.flop_dtype == "float64"
