"""Leiden's local moving and refinement as persistent CUDA kernels (numba-cuda).

The array-generic reference, :mod:`gpu_sc.kernels.leiden`, runs one sweep of a phase as a
few hundred CuPy calls per vertex batch (sorts, segment sums, scatters) and reads a device
value on the host for every batch. Here one launch runs up to ``sweeps_per_launch`` whole
sweeps of a phase: a cooperative grid walks the sweep's vertex batches in order, with a grid
barrier between the propose / resolve / apply / activate steps of each batch, and writes a
device counter of the sweeps it ran (a sweep starts only if some node is still active, the
reference's convergence test). The host reads that counter once per launch: a level costs
``ceil(sweeps / sweeps_per_launch)`` launches and host reads per phase, plus one
initialisation launch, instead of thousands of calls.

**Same decisions as the reference.** The nodes of a batch decide from the state at the
batch's start (two-phase propose/apply), with the reference's rules exactly: the best
neighbouring community by score, ties to the smaller id; an empty community for a node
badly connected to its own (the ``i``-th such mover of a batch, in batch order, takes the
``i``-th empty id); moves into a singleton whose member moves in the same batch cancelled
unless mutual and towards the smaller id; the neighbours of movers outside their new
community re-activated. Node orders are the reference's (``rng.permutation`` on the host,
one per sweep run; the generator is rewound past the permutations drawn for sweeps that did
not run), so for weights whose sums are exact in float64 (dyadic weights, as in the tests)
the kernel and the reference give the same partition.

**Deterministic.** Node-to-community weights are summed per node in CSR order (one thread
owns a node; an open-addressing table in its own slice of a scratch array). Community
totals (``K``), refined totals and external weights change by integer atomics on a 62-bit
fixed-point copy (scale ``2**s`` with ``two_m * 2**s < 2**61``), and integer addition does
not depend on the order the atomics land in. No floating-point atomics. The sums differ
from the reference's pairwise sums only in the last bits (and fixed point rounds each
degree at ``2**-s``), so on real data near-ties may break differently from the reference;
the result is still bitwise the same from run to run on one device.

Launch geometry: on a GPU the grid is cooperative (``max_cooperative_grid_blocks``); on the
CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) a cooperative grid has one block, so
:func:`_geometry` gives one block of a few threads there.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

__all__ = ["DECLARED", "move_nodes", "refine", "sweep_cost"]

_EMPTY = -2  # proposal: move to an empty community (its id is assigned in batch order)
_NONE = -1

#: how many sweeps one launch may run (the host reads the device counter once per launch)
SWEEPS_PER_LAUNCH = 4


# ----------------------------------------------------------------------------------------------
# declared cost (priced by the cost model; see ``sweep_cost``)
# ----------------------------------------------------------------------------------------------
def sweep_cost(n_nodes: int, n_edges: int, n_batches: int) -> dict:
    """Declared device work of one sweep of either phase on a graph of ``n_nodes`` nodes and
    ``n_edges`` stored (directed) edges.

    Per node: its flags, community, degree and CSR offsets (~10 words read, ~4 written).
    Per edge, in the propose step: its column and weight, the neighbour's community, and its
    hash slot written then read (key and value); in the activate/apply step the movers' edges
    are read again (counted as all edges: an upper bound, reached in the first sweeps).
    ``grid_syncs``: barriers of the cooperative grid (about 4 per batch).
    """
    n, e = int(n_nodes), int(n_edges)
    return {
        "bytes_read": 8 * (10 * n + 7 * e),
        "bytes_written": 8 * (4 * n + 2 * e),
        "flops": 4 * n + 6 * e,
        "grid_syncs": 4 * int(n_batches) + 2,
    }


#: per-launch declarations: name -> what one launch does (for the kernel registry/cost model)
DECLARED = {
    "leiden_move": "up to SWEEPS_PER_LAUNCH sweeps of fast local moving; cost = sweeps x sweep_cost",
    "leiden_refine": "up to SWEEPS_PER_LAUNCH sweeps of refinement; cost = sweeps x sweep_cost",
    "leiden_init": "per-node initialisation of a phase: one pass over nodes and edges",
}


# ----------------------------------------------------------------------------------------------
# device functions
# ----------------------------------------------------------------------------------------------
@cuda.jit(device=True)
def _to_fix(x, fix):
    return np.int64(math.floor(x * fix + 0.5))


@cuda.jit(device=True)
def _table_add(hkey, hval, base, slots, key, w):
    """Add ``w`` to ``key``'s value in the open-addressing table ``[base, base + slots)``."""
    h = key % slots
    while True:
        kk = hkey[base + h]
        if kk == key:
            hval[base + h] += w
            return
        if kk == -1:
            hkey[base + h] = key
            hval[base + h] = w
            return
        h += 1
        if h == slots:
            h = 0


