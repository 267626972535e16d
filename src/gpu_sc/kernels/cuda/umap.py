"""The UMAP layout as one fused kernel launch per epoch (numba-cuda), and its declared cost.

:func:`optimize_layout` computes what :func:`gpu_sc.kernels.umap.optimize_layout` computes
with ``negatives="hash"``: the same edge schedule (``epochs_per_sample``, the negative-sample
debt of each edge), the same clipping (4) and learning-rate decay, the same synchronous
epoch (every gradient from the positions at the epoch's start) and the same summation order
per vertex; the negative samples are the counter-based hash of ``(seed, epoch, edge,
sample)`` (:func:`gpu_sc.kernels.umap.negative_samples`), computed inside the launch.

What it guarantees: **the same input and seed give the same embedding bit for bit on the same
device** (and the simulator). Unlike umap-learn's Hogwild updates, no thread writes what
another reads in the same launch: positions and the edge schedule are double-buffered, each
vertex's sums are made by its own thread in a fixed order, and no floating-point atomic is
used, so the result does not depend on how threads are scheduled. Against the reference the
kernel differs only by the rounding of ``powf`` (device libm vs NumPy's) and float32
contraction (FMA) the compiler may apply; the tests bound that on the simulator.

The kernel source lives in :mod:`._umap_kernels`, imported on first use (it imports
``numba.cuda``; ``NUMBA_ENABLE_CUDASIM=1`` must be set before that to run it on the CPU).
"""

from __future__ import annotations

import numpy as np

from ...dispatch.arrays import ArrayModule
from ..segment import segment_ids
from ..umap import make_epochs_per_sample

__all__ = ["epoch_cost", "optimize_layout", "THREADS_PER_BLOCK"]

THREADS_PER_BLOCK = 128
_I64, _F64, _F32 = 8, 8, 4


def epoch_cost(
    n: int, n_edges: int, dim: int, n_active: float | None = None, negative_sample_rate: int = 5
) -> dict[str, float]:
    """Declared cost of one launch of the fused epoch (bytes read, bytes written, flop).

    ``n_active`` is the number of edges sampled in the epoch (on average ``sum(w) / max(w)``
    over the epoch's edges; all ``n_edges`` if not given, an upper bound); each owes
    ``negative_sample_rate`` negative samples on average. Counted per launch:

    * read: the two offset arrays (``2 (n + 1)`` int64); per edge its ``epochs_per_sample``
      and schedule entry twice (head and tail thread) and its transposed id once
      (``5 n_edges`` 8-byte words); per active edge its tail, head, ``epochs_per_neg_sample``
      and negative debt (4 words) and both endpoints' rows by both threads
      (``4 dim`` float32); per negative sample two rows (``2 dim`` float32); each vertex's row.
    * written: the schedule (``n_edges`` float64), the debt of each active edge, the new rows.
    * flop: per active edge the attraction twice (``6 dim + 40``: two ``powf``), per negative
      sample one repulsion (``6 dim + 30``), per vertex the update (``3 dim``).
    """
    active = float(n_edges if n_active is None else n_active)
    neg = active * float(negative_sample_rate)
    read = (
        2 * (n + 1) * _I64
        + 5 * n_edges * _I64
        + active * (4 * _I64 + 4 * dim * _F32)
        + neg * 2 * dim * _F32
        + n * dim * _F32
    )
    written = n_edges * _F64 + active * _F64 + n * dim * _F32
    flop = 2 * active * (6 * dim + 40) + neg * (6 * dim + 30) + 3 * dim * n
    return {"bytes_read": float(read), "bytes_written": float(written), "flop": float(flop)}


def _kernels():
    from . import _umap_kernels

    return _umap_kernels


def prepare(am: ArrayModule, graph, n_epochs: int, negative_sample_rate: int):
    """The device arrays of the epoch kernel (once per layout), and the mean active edges.

    Edges in CSR order (sorted indices) are the reference's edge ids; the transposed lists
    (``in_ptr``, ``in_edge`` sorted by tail then edge id, ``in_head``) let each vertex find the
    edges it is the tail of without scattering.
    """
    xp = am.xp
    graph = am.sparse.csr_matrix(graph, copy=True)
    graph.sort_indices()
    n = graph.shape[0]
    indptr = xp.asarray(graph.indptr, dtype=xp.int64)
    tail = xp.asarray(graph.indices, dtype=xp.int64)
    weights = xp.asarray(graph.data, dtype=xp.float64)
    n_edges = int(tail.size)
    head = segment_ids(am, xp.diff(indptr))
    eps = make_epochs_per_sample(am, weights, n_epochs)
    eps_neg = eps / negative_sample_rate
    # Unique keys: any sort gives the same order (tail, then edge id).
    in_edge = xp.argsort(tail * max(n_edges, 1) + xp.arange(n_edges, dtype=xp.int64))
    in_edge = in_edge.astype(xp.int64)
    counts = xp.bincount(tail, minlength=n)
    in_ptr = xp.concatenate([xp.zeros(1, xp.int64), xp.cumsum(counts).astype(xp.int64)])
    in_head = head[in_edge]
    n_active = float((weights / weights.max()).sum()) if n_edges else 0.0
    arrays = dict(
        out_ptr=indptr, out_tail=tail, in_ptr=in_ptr, in_edge=in_edge, in_head=in_head,
        eps=eps, eps_neg=eps_neg,
    )  # fmt: skip
    return arrays, n_edges, n_active


def optimize_layout(
    am: ArrayModule,
    embedding,
    graph,
    *,
    n_epochs: int,
    a: float,
    b: float,
    gamma: float = 1.0,
    initial_alpha: float = 1.0,
    negative_sample_rate: int = 5,
    seed: int = 0,
):
    """:func:`gpu_sc.kernels.umap.optimize_layout` (``negatives="hash"``), one launch per epoch.

    ``am`` is CuPy on a GPU, or NumPy under the CUDA simulator (tests). Returns the float32
    ``(n, dim)`` embedding.
    """
    xp = am.xp
    k = _kernels()
    y = xp.ascontiguousarray(xp.asarray(embedding, dtype=xp.float32))
    n, dim = y.shape
    if dim > k.MAX_DIM:
        raise ValueError(f"the fused UMAP epoch takes at most {k.MAX_DIM} dimensions, not {dim}")
    arr, n_edges, _ = prepare(am, graph, n_epochs, negative_sample_rate)
    ns = [arr["eps"].copy(), arr["eps"].copy()]
    next_neg = arr["eps_neg"].copy()
    ys = [y.copy(), xp.empty_like(y)]
    f32 = np.float32
    a32, b32 = f32(a), f32(b)
    two_gamma_b = f32(f32(f32(2.0) * f32(gamma)) * b32)
    sh = k.seed_hash(seed)
    blocks = max(1, -(-n // THREADS_PER_BLOCK))
    alpha = float(initial_alpha)
    for epoch in range(n_epochs):
        k.umap_epoch_kernel[blocks, THREADS_PER_BLOCK](
            ys[0], ys[1], arr["out_ptr"], arr["out_tail"], arr["in_ptr"], arr["in_edge"],
            arr["in_head"], arr["eps"], arr["eps_neg"], ns[0], ns[1], next_neg,
            np.int64(epoch), f32(alpha), a32, b32, two_gamma_b, sh,
        )  # fmt: skip
        ys.reverse()
        ns.reverse()
        alpha = initial_alpha * (1.0 - float(epoch) / float(n_epochs))
    return ys[0]
