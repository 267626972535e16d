"""Fused kernel ``umap_epoch``: one UMAP epoch in one launch (numba-cuda), and its cost.

The reference is :func:`gpu_sc.kernels.umap.layout_epoch` on a ``negatives="hash"``
:class:`~gpu_sc.kernels.umap.LayoutState`: the same edge schedule (``epochs_per_sample``, the
negative-sample debt of each edge), the same clipping (4) and learning-rate decay (the caller's
``alpha``), the same synchronous epoch (every gradient from the positions at the epoch's
start) and the same summation order per vertex; the negative samples are the counter-based
hash of ``(seed, epoch, edge, sample)`` (:func:`gpu_sc.kernels.umap.negative_samples`),
computed inside the launch. The reference's epoch is ~40 CuPy calls and a host sync; the
kernel is one launch and none.

What it guarantees: **the same input and seed give the same embedding bit for bit on the same
device** (and on the simulator). Unlike umap-learn's Hogwild updates, no thread writes what
another reads in the same launch: one thread per vertex gathers its own edges (those it heads
in CSR order, those it is the tail of through a transposed list), positions and the edge
schedule are double-buffered (swapped between epochs), and no floating-point atomic is used,
so the result does not depend on how threads are scheduled. Against the reference it differs
only by the rounding of ``powf`` (device libm vs NumPy's) and float contraction; the
``cudasim`` tests bound that.
"""

from __future__ import annotations

import numpy as np

from ...dispatch.arrays import array_module_for
from ..umap import HASH_GOLDEN, HASH_M1, HASH_M2, layout_epoch, layout_state
from ._registry import grid, launch_stream
from ._spec import KernelCost, KernelSpec

__all__ = ["SPEC", "epoch_cost"]

BLOCK = 128
MAX_DIM = 8  # = _umap_kernels.MAX_DIM (not imported: that module imports numba.cuda)
_I64, _F64, _F32 = 8, 8, 4
_M32 = 0xFFFFFFFF