@cuda.jit(device=True)
def _propose_move(u, indptr, indices, weight, k, kfix, memb, Kfix, size, scale, inv_fix, hkey,
                  hval):  # fmt: skip
    """The reference's decision for node ``u``: target community, ``_EMPTY`` or ``_NONE``."""
    lo = indptr[u]
    hi = indptr[u + 1]
    slots = 2 * (hi - lo)
    base = 2 * lo
    for s in range(slots):
        hkey[base + s] = -1
    for j in range(lo, hi):
        v = indices[j]
        if v != u:
            _table_add(hkey, hval, base, slots, memb[v], weight[j])
    own = memb[u]
    ku = k[u]
    k_own = (Kfix[own] - kfix[u]) * inv_fix
    stay = -scale * ku * k_own
    best_s = -math.inf
    best_c = -1
    for s in range(slots):
        c = hkey[base + s]
        if c < 0:
            continue
        wc = hval[base + s]
        if c == own:
            stay = wc - scale * ku * k_own
        else:
            score = wc - scale * ku * (Kfix[c] * inv_fix)
            if score > best_s or (score == best_s and c < best_c):
                best_s = score
                best_c = c
    to_empty = size[own] > 1 and best_s < 0.0
    if to_empty:
        best_s = 0.0
    if (best_s - stay) > 1e-12 * ku:
        if to_empty:
            return _EMPTY
        return best_c
    return _NONE


@cuda.jit(device=True)
def _propose_refine(u, indptr, indices, weight, k, memb, Kc_fix, ref, Kr_fix, ext_fix, scale,
                    inv_fix, hkey, hval, wt_out):  # fmt: skip
    """The reference's refinement choice for singleton ``u``: best well-connected refined
    community of its community with a strictly positive gain (ties: smaller id), or -1."""
    lo = indptr[u]
    hi = indptr[u + 1]
    slots = 2 * (hi - lo)
    base = 2 * lo
    for s in range(slots):
        hkey[base + s] = -1
    cu = memb[u]
    for j in range(lo, hi):
        v = indices[j]
        if v != u and memb[v] == cu:
            _table_add(hkey, hval, base, slots, ref[v], weight[j])
    own = ref[u]
    kc = Kc_fix[cu]
    ku = k[u]
    best_s = -math.inf
    best_t = -1
    best_w = 0.0
    for s in range(slots):
        t = hkey[base + s]
        if t < 0 or t == own:
            continue
        wt = hval[base + s]
        kr = Kr_fix[t]
        ok = ext_fix[t] * inv_fix >= scale * (kr * inv_fix) * ((kc - kr) * inv_fix)
        score = wt - scale * ku * (kr * inv_fix)
        if ok and score > 0.0:
            if score > best_s or (score == best_s and t < best_t):
                best_s = score
                best_t = t
                best_w = wt
    wt_out[u] = best_w
    return best_t


# ----------------------------------------------------------------------------------------------
# kernels
# ----------------------------------------------------------------------------------------------
@cuda.jit
def _phase_init(k, memb, fix, kfix, Kfix, size):
    """Fixed-point degrees and the totals and sizes of ``memb``'s communities
    (``Kfix``/``size`` zeroed by the caller; integer atomics)."""
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for u in range(start, memb.shape[0], stride):
        kf = _to_fix(k[u], fix)
        kfix[u] = kf
        cuda.atomic.add(Kfix, memb[u], kf)
        cuda.atomic.add(size, memb[u], 1)


