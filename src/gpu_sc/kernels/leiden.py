"""Leiden community detection on a weighted undirected graph, array-generic.

The quality optimised is the one scanpy's ``flavor="igraph"`` optimises
(``igraph.Graph.community_leiden(objective_function="modularity", weights, resolution)``):

.. math:: Q = \\frac{1}{2m} \\sum_{ij} \\Big(A_{ij} - \\gamma \\frac{k_i k_j}{2m}\\Big)
          \\delta(c_i, c_j)

with :math:`k_i = \\sum_j A_{ij}` and :math:`2m = \\sum_{ij} A_{ij}`. scanpy builds the igraph
graph from *every* stored entry of the symmetric connectivities, so igraph sees each edge twice
(weights doubled); modularity is invariant to that scaling, so :func:`modularity` of the
matrix itself equals igraph's ``modularity`` of scanpy's graph.
"""

from __future__ import annotations

import numpy as np

from ..dispatch.arrays import ArrayModule, is_device_array
from .segment import group_pairs as _group_pairs
from .segment import reduce_runs as _reduce_runs
from .segment import run_starts as _run_starts
from .segment import scatter_add as _scatter_add
from .segment import segment_sum as _segment_sum

__all__ = ["SWEEPS_PER_CALL", "PhaseState", "leiden", "modularity", "phase_sweeps"]

#: safety cap on ``n_iterations=-1`` (an iteration never lowers the quality, so a run that
#: has not settled by then is cycling between partitions of equal quality)
_MAX_ITERATIONS_UNTIL_STABLE = 100


def modularity(am: ArrayModule, adjacency, labels, resolution: float = 1.0):
    """Modularity with resolution of the partition ``labels`` of ``adjacency``.

    Parameters
    ----------
    am
        Array module the sums are made with (``adjacency`` and host ``labels`` are moved
        to it).
    adjacency
        Square symmetric sparse (or dense) weighted adjacency matrix, host or device.
    labels
        Community of each node: integers, or any values ``xp.unique`` can encode
        (strings/categories on host are converted with pandas).
    resolution
        :math:`\\gamma` in the formula above (scanpy's ``resolution``).

    Returns
    -------
    float
        :math:`Q` as defined in the module docstring (0.0 for a graph without edges).
    """
    xp = am.xp
    A = am.asarray(adjacency)
    if not am.issparse(A):
        A = am.sparse.csr_matrix(A)
    A = A.tocoo()
    codes = _label_codes(am, labels)
    if codes.shape[0] != A.shape[0]:
        raise ValueError(f"labels has {codes.shape[0]} entries for a graph of {A.shape[0]} nodes")
    data = A.data.astype(xp.float64)
    two_m = float(data.sum())
    if two_m == 0.0:
        return 0.0
    same = codes[A.row] == codes[A.col]
    inside = float(data[same].sum())
    degree = _segment_sum(am, A.row.astype(xp.int64), data, A.shape[0])
    n_comm = int(codes.max()) + 1
    comm_degree = _segment_sum(am, codes, degree, n_comm)
    return inside / two_m - resolution * float((comm_degree * comm_degree).sum()) / two_m**2


def _label_codes(am: ArrayModule, labels):
    """Integer community codes ``0..C-1`` of ``labels`` on ``am``'s device."""
    xp = am.xp
    if is_device_array(labels):
        arr = labels
    else:
        import numpy as np
        import pandas as pd

        arr = np.asarray(labels)
        if arr.dtype.kind not in "iub":
            arr = pd.factorize(arr)[0]
        arr = am.asarray(arr)
    _, codes = xp.unique(arr, return_inverse=True)
    return codes.ravel().astype(xp.int64)


