"""Fused kernel ``leiden_sweeps``: whole sweeps of Leiden's local moving or refinement per
launch, the convergence test on the device.

The array-generic reference (:func:`gpu_sc.kernels.leiden.phase_sweeps`) runs a sweep as a few
hundred CuPy calls per vertex batch (sorts, segment sums, scatters) with host reads inside
each batch: ~10^5 calls and ~10^3 host syncs per level. Here one cooperative launch runs up
to :data:`~gpu_sc.kernels.leiden.SWEEPS_PER_CALL` sweeps of a phase (source:
:mod:`gpu_sc.kernels.cuda._leiden_src`): the grid walks the sweep's vertex batches in order,
with three grid barriers per batch (propose / apply / activate, plus one for a batch that
opens empty communities), checks at each sweep's start whether any node is left to visit,
and counts the sweeps it ran in a device array that the host reads once per call. A level
then costs ``1 + ceil(sweeps / 4)`` launches and ``ceil(sweeps / 4)`` host reads per phase.

**Same decisions as the reference.** The nodes of a batch decide from the state at the
batch's start (propose, then apply) with the reference's rules: best neighbouring community,
ties to the smaller id; an empty community for a node badly connected to its own (the
``i``-th such mover of a batch, in batch order, takes the ``i``-th empty id); a move into a
singleton whose member moves in the same batch cancelled unless mutual and towards the
smaller id; the movers' neighbours outside their new community re-activated; in the
refinement, the reference's well-connectedness tests, strictly positive gains and retries.
The node orders are the reference's (drawn on the host by the caller). Where every sum is
exact in float64 (dyadic weights, as in the ``cudasim`` tests), the kernel and the reference
give the same partition.

**Deterministic.** A node's weights to the communities around it are summed by the thread
that owns it, in CSR order (an open-addressing table in the node's slice of a scratch array).
Community totals, refined totals and external weights change by 64-bit integer atomics on
fixed-point copies (``2**s`` with ``two_m * 2**s <= 2**60``): integer sums do not depend on
the order the atomics land in, and there are no floating-point atomics. The sums' rounding
differs from the reference's pairwise sums (and each degree is rounded to ``2**-s``), so on
real weights a near-tie may break differently from the reference; on one device the kernel
gives the same partition for the same input every run.
"""

from __future__ import annotations

import math

import numpy as np

from ...dispatch.arrays import array_module_for
from ..leiden import SWEEPS_PER_CALL, PhaseState, _Graph, phase_sweeps
from ._registry import launch_stream
from ._spec import KernelCost, KernelSpec

__all__ = ["SPEC", "sweep_cost"]

_THREADS = 256  # threads per block on a device
_SIM_THREADS = 4  # the simulator's cooperative grid is one block: a few threads, so that the
#                   grid-stride loops and barriers are exercised
#: a cooperative grid barrier priced as this fraction of a launch (~2.5 us against the model's
#: 10 us launch: the barrier costs a round of global-memory atomics, no host work)
BARRIER_AS_LAUNCHES = 0.25


# -- declared cost ------------------------------------------------------------------------------


def sweep_cost(n_nodes: int, n_edges: int, n_batches: int) -> KernelCost:
    """Declared device work of one sweep of either phase on a graph of ``n_nodes`` nodes and
    ``n_edges`` stored edges (both directions), in ``n_batches`` vertex batches.

    Read: per node its flags, community, degree, offsets and proposal (~10 words); per edge,
    in the propose step, its column, weight and neighbour's community, its hash slot (key and
    value) read back, and again in the apply/activate steps for the movers (counted for all
    edges: an upper bound, reached in the first sweeps): ~7 words. Written: ~4 words per node,
    the hash slot (2 words) per edge. Flops: ~6 per edge (sum, score), ~4 per node.
    Launches: the barriers of the cooperative grid (3 per batch, 2 per sweep) priced as
    :data:`BARRIER_AS_LAUNCHES` of a launch each.
    """
    n, e = int(n_nodes), int(n_edges)
    barriers = 3 * int(n_batches) + 2
    return KernelCost(
        read=8 * (10 * n + 7 * e),
        written=8 * (4 * n + 2 * e),
        flops=4 * n + 6 * e,
        flop_dtype="float64",
        launches=barriers * BARRIER_AS_LAUNCHES,
        syncs=0,
    )


def _init_cost(n: int, e: int, phase: str) -> KernelCost:
    """The phase's initialisation launches (degrees and totals; refinement's singletons)."""
    if phase == "move":
        return KernelCost(read=8 * 2 * n, written=8 * 3 * n, flops=2 * n, launches=1)
    return KernelCost(read=8 * (6 * n + 3 * e), written=8 * 9 * n, flops=4 * n + e, launches=2)