@cuda.jit
def _move_sweeps(indptr, indices, weight, k, kfix, memb, Kfix, size, active, perms, bounds,
                 scale, inv_fix, hkey, hval, prop, leaver, go, counters):  # fmt: skip
    """Up to ``perms.shape[0]`` sweeps of fast local moving (one cooperative launch).

    ``counters[0]``: sweeps run; ``counters[1]``: moves made; ``counters[2 + s]``: active
    nodes at the start of sweep ``s``; ``counters[2 + S + s * B + b]``: empty-community
    movers of batch ``b`` of sweep ``s`` (all zeroed by the caller)."""
    grid = cuda.cg.this_grid()
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    n = memb.shape[0]
    n_sweeps = perms.shape[0]
    n_batches = bounds.shape[0] - 1
    for sweep in range(n_sweeps):
        seen = 0
        for u in range(start, n, stride):
            if active[u] != 0:
                seen = 1
                break
        if seen:
            cuda.atomic.add(counters, 2 + sweep, 1)
        grid.sync()
        if counters[2 + sweep] == 0:
            return
        if start == 0:
            counters[0] += 1
        slot = 2 + n_sweeps + sweep * n_batches
        for b in range(n_batches):
            lo = bounds[b]
            hi = bounds[b + 1]
            # propose, from the state at the batch's start
            for i in range(lo + start, hi, stride):
                u = perms[sweep, i]
                if active[u] != 0:
                    active[u] = 0
                    t = _propose_move(u, indptr, indices, weight, k, kfix, memb, Kfix, size,
                                      scale, inv_fix, hkey, hval)  # fmt: skip
                    prop[u] = t
                    if t != _NONE:
                        if size[memb[u]] == 1:
                            leaver[memb[u]] = u
                        if t == _EMPTY:
                            cuda.atomic.add(counters, slot + b, 1)
            grid.sync()
            # empty communities, in batch order: the i-th such mover takes the i-th empty id
            if counters[slot + b] > 0:
                if start == 0:
                    c = 0
                    for i in range(lo, hi):
                        u = perms[sweep, i]
                        if prop[u] == _EMPTY:
                            while size[c] != 0:
                                c += 1
                            prop[u] = c
                            c += 1
                grid.sync()
            # cancel moves into a singleton whose member moves too, unless mutual and to the
            # smaller id
            for i in range(lo + start, hi, stride):
                u = perms[sweep, i]
                t = prop[u]
                if t >= 0:
                    own = memb[u]
                    keep = 1
                    if size[t] == 1 and leaver[t] >= 0:
                        if not (prop[leaver[t]] == own and t < own):
                            keep = 0
                    go[u] = keep
            grid.sync()
            # apply (integer atomics)
            for i in range(lo + start, hi, stride):
                u = perms[sweep, i]
                t = prop[u]
                if t >= 0:
                    own = memb[u]
                    if leaver[own] == u:
                        leaver[own] = -1
                    if go[u] != 0:
                        memb[u] = t
                        cuda.atomic.add(Kfix, own, -kfix[u])
                        cuda.atomic.add(Kfix, t, kfix[u])
                        cuda.atomic.add(size, own, -1)
                        cuda.atomic.add(size, t, 1)
                        cuda.atomic.add(counters, 1, 1)
            grid.sync()
            # re-activate the movers' neighbours outside their new community
            for i in range(lo + start, hi, stride):
                u = perms[sweep, i]
                if prop[u] != _NONE:
                    if go[u] != 0:
                        cu = memb[u]
                        for j in range(indptr[u], indptr[u + 1]):
                            v = indices[j]
                            if v != u and memb[v] != cu:
                                active[v] = 1
                        go[u] = 0
                    prop[u] = _NONE
            grid.sync()