# ----------------------------------------------------------------------------------------------
# Leiden
# ----------------------------------------------------------------------------------------------
def leiden(
    am: ArrayModule,
    adjacency,
    *,
    resolution: float = 1.0,
    n_iterations: int = -1,
    random_state: int = 0,
    n_batches: int = 64,
    max_sweeps: int = 100,
):
    """Deterministic Leiden optimising :func:`modularity` with ``resolution``.

    The three phases of Traag et al. (2019) as igraph's ``community_leiden`` runs them: fast
    local moving, refinement into well-connected sub-communities, aggregation on the refined
    partition (initialised with the unrefined one), repeated until every community is one
    aggregate node. Each phase processes the nodes in a seeded random order cut into
    ``n_batches`` vertex batches: the nodes of one batch decide simultaneously from vectorised
    node-to-community weights (sorts and segment sums in a fixed order, no floating-point
    atomics), so the result is bitwise reproducible for a graph and seed on one device, and a
    batch sees the moves of the batches before it, like igraph's sequential sweep.
    Where igraph draws at random (the refinement's choice of a sub-community), this takes the
    best strictly positive gain, ties going to the smallest community id.

    The sweeps of both phases go through the fused kernel ``leiden_sweeps``
    (:mod:`gpu_sc.kernels.cuda.leiden`: up to four whole sweeps per launch, the convergence
    test on the device, the same decisions): on a CUDA device with numba-cuda it runs them;
    on numpy :func:`phase_sweeps` does, and on the CuPy double too, priced as the kernel.

    Parameters
    ----------
    am
        Array module the solver runs with (``adjacency`` is moved to it).
    adjacency
        Symmetric non-negative sparse adjacency (scanpy's connectivities), host or device.
    resolution
        :math:`\\gamma` of the modularity.
    n_iterations
        Number of Leiden iterations, each starting from the previous partition; ``-1``
        iterates until an iteration changes nothing (at most 100 iterations).
    random_state
        Seed of the node orders (drawn on the host with NumPy, so that the ``numpy`` and
        ``cupy`` backends visit nodes in the same order).
    n_batches
        Vertex batches per sweep (more batches: closer to a sequential sweep, more launches).
    max_sweeps
        Cap on the sweeps of one local-moving phase.

    Returns
    -------
    labels
        ``int64`` array (on ``am``'s device): communities numbered ``0..C-1`` by decreasing
        size, ties by their smallest node index.
    """
    xp = am.xp
    if n_iterations == 0 or n_iterations < -1:
        raise ValueError(f"n_iterations must be -1 or positive, not {n_iterations}")
    graph = _Graph.from_adjacency(am, adjacency)
    rng = np.random.RandomState(random_state)
    solver = _Leiden(am, float(resolution), rng, int(n_batches), int(max_sweeps))
    membership = xp.arange(graph.n, dtype=xp.int64)
    iteration = 0
    limit = n_iterations if n_iterations > 0 else _MAX_ITERATIONS_UNTIL_STABLE
    while iteration < limit:
        new = solver.run(graph, membership)
        changed = not bool((_canonical(am, new) == _canonical(am, membership)).all())
        membership = new
        iteration += 1
        if not changed and n_iterations < 0:
            break
    return _by_size(am, membership)