def _cost(state: PhaseState, perms) -> KernelCost:
    """One call: the launch running up to ``perms.shape[0]`` sweeps (priced as all of them:
    the last call of a phase may stop earlier), its initialisation on the phase's first call,
    and the host read of the sweep counter."""
    n, e = state.g.n, int(state.g.row.shape[0])
    sweeps = int(perms.shape[0])
    one = sweep_cost(n, e, state.n_batches)
    cost = KernelCost(
        read=sweeps * one.read + 8 * sweeps * n,  # + the node orders
        written=sweeps * one.written,
        flops=sweeps * one.flops,
        flop_dtype="float64",
        launches=1 + sweeps * one.launches,
        syncs=1,
    )
    if state.arrays is None:
        cost = cost + _init_cost(n, e, state.phase)
    return cost


# -- launch -----------------------------------------------------------------------------------


def _fixed_point_scale(two_m: float) -> float:
    """``2**s`` with ``two_m * 2**s <= 2**60``: every total (at most ``two_m``) and every
    difference of two fits an int64 with room to spare."""
    return float(2.0 ** (60 - max(0, math.ceil(math.log2(max(two_m, 1.0))))))


def _cooperative_blocks(kernel, args, n: int) -> int:
    """Blocks of a cooperative grid: as many as the device keeps resident, no more than the
    work needs."""
    try:
        (overload,) = kernel.specialize(*args).overloads.values()
        resident = int(overload.max_cooperative_grid_blocks(_THREADS))
    except Exception:  # one block per multiprocessor is always resident
        from numba import cuda

        resident = int(cuda.get_current_device().MULTIPROCESSOR_COUNT)
    return max(1, min(resident, -(-n // _THREADS)))


def _run(xp, kernel, args, n: int, cooperative: bool) -> None:
    stream = launch_stream(xp)
    if stream is None:  # the simulator (NumPy arrays): one block, as cooperative grids there
        kernel[1, _SIM_THREADS](*args)
        return
    if cooperative:
        blocks = _cooperative_blocks(kernel, args, n)
    else:
        blocks = max(1, min(-(-n // _THREADS), 65535))
    kernel[blocks, _THREADS, stream](*args)


def _init(xp, kernels, state: PhaseState) -> dict:
    """The kernel's arrays for ``state``'s phase (one or two flat launches)."""
    g = state.g
    n = g.n
    indptr = xp.searchsorted(g.row, xp.arange(n + 1, dtype=xp.int64)).astype(xp.int64)
    fix = _fixed_point_scale(g.two_m)
    a = {
        "indptr": indptr,
        "indices": g.col.astype(xp.int64),
        "weight": g.weight.astype(xp.float64),
        "k": g.degree.astype(xp.float64),
        "scale": state.gamma / g.two_m,
        "fix": fix,
        "inv_fix": 1.0 / fix,
        "kfix": xp.zeros(n, dtype=xp.int64),
        "Kfix": xp.zeros(n, dtype=xp.int64),
        "size": xp.zeros(n, dtype=xp.int64),
        "hkey": xp.empty(2 * int(g.col.shape[0]), dtype=xp.int64),
        "hval": xp.empty(2 * int(g.col.shape[0]), dtype=xp.float64),
        "prop": xp.full(n, -1, dtype=xp.int64),
        "old": xp.full(n, -1, dtype=xp.int64),
        "go": xp.zeros(n, dtype=xp.int8),
        "leaver": xp.full(n, -1, dtype=xp.int64),
    }
    memb = state.memb
    _run(
        xp,
        kernels["leiden_phase_init"],
        (a["k"], memb, fix, a["kfix"], a["Kfix"], a["size"]),
        n,
        False,
    )
    if state.phase == "move":
        a["active"] = xp.ones(n, dtype=xp.int8)
        return a
    a.update(
        ext_node=xp.zeros(n, dtype=xp.int64),
        ref=xp.zeros(n, dtype=xp.int64),
        Kr_fix=xp.zeros(n, dtype=xp.int64),
        ext_fix=xp.zeros(n, dtype=xp.int64),
        rsize=xp.zeros(n, dtype=xp.int64),
        pending=xp.zeros(n, dtype=xp.int8),
        wt=xp.zeros(n, dtype=xp.float64),
    )
    args = (
        a["indptr"],
        a["indices"],
        a["weight"],
        a["k"],
        a["kfix"],
        memb,
        a["Kfix"],
        a["scale"],
        a["inv_fix"],
        fix,
        a["ext_node"],
        a["ref"],
        a["Kr_fix"],
        a["ext_fix"],
        a["rsize"],
        a["pending"],
    )
    _run(xp, kernels["leiden_refine_init"], args, n, False)
    state.result = a["ref"]
    return a


def _launch(xp, kernels, state: PhaseState, perms) -> int:
    """Run up to ``perms.shape[0]`` sweeps of ``state``'s phase in one launch; the sweeps
    run (one host read)."""
    if state.arrays is None:
        state.arrays = _init(xp, kernels, state)
    a = state.arrays
    n, sweeps = state.g.n, int(perms.shape[0])
    bounds = xp.asarray(state.bounds)
    perms = xp.ascontiguousarray(perms.astype(xp.int64))
    if state.phase == "move":
        counters = xp.zeros(2 + sweeps + sweeps * state.n_batches, dtype=xp.int64)
        args = (
            a["indptr"],
            a["indices"],
            a["weight"],
            a["k"],
            a["kfix"],
            state.memb,
            a["Kfix"],
            a["size"],
            a["active"],
            perms,
            bounds,
            a["scale"],
            a["inv_fix"],
            a["hkey"],
            a["hval"],
            a["prop"],
            a["old"],
            a["go"],
            a["leaver"],
            counters,
        )
        _run(xp, kernels["leiden_move_sweeps"], args, n, True)
    else:
        counters = xp.zeros(2 + sweeps, dtype=xp.int64)
        args = (
            a["indptr"],
            a["indices"],
            a["weight"],
            a["k"],
            a["kfix"],
            state.memb,
            a["Kfix"],
            a["ext_node"],
            a["ref"],
            a["Kr_fix"],
            a["ext_fix"],
            a["rsize"],
            a["pending"],
            perms,
            bounds,
            a["scale"],
            a["inv_fix"],
            a["fix"],
            a["hkey"],
            a["hval"],
            a["prop"],
            a["wt"],
            a["old"],
            a["go"],
            a["leaver"],
            counters,
        )
        _run(xp, kernels["leiden_refine_sweeps"], args, n, True)
    ran = counters[:1]
    return int(ran.get()[0] if hasattr(ran, "get") else ran[0])


def _example(xp, scale: int = 0):
    """A move phase on two dense blocks joined by a few edges (scale 0: 2 x 40 nodes; 1:
    2 x 20000 nodes with 30 edges each; 2: 2 x 200000)."""
    import scipy.sparse as sp

    half = {0: 40, 1: 20000, 2: 200000}[scale]
    rng = np.random.default_rng(0)
    deg = min(30, half - 1)
    rows = np.repeat(np.arange(2 * half), deg)
    cols = (rows // half) * half + rng.integers(0, half, size=rows.shape[0])
    A = sp.coo_matrix((np.ones(rows.shape[0]), (rows, cols)), shape=(2 * half, 2 * half))
    A = ((A + A.T) > 0).astype(np.float64).tocsr()
    A.setdiag(0)
    A.eliminate_zeros()
    am = array_module_for(xp)
    g = _Graph.from_adjacency(am, A)
    state = PhaseState("move", g, xp.arange(g.n, dtype=xp.int64), 1.0, 64)
    perms = xp.asarray(np.stack([rng.permutation(g.n) for _ in range(SWEEPS_PER_CALL)]))
    return (state, perms), {}


_I, _F, _B = "int64[:]", "float64[:]", "int8[:]"
_P = "int64[:, :]"

SPEC = KernelSpec(
    name="leiden_sweeps",
    source="gpu_sc.kernels.cuda._leiden_src",
    signatures={
        "leiden_phase_init": [f"void({_F}, {_I}, float64, {_I}, {_I}, {_I})"],
        "leiden_move_sweeps": [
            f"void({_I}, {_I}, {_F}, {_F}, {_I}, {_I}, {_I}, {_I}, {_B}, {_P}, {_I}, float64, "
            f"float64, {_I}, {_F}, {_I}, {_I}, {_B}, {_I}, {_I})"
        ],
        "leiden_refine_init": [
            f"void({_I}, {_I}, {_F}, {_F}, {_I}, {_I}, {_I}, float64, float64, float64, {_I}, "
            f"{_I}, {_I}, {_I}, {_I}, {_B})"
        ],
        "leiden_refine_sweeps": [
            f"void({_I}, {_I}, {_F}, {_F}, {_I}, {_I}, {_I}, {_I}, {_I}, {_I}, {_I}, {_I}, "
            f"{_B}, {_P}, {_I}, float64, float64, float64, {_I}, {_F}, {_I}, {_F}, {_I}, "
            f"{_B}, {_I}, {_I})"
        ],
    },
    reference=phase_sweeps,
    launch=_launch,
    cost=_cost,
    example=_example,
    doc=__doc__,
)