@cuda.jit
def _refine_init(indptr, indices, weight, k, kfix, memb, Kc_fix, scale, inv_fix, fix, ext_node,
                 ref, Kr_fix, ext_fix, rsize, pending):  # fmt: skip
    """Singletons of the refinement: each node's weight to the rest of its community, and
    whether it is well connected to it (``Kc_fix``: its community totals, fixed point)."""
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for u in range(start, memb.shape[0], stride):
        cu = memb[u]
        ext = 0.0
        for j in range(indptr[u], indptr[u + 1]):
            v = indices[j]
            if v != u and memb[v] == cu:
                ext += weight[j]
        ef = _to_fix(ext, fix)
        ext_node[u] = ef
        ref[u] = u
        Kr_fix[u] = kfix[u]
        ext_fix[u] = ef
        rsize[u] = 1
        ok = ext >= scale * k[u] * ((Kc_fix[cu] - kfix[u]) * inv_fix)
        pending[u] = 1 if ok else 0


@cuda.jit
def _refine_sweeps(indptr, indices, weight, k, kfix, memb, Kc_fix, ext_node, ref, Kr_fix,
                   ext_fix, rsize, pending, perms, bounds, scale, inv_fix, fix, hkey, hval,
                   prop, wt, leaver, go, counters):  # fmt: skip
    """Up to ``perms.shape[0]`` sweeps of the refinement (one cooperative launch).

    ``counters[0]``: sweeps run; ``counters[1]``: moves made; ``counters[2 + s]``: pending
    nodes at the start of sweep ``s`` (all zeroed by the caller)."""
    grid = cuda.cg.this_grid()
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    n = memb.shape[0]
    n_sweeps = perms.shape[0]
    n_batches = bounds.shape[0] - 1
    for sweep in range(n_sweeps):
        seen = 0
        for u in range(start, n, stride):
            if pending[u] != 0:
                seen = 1
                break
        if seen:
            cuda.atomic.add(counters, 2 + sweep, 1)
        grid.sync()
        if counters[2 + sweep] == 0:
            return
        if start == 0:
            counters[0] += 1
        for b in range(n_batches):
            lo = bounds[b]
            hi = bounds[b + 1]
            # propose: pending nodes still alone
            for i in range(lo + start, hi, stride):
                u = perms[sweep, i]
                candidate = pending[u] != 0 and rsize[ref[u]] == 1
                pending[u] = 0
                if candidate:
                    t = _propose_refine(u, indptr, indices, weight, k, memb, Kc_fix, ref,
                                        Kr_fix, ext_fix, scale, inv_fix, hkey, hval, wt)  # fmt: skip
                    prop[u] = t
                    if t >= 0:
                        leaver[ref[u]] = u
            grid.sync()
            # cancel moves into a singleton whose member moves too (unless mutual, to the
            # smaller id); a cancelled node is retried in a later sweep
            for i in range(lo + start, hi, stride):
                u = perms[sweep, i]
                t = prop[u]
                if t >= 0:
                    own = ref[u]
                    keep = 1
                    if rsize[t] == 1 and leaver[t] >= 0:
                        if not (prop[leaver[t]] == own and t < own):
                            keep = 0
                    go[u] = keep
                    if keep == 0:
                        pending[u] = 1
            grid.sync()
            # apply: T's external weight += ext_v - 2 w(v, T) - w(v, movers joining T too)
            for i in range(lo + start, hi, stride):
                u = perms[sweep, i]
                t = prop[u]
                if t >= 0:
                    own = ref[u]
                    if leaver[own] == u:
                        leaver[own] = -1
                    if go[u] != 0:
                        delta = ext_node[u] - 2 * _to_fix(wt[u], fix)
                        for j in range(indptr[u], indptr[u + 1]):
                            v = indices[j]
                            if v != u and go[v] != 0 and prop[v] == t:
                                delta -= _to_fix(weight[j], fix)
                        cuda.atomic.add(ext_fix, t, delta)
                        cuda.atomic.add(Kr_fix, t, kfix[u])
                        cuda.atomic.add(rsize, t, 1)
                        cuda.atomic.add(counters, 1, 1)
            grid.sync()
            for i in range(lo + start, hi, stride):
                u = perms[sweep, i]
                t = prop[u]
                if t != _NONE:
                    if go[u] != 0:
                        own = ref[u]
                        rsize[own] = 0
                        Kr_fix[own] = 0
                        ext_fix[own] = 0
                        ref[u] = t
                        go[u] = 0
                    prop[u] = _NONE
            grid.sync()