class _Graph:
    """Weighted undirected graph as COO arrays sorted by (row, col), both directions stored."""

    def __init__(self, am: ArrayModule, n: int, row, col, weight):
        self.n = n
        self.row, self.col, self.weight = row, col, weight
        self.degree = _segment_sum(am, row, weight, n)  # k_i, self-loops included
        self.two_m = float(self.degree.sum())

    @classmethod
    def from_adjacency(cls, am: ArrayModule, adjacency) -> _Graph:
        xp = am.xp
        A = am.asarray(adjacency)
        if not am.issparse(A):
            A = am.sparse.csr_matrix(A)
        if A.shape[0] != A.shape[1]:
            raise ValueError(f"adjacency must be square, not {A.shape}")
        A = A.tocsr()
        A.sum_duplicates()
        A.sort_indices()
        coo = A.tocoo()
        keep = coo.data != 0
        row = coo.row[keep].astype(xp.int64)
        col = coo.col[keep].astype(xp.int64)
        weight = coo.data[keep].astype(xp.float64)
        if bool((weight < 0).any()):
            raise ValueError("Leiden needs non-negative edge weights")
        return cls(am, A.shape[0], row, col, weight)

    def coarsen(self, am: ArrayModule, groups, n_groups: int) -> _Graph:
        """The graph of ``groups``: :math:`M^T A M` as sorted-key segment sums."""
        xp = am.xp
        key = groups[self.row] * n_groups + groups[self.col]
        order = xp.argsort(key, kind="stable")
        key = key[order]
        starts, _ = _run_starts(am, key)
        w = _reduce_runs(am, self.weight[order], starts)
        k = key[starts]
        return _Graph(am, n_groups, k // n_groups, k % n_groups, w)


class _Leiden:
    def __init__(self, am, resolution, rng, n_batches, max_sweeps):
        self.am, self.gamma, self.rng = am, resolution, rng
        self.n_batches, self.max_sweeps = max(1, n_batches), max_sweeps

    # -- driver ---------------------------------------------------------------------------
    def run(self, graph: _Graph, membership):
        """One Leiden iteration from ``membership`` on the original graph."""
        am, xp = self.am, self.am.xp
        if graph.two_m == 0.0:
            return membership
        node_of = xp.arange(graph.n, dtype=xp.int64)  # original node -> aggregate node
        g, memb = graph, membership
        while True:
            memb = self._phase(PhaseState("move", g, memb.copy(), self.gamma, self.n_batches))
            n_clusters = int(xp.unique(memb).shape[0])
            if n_clusters >= g.n:
                break
            refined = self._phase(PhaseState("refine", g, memb, self.gamma, self.n_batches))
            _, refined = xp.unique(refined, return_inverse=True)
            refined = refined.ravel().astype(xp.int64)
            n_refined = int(refined.max()) + 1
            if n_refined >= g.n:  # refinement merged nothing: aggregate the partition itself
                _, refined = xp.unique(memb, return_inverse=True)
                refined = refined.ravel().astype(xp.int64)
                n_refined = int(refined.max()) + 1
            parent = xp.zeros(n_refined, dtype=xp.int64)
            parent[refined] = memb  # every refined community lies inside one community
            node_of = refined[node_of]
            g = g.coarsen(am, refined, n_refined)
            _, memb = xp.unique(parent, return_inverse=True)  # ids < number of aggregate nodes
            memb = memb.ravel().astype(xp.int64)
        return memb[node_of]

    def _phase(self, state: PhaseState):
        """Sweeps of one phase until a sweep finds no node to visit (or ``max_sweeps``).

        Sweeps run in calls of up to :data:`SWEEPS_PER_CALL` through the ``leiden_sweeps``
        fused kernel (:mod:`gpu_sc.kernels.cuda.leiden`; :func:`phase_sweeps` where it does
        not run), which returns how many it ran: one host read per call. Each sweep visits
        the nodes in a fresh ``rng.permutation``, drawn here for the whole call; when the
        phase ends inside a call, the generator is rewound to just after the orders of the
        sweeps that ran, so the draws are the same as one sweep at a time.
        """
        from .cuda import run_kernel

        n, done = state.g.n, 0
        while done < self.max_sweeps:
            count = min(SWEEPS_PER_CALL, self.max_sweeps - done)
            saved, orders = [], []
            for _ in range(count):
                saved.append(self.rng.get_state())
                orders.append(self.rng.permutation(n).astype(np.int64))
            perms = self.am.asarray(np.stack(orders))
            ran = int(run_kernel(self.am, "leiden_sweeps", state, perms))
            done += ran
            if ran < count:
                self.rng.set_state(saved[ran])
                break
        return state.result


#: sweeps one ``leiden_sweeps`` call may run (one host read of the count per call)
SWEEPS_PER_CALL = 4


class PhaseState:
    """One local-moving (``"move"``) or refinement (``"refine"``) phase on one level: the
    graph, the partition it works on, and the arrays of whichever implementation runs its
    sweeps (the reference's, :func:`phase_sweeps`, or the fused kernel's), made on its first
    call. ``result``: the phase's partition so far (for ``"move"``, ``memb`` itself, moved in
    place; for ``"refine"``, the refined partition, ids being node ids)."""

    def __init__(self, phase: str, g: _Graph, memb, gamma: float, n_batches: int):
        if phase not in ("move", "refine"):
            raise ValueError(f"phase must be 'move' or 'refine', not {phase!r}")
        self.phase, self.g, self.memb, self.gamma = phase, g, memb, float(gamma)
        self.n_batches = min(max(1, int(n_batches)), max(g.n, 1))
        self.arrays: dict | None = None
        self.result = memb

    def copy(self) -> PhaseState:
        """A fresh phase on the same graph from (a copy of) the same partition, no arrays
        made yet (what repeated timings of one call start from)."""
        return PhaseState(self.phase, self.g, self.memb.copy(), self.gamma, self.n_batches)

    @property
    def bounds(self) -> np.ndarray:
        """Batch ``b`` is positions ``bounds[b]:bounds[b + 1]`` of a sweep's node order."""
        n, nb = self.g.n, self.n_batches
        return np.array([(n * b) // nb for b in range(nb + 1)], dtype=np.int64)


def phase_sweeps(am: ArrayModule, state: PhaseState, perms) -> int:
    """Up to ``perms.shape[0]`` sweeps of ``state``'s phase, sweep ``s`` visiting the nodes in
    the order ``perms[s]``; stops before a sweep with no node to visit. Returns the sweeps
    run. The array-generic reference of the ``leiden_sweeps`` fused kernel."""
    if state.arrays is None:
        state.arrays = (_move_init if state.phase == "move" else _refine_init)(am, state)
    sweep = _move_sweep if state.phase == "move" else _refine_sweep
    flag = "active" if state.phase == "move" else "pending"
    for s in range(perms.shape[0]):
        if not bool(state.arrays[flag].any()):
            return s
        sweep(am, state, perms[s])
    return int(perms.shape[0])


def _batches(am: ArrayModule, state: PhaseState, order):
    """The node order ``order`` cut into ``state``'s vertex batches, each with its nodes'
    edges. Edges (self-loops excluded) are grouped by their source's batch with one stable
    sort, so a batch reads its edges as a contiguous slice."""
    xp, g = am.xp, state.g
    n, bounds = g.n, state.bounds
    n_batches = bounds.shape[0] - 1
    batch_of = xp.empty(n, dtype=xp.int64)
    batch_of[order] = am.asarray(np.searchsorted(bounds, np.arange(n), side="right") - 1)
    off = g.row != g.col
    u, v, w = g.row[off], g.col[off], g.weight[off]
    edge_batch = batch_of[u]
    by_batch = xp.argsort(edge_batch, kind="stable")
    u, v, w = u[by_batch], v[by_batch], w[by_batch]
    edge_bounds = am.to_host(
        xp.searchsorted(edge_batch[by_batch], xp.arange(n_batches + 1, dtype=xp.int64))
    )
    for b in range(n_batches):
        lo, hi = int(edge_bounds[b]), int(edge_bounds[b + 1])
        yield order[bounds[b] : bounds[b + 1]], u[lo:hi], v[lo:hi], w[lo:hi]


# -- phase 1: fast local moving -------------------------------------------------------------
def _move_init(am: ArrayModule, state: PhaseState) -> dict:
    xp, g, memb = am.xp, state.g, state.memb
    n = g.n
    return {
        "K": _segment_sum(am, memb, g.degree, n),
        "size": xp.bincount(memb, minlength=n),
        "active": xp.ones(n, dtype=bool),
        "flag": xp.zeros(n, dtype=bool),
        "loc": xp.full(n, -1, dtype=xp.int64),
    }


def _move_sweep(am: ArrayModule, state: PhaseState, order) -> None:
    """One sweep of fast local moving: move nodes to the neighbouring community of largest
    gain, batch after batch, and revisit the neighbours of moved nodes. The work of a batch
    is proportional to its nodes and their edges (``loc``/``flag`` are scratch arrays reset
    after use), so a sweep costs one pass over the graph."""
    xp, g, memb = am.xp, state.g, state.memb
    k, scale = g.degree, state.gamma / g.two_m
    a = state.arrays
    K, size, active, flag, loc = a["K"], a["size"], a["active"], a["flag"], a["loc"]
    for batch, u, v, w in _batches(am, state, order):
        nodes = batch[active[batch]]
        m = nodes.shape[0]
        if m == 0:
            continue
        keep = active[u]
        uu, vv, ww = u[keep], v[keep], w[keep]
        active[nodes] = False
        # node -> community weights W[u, c] as segment sums over sorted (u, c) keys
        key_u, key_c, wc = _group_pairs(am, uu, memb[vv], ww, g.n)
        own = memb[key_u]
        is_own = key_c == own
        ku = k[key_u]
        score = wc - scale * ku * xp.where(is_own, K[key_c] - ku, K[key_c])
        loc[nodes] = xp.arange(m, dtype=xp.int64)
        # staying: w(u, own \ u) - scale k_u (K_own - k_u); 0 weight without an entry
        kn = k[nodes]
        stay = -scale * kn * (K[memb[nodes]] - kn)
        stay[loc[key_u[is_own]]] = score[is_own]
        best_u, best_c, best_s = _row_argmax(am, key_u[~is_own], key_c[~is_own], score[~is_own])
        best_score = xp.full(m, -xp.inf)
        best_comm = xp.full(m, -1, dtype=xp.int64)
        best_score[loc[best_u]] = best_s
        best_comm[loc[best_u]] = best_c
        loc[nodes] = -1
        # an empty community (score 0) is an option for a node that is not alone
        to_empty = (size[memb[nodes]] > 1) & (best_score < 0.0)
        best_score = xp.where(to_empty, 0.0, best_score)
        moves = (best_score - stay) > 1e-12 * kn
        movers, target = nodes[moves], best_comm[moves]
        if movers.shape[0] == 0:
            continue
        empty_movers = to_empty[moves]
        if bool(empty_movers.any()):
            free = xp.nonzero(size == 0)[0]
            target[empty_movers] = free[: int(empty_movers.sum())]
        movers, target = _drop_singleton_swaps(am, memb, size, movers, target)
        if movers.shape[0] == 0:
            continue
        old = memb[movers]
        memb[movers] = target
        km = k[movers]
        _scatter_add(am, K, old, -km)
        _scatter_add(am, K, target, km)
        ones = xp.ones(movers.shape[0], dtype=size.dtype)
        _scatter_add(am, size, old, -ones)
        _scatter_add(am, size, target, ones)
        # revisit the neighbours of moved nodes that are outside their new community
        flag[movers] = True
        touched = flag[u] & (memb[v] != memb[u])
        flag[movers] = False
        active[v[touched]] = True


# -- phase 2: refinement --------------------------------------------------------------------
def _refine_init(am: ArrayModule, state: PhaseState) -> dict:
    """Leiden's refinement starts with every node alone; a node well connected to its
    community is pending (gets a visit)."""
    xp, g, memb = am.xp, state.g, state.memb
    n, k, scale = g.n, g.degree, state.gamma / g.two_m
    K_comm = _segment_sum(am, memb, k, n)[memb]  # K_C of each node's community
    inside = (memb[g.row] == memb[g.col]) & (g.row != g.col)
    ext_node = _segment_sum(am, g.row[inside], g.weight[inside], n)  # w(v, C \ v)
    node_ok = ext_node >= scale * k * (K_comm - k)
    ref = xp.arange(n, dtype=xp.int64)
    state.result = ref
    return {
        "K_comm": K_comm,
        "ext_node": ext_node,
        "ref": ref,
        "K_ref": k.copy(),  # weight of each refined community
        "ext_ref": ext_node.copy(),  # its edge weight to the rest of its community
        "size": xp.ones(n, dtype=xp.int64),
        "pending": node_ok.copy(),
        "flag": xp.zeros(n, dtype=bool),
        "loc": xp.full(n, -1, dtype=xp.int64),
        "target_of": xp.full(n, -1, dtype=xp.int64),
    }


def _refine_sweep(am: ArrayModule, state: PhaseState, order) -> None:
    """One sweep of Leiden's refinement: inside each community, a pending node still alone
    joins the well-connected sub-community of its community with the largest strictly
    positive gain. Each node gets one visit (a second one only if its move was cancelled as
    a conflict within its batch)."""
    xp, g, memb = am.xp, state.g, state.memb
    k, scale = g.degree, state.gamma / g.two_m
    a = state.arrays
    K_comm, ext_node, ref, K_ref, ext_ref = (
        a["K_comm"],
        a["ext_node"],
        a["ref"],
        a["K_ref"],
        a["ext_ref"],
    )
    size, pending, flag, loc, target_of = (
        a["size"],
        a["pending"],
        a["flag"],
        a["loc"],
        a["target_of"],
    )
    for batch, u, v, w in _batches(am, state, order):
        nodes = batch[pending[batch] & (size[ref[batch]] == 1)]
        pending[batch] = False
        if nodes.shape[0] == 0:
            continue
        flag[nodes] = True
        keep = flag[u] & (memb[u] == memb[v])
        flag[nodes] = False
        uu, vv, ww = u[keep], v[keep], w[keep]
        key_u, key_t, wt = _group_pairs(am, uu, ref[vv], ww, g.n)
        K_C = K_comm[key_u]
        ok = ext_ref[key_t] >= scale * K_ref[key_t] * (K_C - K_ref[key_t])
        score = wt - scale * k[key_u] * K_ref[key_t]
        ok &= (score > 0.0) & (key_t != ref[key_u])
        best_u, best_t, _ = _row_argmax(am, key_u[ok], key_t[ok], score[ok])
        if best_u.shape[0] == 0:
            continue
        movers, target = _drop_singleton_swaps(am, ref, size, best_u, best_t)
        # a node whose move was cancelled is retried in a later sweep
        flag[movers] = True
        pending[best_u[~flag[best_u]]] = True
        if movers.shape[0] == 0:
            continue
        # exact update of the targets' weight and external weight:
        # ext_T += ext_v - 2 w(v, T) - (edges between movers joining the same T)
        mm = movers.shape[0]
        target_of[movers] = target
        loc[movers] = xp.arange(mm, dtype=xp.int64)
        joined = flag[key_u] & (key_t == target_of[key_u])
        w_to_target = xp.zeros(mm, dtype=xp.float64)
        w_to_target[loc[key_u[joined]]] = wt[joined]
        pair = flag[uu] & flag[vv] & (target_of[uu] == target_of[vv])
        _scatter_add(am, ext_ref, target, ext_node[movers] - 2.0 * w_to_target)
        _scatter_add(am, ext_ref, target_of[uu[pair]], -ww[pair])
        _scatter_add(am, K_ref, target, k[movers])
        _scatter_add(am, size, target, xp.ones(mm, dtype=size.dtype))
        flag[movers] = False
        target_of[movers] = -1
        loc[movers] = -1
        old = ref[movers]
        size[old] = 0
        K_ref[old] = 0.0
        ext_ref[old] = 0.0
        ref[movers] = target


# ----------------------------------------------------------------------------------------------
# deterministic building blocks (the segment sums live in :mod:`gpu_sc.kernels.segment`)
# ----------------------------------------------------------------------------------------------
def _row_argmax(am: ArrayModule, rows, cols, values):
    """Per row, the column of the largest value (ties: smallest column) and that value."""
    xp = am.xp
    if rows.shape[0] == 0:
        empty = xp.zeros(0, dtype=xp.int64)
        return empty, empty, xp.zeros(0, dtype=xp.float64)
    order = xp.lexsort(xp.stack([cols, -values, rows]))
    rows_s = rows[order]
    starts, _ = _run_starts(am, rows_s)
    pick = order[starts]
    return rows[pick], cols[pick], values[pick]


def _drop_singleton_swaps(am: ArrayModule, memb, size, movers, target):
    """Cancel moves into a singleton community whose only member moves in the same batch.

    Simultaneous moves would otherwise swap two singletons instead of merging them. Of two
    singletons that chose each other, the one joining the smaller community id moves.
    Costs a sort of the movers (a singleton's member is the mover whose own community it is).
    """
    xp = am.xp
    own = memb[movers]
    by_own = xp.argsort(own, kind="stable")
    own_sorted = own[by_own]
    pos = xp.minimum(xp.searchsorted(own_sorted, target), movers.shape[0] - 1)
    member = by_own[pos]  # index (into movers) of the mover that left community ``target``
    blocked = (size[target] == 1) & (own_sorted[pos] == target)
    mutual = blocked & (target[member] == own) & (target < own)
    keep = ~blocked | mutual
    return movers[keep], target[keep]


def _canonical(am: ArrayModule, membership):
    """Relabel communities by first appearance, so two partitions compare as partitions."""
    xp = am.xp
    _, first, inverse = xp.unique(membership, return_index=True, return_inverse=True)
    rank = xp.argsort(xp.argsort(first))
    return rank[inverse.ravel()]


def _by_size(am: ArrayModule, membership):
    """Number communities by decreasing size, ties by their smallest node index."""
    xp = am.xp
    _, first, inverse = xp.unique(membership, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    counts = xp.bincount(inverse)
    order = xp.lexsort(xp.stack([first, -counts]))
    rank = xp.empty_like(order)
    rank[order] = xp.arange(order.shape[0], dtype=order.dtype)
    return rank[inverse].astype(xp.int64)