def epoch_cost(
    n: int, n_edges: int, dim: int, n_active: float | None = None, negative_sample_rate: int = 5
) -> KernelCost:
    """Declared cost of one launch (bytes read, bytes written, float32 flop).

    ``n_active`` is the number of edges sampled in the epoch (on average ``sum(w) / max(w)``;
    all ``n_edges`` if not given, an upper bound); each owes ``negative_sample_rate`` negative
    samples on average. Counted per launch:

    * read: the two offset arrays (``2 (n + 1)`` int64); per edge its ``epochs_per_sample``
      and schedule entry twice (head and tail thread) and its transposed id once
      (``5 n_edges`` 8-byte words); per active edge its tail, head, ``epochs_per_neg_sample``
      and negative debt (4 words) and both endpoints' rows by both threads (``4 dim``
      float32); per negative sample two rows (``2 dim`` float32); each vertex's row.
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
    return KernelCost(read=read, written=written, flops=flop, flop_dtype="float32", launches=1)


def seed_hash(seed: int) -> np.uint64:
    """The seed's first mixing round (host): ``lowbias32(seed * golden)``, the kernel's argument."""
    x = (int(seed) * HASH_GOLDEN) & _M32
    x ^= x >> 16
    x = (x * HASH_M1) & _M32
    x ^= x >> 15
    x = (x * HASH_M2) & _M32
    return np.uint64(x ^ (x >> 16))


def _fused(xp, state):
    """The kernel's arrays beside ``state`` (made once per layout): transposed edge lists and
    the spare buffer of the double-buffered schedule."""
    extra = state.extra
    if "out_ptr" not in extra:
        n, n_edges = state.n, state.n_edges
        tail = xp.ascontiguousarray(state.tail)
        # Unique keys: any sort gives the same order (tail, then edge id).
        in_edge = xp.argsort(tail * max(n_edges, 1) + xp.arange(n_edges, dtype=xp.int64))
        in_edge = in_edge.astype(xp.int64)
        counts = xp.bincount(tail, minlength=n)
        extra.update(
            out_ptr=xp.asarray(state.indptr, dtype=xp.int64),
            out_tail=tail,
            in_ptr=xp.concatenate([xp.zeros(1, xp.int64), xp.cumsum(counts).astype(xp.int64)]),
            in_edge=in_edge,
            in_head=xp.ascontiguousarray(state.head[in_edge]),
            ns_spare=xp.empty_like(state.next_sample),
            seed_hash=seed_hash(state.seed),
        )
    return extra


def _launch(xp, kernels, y, state, epoch, alpha, a, b, gamma):
    ex = _fused(xp, state)
    y_in = xp.ascontiguousarray(xp.asarray(y, dtype=xp.float32))
    y_out = xp.empty_like(y_in)  # from CuPy's pool: no launch
    f32 = np.float32
    b32 = f32(b)
    kern = kernels["umap_epoch"]
    stream = launch_stream(xp)
    blocks = grid(state.n, BLOCK)
    config = kern[blocks, BLOCK] if stream is None else kern[blocks, BLOCK, stream]
    config(
        y_in,
        y_out,
        ex["out_ptr"],
        ex["out_tail"],
        ex["in_ptr"],
        ex["in_edge"],
        ex["in_head"],
        state.eps,
        state.eps_neg,
        state.next_sample,
        ex["ns_spare"],
        state.next_neg,
        np.int64(epoch),
        f32(alpha),
        f32(a),
        b32,
        f32(f32(f32(2.0) * f32(gamma)) * b32),
        ex["seed_hash"],
    )
    state.next_sample, ex["ns_spare"] = ex["ns_spare"], state.next_sample
    return y_out


def _reference(am, y, state, epoch, alpha, a, b, gamma):
    return layout_epoch(am, y, state, epoch, alpha, a, b, gamma)


def _cost(y, state, epoch, alpha, a, b, gamma) -> KernelCost:
    return epoch_cost(
        state.n, state.n_edges, int(y.shape[1]), state.mean_active, state.negative_sample_rate
    )


def _supports(y, state, *_):
    if state.negatives != "hash":
        return "negative samples from a random stream (the kernel hashes them)"
    if y.shape[1] > MAX_DIM:
        return f"{y.shape[1]} dimensions > {MAX_DIM}"
    return None


def _example(xp, scale: int = 0):
    """A kNN-like graph of ``n`` vertices, 15 neighbours each, 2-D (scale 0: 64; 1: 10^5;
    2: 10^6), epoch 0 (every edge of maximal weight active)."""
    import scipy.sparse as sp

    n = {0: 64, 1: 100_000, 2: 1_000_000}[scale]
    rng = np.random.default_rng(0)
    rows = np.repeat(np.arange(n), 15)
    cols = (rows + rng.integers(1, n, rows.size)) % n
    g = sp.csr_matrix((rng.uniform(0.1, 1.0, rows.size), (rows, cols)), shape=(n, n))
    g = (g + g.T).tocsr()
    am = array_module_for(xp)
    state = layout_state(am, g, n_epochs=200, seed=0, negatives="hash")
    y = xp.asarray(rng.uniform(0, 10, (n, 2)).astype(np.float32))
    return (y, state, 0, 1.0, 1.58, 0.9, 1.0), {}


SPEC = KernelSpec(
    name="umap_epoch",
    source="gpu_sc.kernels.cuda._umap_kernels",
    signatures={
        "umap_epoch": [
            "void(float32[:, ::1], float32[:, ::1], int64[::1], int64[::1], int64[::1], "
            "int64[::1], int64[::1], float64[::1], float64[::1], float64[::1], float64[::1], "
            "float64[::1], int64, float32, float32, float32, float32, uint64)"
        ]
    },
    reference=_reference,
    launch=_launch,
    cost=_cost,
    supports=_supports,
    example=_example,
    doc=__doc__,
)