# ----------------------------------------------------------------------------------------------
# host drivers (the reference's ``_Leiden._move`` / ``_Leiden._refine``)
# ----------------------------------------------------------------------------------------------
def _simulated() -> bool:
    from numba import config

    return bool(config.ENABLE_CUDASIM)


def _geometry(kernel, n: int, args) -> tuple[int, int]:
    """(blocks, threads): one block of a few threads on the simulator, else a cooperative
    grid as large as the device keeps resident (and no larger than the work)."""
    if _simulated():
        return 1, 4
    threads = 256
    try:
        (overload,) = kernel.specialize(*args).overloads.values()
        resident = int(overload.max_cooperative_grid_blocks(threads))
    except Exception:  # noqa: BLE001 - fall back to one block per multiprocessor
        resident = int(cuda.get_current_device().MULTIPROCESSOR_COUNT)
    return max(1, min(resident, -(-n // threads))), threads


def _fixed_point_scale(two_m: float) -> float:
    """``2**s`` with ``two_m * 2**s < 2**61``: every total, at most ``two_m``, fits int64."""
    s = 61 - max(0, math.ceil(math.log2(max(two_m, 1.0)))) - 1
    return float(2.0**s)


class _Csr:
    """The reference graph (COO sorted by row, col) as CSR arrays on ``am``'s device."""

    def __init__(self, am, g):
        xp = am.xp
        self.n = g.n
        self.indptr = xp.searchsorted(g.row, xp.arange(g.n + 1, dtype=xp.int64)).astype(xp.int64)
        self.indices = g.col.astype(xp.int64)
        self.weight = g.weight.astype(xp.float64)
        self.k = g.degree.astype(xp.float64)
        self.two_m = float(g.two_m)
        self.fix = _fixed_point_scale(self.two_m)
        self.inv_fix = 1.0 / self.fix


def _draw(rng, n: int, count: int):
    """``count`` of the reference's node orders, with the generator state before each."""
    states, perms = [], []
    for _ in range(count):
        states.append(rng.get_state())
        perms.append(rng.permutation(n).astype(np.int64))
    return states, np.stack(perms)


def _bounds(n: int, n_batches: int) -> np.ndarray:
    n_batches = min(n_batches, n)
    return np.array([(n * b) // n_batches for b in range(n_batches + 1)], dtype=np.int64)


def _run_sweeps(am, kernel, n, rng, n_batches, max_sweeps, sweeps_per_launch, make_args, slots):
    """Launch ``kernel`` until a launch runs fewer sweeps than it was given (converged) or
    ``max_sweeps`` ran; one host read of the device counters per launch. Returns the
    launches made and the sweeps run."""
    xp = am.xp
    bounds = am.asarray(_bounds(n, n_batches))
    done = launches = 0
    while done < max_sweeps:
        count = min(sweeps_per_launch, max_sweeps - done)
        states, perms = _draw(rng, n, count)
        counters = xp.zeros(2 + count + slots * count, dtype=xp.int64)
        args = make_args(am.asarray(perms), bounds, counters)
        blocks, threads = _geometry(kernel, n, args)
        kernel[blocks, threads](*args)
        launches += 1
        ran = int(am.to_host(counters[:1])[0])
        done += ran
        if ran < count:  # converged: the reference drew no order for the sweeps not run
            rng.set_state(states[ran])
            break
    return launches, done


def _scratch(am, csr):
    xp = am.xp
    nnz = int(csr.indices.shape[0])
    return xp.empty(2 * nnz, dtype=xp.int64), xp.empty(2 * nnz, dtype=xp.float64)


def move_nodes(am, g, memb, rng, gamma, n_batches, max_sweeps,
               sweeps_per_launch=SWEEPS_PER_LAUNCH, stats=None):  # fmt: skip
    """The reference's ``_Leiden._move`` (fast local moving) as :func:`_move_sweeps`
    launches. ``g``: the reference's ``_Graph``; returns the new membership."""
    xp = am.xp
    csr = _Csr(am, g)
    n = csr.n
    memb = memb.astype(xp.int64).copy()
    scale = gamma / csr.two_m
    kfix = xp.zeros(n, dtype=xp.int64)
    Kfix = xp.zeros(n, dtype=xp.int64)
    size = xp.zeros(n, dtype=xp.int64)
    _launch_flat(_phase_init, n, (csr.k, memb, csr.fix, kfix, Kfix, size))
    active = xp.ones(n, dtype=xp.int8)
    prop = xp.full(n, _NONE, dtype=xp.int64)
    leaver = xp.full(n, -1, dtype=xp.int64)
    go = xp.zeros(n, dtype=xp.int8)
    hkey, hval = _scratch(am, csr)
    n_b = min(max(1, n_batches), n)

    def make_args(perms, bounds, counters):
        return (csr.indptr, csr.indices, csr.weight, csr.k, kfix, memb, Kfix, size, active,
                perms, bounds, scale, csr.inv_fix, hkey, hval, prop, leaver, go, counters)  # fmt: skip

    launches, sweeps = _run_sweeps(
        am, _move_sweeps, n, rng, n_batches, max_sweeps, sweeps_per_launch, make_args, n_b
    )
    if stats is not None:
        stats.append(("move", n, int(csr.indices.shape[0]), launches + 1, sweeps))
    return memb


def refine(am, g, memb, rng, gamma, n_batches, max_sweeps,
           sweeps_per_launch=SWEEPS_PER_LAUNCH, stats=None):  # fmt: skip
    """The reference's ``_Leiden._refine`` as :func:`_refine_sweeps` launches; returns the
    refined membership (ids are node ids, as the reference's)."""
    xp = am.xp
    csr = _Csr(am, g)
    n = csr.n
    memb = memb.astype(xp.int64)
    scale = gamma / csr.two_m
    kfix = xp.zeros(n, dtype=xp.int64)
    Kc_fix = xp.zeros(n, dtype=xp.int64)
    csize = xp.zeros(n, dtype=xp.int64)
    _launch_flat(_phase_init, n, (csr.k, memb, csr.fix, kfix, Kc_fix, csize))
    ext_node = xp.zeros(n, dtype=xp.int64)
    ref = xp.zeros(n, dtype=xp.int64)
    Kr_fix = xp.zeros(n, dtype=xp.int64)
    ext_fix = xp.zeros(n, dtype=xp.int64)
    rsize = xp.zeros(n, dtype=xp.int64)
    pending = xp.zeros(n, dtype=xp.int8)
    _launch_flat(
        _refine_init,
        n,
        (
            csr.indptr,
            csr.indices,
            csr.weight,
            csr.k,
            kfix,
            memb,
            Kc_fix,
            scale,
            csr.inv_fix,
            csr.fix,
            ext_node,
            ref,
            Kr_fix,
            ext_fix,
            rsize,
            pending,
        ),  # fmt: skip
    )
    prop = xp.full(n, _NONE, dtype=xp.int64)
    wt = xp.zeros(n, dtype=xp.float64)
    leaver = xp.full(n, -1, dtype=xp.int64)
    go = xp.zeros(n, dtype=xp.int8)
    hkey, hval = _scratch(am, csr)

    def make_args(perms, bounds, counters):
        return (csr.indptr, csr.indices, csr.weight, csr.k, kfix, memb, Kc_fix, ext_node, ref,
                Kr_fix, ext_fix, rsize, pending, perms, bounds, scale, csr.inv_fix, csr.fix,
                hkey, hval, prop, wt, leaver, go, counters)  # fmt: skip

    launches, sweeps = _run_sweeps(
        am, _refine_sweeps, n, rng, n_batches, max_sweeps, sweeps_per_launch, make_args, 0
    )
    if stats is not None:
        stats.append(("refine", n, int(csr.indices.shape[0]), launches + 2, sweeps))
    return ref


def _launch_flat(kernel, n: int, args) -> None:
    """A grid-stride kernel over ``n`` items (no grid barrier: any grid size)."""
    if _simulated():
        kernel[1, 4](*args)
        return
    threads = 256
    kernel[max(1, min(-(-n // threads), 65535)), threads](*args)
