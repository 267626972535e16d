"""Fused kernel ``tsne_step``: one t-SNE iteration's gradient and update (numba-cuda), and its
declared cost.

The reference is :func:`gpu_sc.kernels.tsne.descent_step` (the attraction over the sparse
``P``, the repulsion exactly or by FFT interpolation, ``Z``, scikit-learn's gains and momentum
step: ~160 CuPy calls per iteration on the FFT path). The kernels (:mod:`._tsne_kernels`):

* exact repulsion (``n <= 2048`` under ``"auto"``): **2 launches** per iteration,
  ``tsne_exact_forces`` (attraction over ``P`` + all-pairs repulsion, the points read in
  shared-memory tiles, each tile once per block; a pair's ``w = 1 / (1 + d^2)`` feeds both
  ``Z`` and the force) and ``tsne_update`` (``Z``, gradient, gains, momentum, step, in place);
* FFT repulsion: ``tsne_grid_spread`` (the charges: one thread per box over its points in
  index order) and ``tsne_grid_forces`` (attraction + interpolation of the potentials) around
  the reference's FFT convolution (cuFFT through CuPy), then ``tsne_update``: 3 launches and
  ~30 CuPy calls (the grid's set-up, sort of the points by box, FFTs) and one host read (the
  grid's extent, which sizes the grid, as in the reference).

Per-row sums and ``Z`` are reduced in a fixed order (sequential per thread, a fixed tree per
block, the block partials summed in the same order by every block), with no floating-point
atomics: the same input gives the same embedding bit for bit on the same device. Against the
reference the exact path differs by the order of the repulsion and ``Z`` sums (the reference
sums tiles by BLAS and NumPy's pairwise sums), the FFT path by ``Z``'s order only; the
attraction's order is the reference's. The ``cudasim`` tests bound both.
"""

from __future__ import annotations

import math

import numpy as np

from ...dispatch.arrays import array_module_for
from ..segment import segment_ids
from ..tsne import _FLOAT32_TINY, TsneState, _attraction, descent_step
from ._registry import grid, launch_stream
from ._spec import KernelCost, KernelSpec

__all__ = ["SPEC", "exact_cost", "fft_cost"]

BLOCK = 128  # = _tsne_kernels.TPB (not imported: that module imports numba.cuda)
_I64, _F64, _F32 = 8, 8, 4
# The reference's FFT grid (gpu_sc.kernels.tsne._repulsion_fft defaults).
_N_INTERP, _MIN_BOXES, _MAX_BOXES, _BOXES_PER_UNIT = 3, 50, 200, 1.0


# Every flop is declared as float64 (priced at the card's FP64 rate): the kernels accumulate
# in float64 (attraction, repulsion, Z, the FFT grid) beside float32 work (the pair kernel
# values, the update), and one declaration has one dtype; an upper bound for the float32 part.
_DT = "float64"


def _update_cost(n: int) -> KernelCost:
    blocks = grid(n, BLOCK)
    return KernelCost(
        read=n * 2 * (_F64 + 3 * _F32) + blocks * blocks * _F64,
        written=n * 2 * 4 * _F32 + _F64,
        flops=20 * n * 2,
        flop_dtype=_DT,
        launches=1,
    )


def _error_cost(n: int, nnz: int) -> KernelCost:
    """The KL error on check iterations (the reference's array calls, ~15, and one read)."""
    return KernelCost(
        read=nnz * (6 * _F64 + 2 * _I64) + n * 2 * _F32,
        written=nnz * 5 * _F64,
        flops=10 * nnz,
        flop_dtype=_DT,
        launches=15,
        syncs=1,
    )


def exact_cost(n: int, nnz: int, compute_error: bool = False) -> KernelCost:
    """Declared cost of one exact-repulsion iteration (2 launches).

    ``tsne_exact_forces`` reads the ``(n, 2)`` float32 positions once per block of 128 rows
    (the tiles) and once per ``P`` entry, ``P`` (index + value) and its offsets, and writes
    ``attr`` (float64), ``rep`` (float32) and one partial per block; ``~12`` flop per pair
    (difference, square, reciprocal, force), ``~14`` per ``P`` entry. ``tsne_update`` reads
    ``attr``, ``rep``, positions, step and gains and, per block, all partials, and writes
    positions, step, gains and gradient (``~20`` flop per coordinate).
    """
    blocks = grid(n, BLOCK)
    forces = KernelCost(
        read=blocks * n * 2 * _F32 + nnz * (2 * _F32 + _I64 + _F64) + (n + 1) * _I64,
        written=n * 2 * (_F64 + _F32) + blocks * _F64,
        flops=12 * n * max(n - 1, 0) + 14 * nnz,
        flop_dtype=_DT,
        launches=1,
    )
    cost = forces + _update_cost(n)
    return cost + _error_cost(n, nnz) if compute_error else cost


def fft_cost(n: int, nnz: int, n_boxes: int = _MAX_BOXES, compute_error: bool = False):
    """Declared cost of one FFT-path iteration: 3 kernels and ~30 CuPy calls, 1 host read.

    ``n_boxes`` per side (data-dependent, the grid's extent: the chooser passes the previous
    step's; the default is the reference's maximum, an upper bound). Around the kernels: the grid set-up and the sort of the points
    by box (``~16 n`` words through a radix sort, ``~20`` calls), and the FFT convolution on
    the ``(2m)^2`` grid, ``m = 3 n_boxes`` (the charges' and three kernels' forward transforms,
    the product, three inverse ones: ``~16 (2m)^2`` float64 words, ``5 N log2 N`` flop each,
    ``~12`` calls).
    ``tsne_grid_spread`` reads each point's row and sort position once and writes the 9 nodes
    of every box (``~40`` flop per point); ``tsne_grid_forces`` the attraction (as in
    :func:`exact_cost`) plus 9 potential rows (3 float64) per point (``~60`` flop).
    """
    blocks = grid(n, BLOCK)
    boxes = n_boxes * n_boxes
    cells = (2 * _N_INTERP * n_boxes) ** 2
    around = KernelCost(
        read=n * 2 * (_F32 + _F64) + 16 * n * _I64 + 16 * cells * _F64,
        written=n * 2 * _F64 + 16 * n * _I64 + 16 * cells * _F64,
        flops=7 * 5 * cells * max(1.0, math.log2(cells)),
        flop_dtype=_DT,
        launches=32,
        syncs=1,
    )
    spread = KernelCost(
        read=n * (2 * _F32 + _I64) + (boxes + 1) * _I64,
        written=boxes * 9 * _F64,
        flops=40 * n,
        flop_dtype=_DT,
        launches=1,
    )
    forces = KernelCost(
        read=n * 2 * _F32 + nnz * (2 * _F32 + _I64 + _F64) + (n + 1) * _I64 + n * 27 * _F64,
        written=n * 2 * (_F64 + _F32) + blocks * _F64,
        flops=14 * nnz + 60 * n,
        flop_dtype=_DT,
        launches=1,
    )
    cost = around + spread + forces + _update_cost(n)
    return cost + _error_cost(n, nnz) if compute_error else cost


# -- launch ------------------------------------------------------------------------------------


def _buffers(xp, state, n):
    ex = state.extra
    if ex.get("n") != n:
        blocks = grid(n, BLOCK)
        ex.update(
            n=n,
            attr=xp.empty((n, 2), dtype=xp.float64),
            rep=xp.empty((n, 2), dtype=xp.float32),
            zpart=xp.empty(blocks, dtype=xp.float64),
            z_out=xp.empty(1, dtype=xp.float64),
            grad=xp.empty((n, 2), dtype=xp.float32),
        )
    if ex.get("P") is not state.P:  # P changes once (the exaggeration ends)
        P = state.P
        ex.update(
            P=P,
            p_ptr=xp.asarray(P.indptr, dtype=xp.int64),
            p_idx=xp.asarray(P.indices, dtype=xp.int64),
            p_val=xp.ascontiguousarray(xp.asarray(P.data, dtype=xp.float64)),
        )
    return ex


def _configure(kern, xp, blocks):
    stream = launch_stream(xp)
    return kern[blocks, BLOCK] if stream is None else kern[blocks, BLOCK, stream]


def _potentials(xp, kernels, y, n):
    """The reference's FFT grid (:func:`gpu_sc.kernels.tsne._repulsion_fft`) with the charges
    spread by ``tsne_grid_spread``: returns ``(pot, lo0, lo1, h, n_boxes)``."""
    yd = y.astype(xp.float64)
    lo = yd.min(axis=0)
    lims = xp.concatenate([lo, yd.max(axis=0)])
    lims = lims.get() if hasattr(lims, "get") else np.asarray(lims)  # one device-to-host read
    lo0, lo1 = float(lims[0]), float(lims[1])
    span = float(max(lims[2] - lims[0], lims[3] - lims[1])) * (1 + 1e-6) + 1e-12
    n_boxes = int(min(_MAX_BOXES, max(_MIN_BOXES, math.ceil(span * _BOXES_PER_UNIT))))
    h = span / n_boxes
    m = n_boxes * _N_INTERP
    spacing = h / _N_INTERP
    box = xp.minimum(xp.floor((yd - lo) / h).astype(xp.int64), n_boxes - 1)
    bid = box[:, 0] * n_boxes + box[:, 1]
    # Unique keys: the points of each box in index order, whatever the sort.
    order = xp.argsort(bid * n + xp.arange(n, dtype=xp.int64)).astype(xp.int64)
    counts = xp.bincount(bid, minlength=n_boxes * n_boxes)
    box_ptr = xp.concatenate([xp.zeros(1, xp.int64), xp.cumsum(counts).astype(xp.int64)])
    padded = xp.zeros((2 * m, 2 * m))
    _configure(kernels["tsne_grid_spread"], xp, grid(n_boxes * n_boxes, BLOCK))(
        y, order, box_ptr, lo0, lo1, h, n_boxes, padded
    )
    offs = xp.arange(2 * m)
    offs = xp.where(offs < m, offs, offs - 2 * m).astype(xp.float64) * spacing
    dx, dy = offs[:, None], offs[None, :]
    w = 1.0 / (1.0 + dx * dx + dy * dy)
    kern = xp.stack([w, w * w * dx, w * w * dy])
    conv = xp.fft.irfft2(xp.fft.rfft2(padded)[None] * xp.fft.rfft2(kern), s=(2 * m, 2 * m))
    pot = xp.ascontiguousarray(conv[:, :m, :m].reshape(3, m * m).T)
    return pot, lo0, lo1, h, n_boxes


def _launch(xp, kernels, y, update, gains, state, momentum, learning_rate, compute_error):
    n = y.shape[0]
    ex = _buffers(xp, state, n)
    blocks = grid(n, BLOCK)
    y_before = y.copy() if compute_error else None
    P_args = (ex["p_ptr"], ex["p_idx"], ex["p_val"])
    if state.repulsion == "exact":
        _configure(kernels["tsne_exact_forces"], xp, blocks)(
            y, *P_args, ex["attr"], ex["rep"], ex["zpart"]
        )
        z_offset = 0.0
    else:
        pot, lo0, lo1, h, n_boxes = _potentials(xp, kernels, y, n)
        ex["n_boxes"] = n_boxes
        _configure(kernels["tsne_grid_forces"], xp, blocks)(
            y, *P_args, pot, lo0, lo1, h, n_boxes, ex["attr"], ex["rep"], ex["zpart"]
        )
        z_offset = -float(n)  # the self terms w_ii = 1
    _configure(kernels["tsne_update"], xp, blocks)(
        ex["attr"],
        ex["rep"],
        ex["zpart"],
        z_offset,
        y,
        update,
        gains,
        ex["grad"],
        ex["z_out"],
        np.float32(momentum),
        np.float32(learning_rate),
    )
    error = None
    if compute_error:
        z_out = ex["z_out"]
        z = float(z_out.get()[0] if hasattr(z_out, "get") else z_out[0])
        error = _kl_error(xp, state, y_before, z)
    return y, update, gains, ex["grad"], error


def _kl_error(xp, state, y, z: float) -> float:
    """The reference's KL error at ``y`` (its array calls: check iterations only)."""

    am = array_module_for(xp)
    rows = state.rows if state.rows is not None else segment_ids(am, xp.diff(state.P.indptr))
    _, w = _attraction(am, state.P, y, rows)
    q = xp.maximum(w / z, _FLOAT32_TINY)
    p = state.P.data
    return float((p * xp.log(xp.maximum(p, _FLOAT32_TINY) / q)).sum())


def _reference(am, y, update, gains, state, momentum, learning_rate, compute_error):
    return descent_step(am, y, update, gains, state, momentum, learning_rate, compute_error)


def _cost(y, update, gains, state, momentum, learning_rate, compute_error) -> KernelCost:
    n, nnz = int(y.shape[0]), int(state.P.nnz)
    if state.repulsion == "exact":
        return exact_cost(n, nnz, bool(compute_error))
    # the grid of the previous step (it moves slowly; the reference's smallest at the first)
    n_boxes = int(state.extra.get("n_boxes", _MIN_BOXES))
    return fft_cost(n, nnz, n_boxes, compute_error=bool(compute_error))


def _supports(y, update, gains, state, *_):
    if y.ndim != 2 or y.shape[1] != 2:
        return f"embedding of shape {tuple(y.shape)} (the kernels are 2-D)"
    for name, arr in (("y", y), ("update", update), ("gains", gains)):
        if arr.dtype != np.float32 or not arr.flags.c_contiguous:
            return f"{name} is not C-contiguous float32"
    return None


def _example(xp, scale: int = 0):
    """A random sparse ``P`` (30 entries per row) and positions; scale 0: 64 points, exact;
    1: 2048, exact; 2: 10^5, FFT."""
    import scipy.sparse as sp

    n, rep = {0: (64, "exact"), 1: (2048, "exact"), 2: (100_000, "fft")}[scale]
    rng = np.random.default_rng(0)
    rows = np.repeat(np.arange(n), 30)
    cols = (rows + rng.integers(1, n, rows.size)) % n
    P = sp.csr_matrix((rng.uniform(0, 1, rows.size), (rows, cols)), shape=(n, n))
    P = ((P + P.T) / (2 * P.sum())).tocsr()
    P.sort_indices()
    csr = array_module_for(xp).sparse.csr_matrix
    P = csr(P)
    state = TsneState(P=P, rows=None, repulsion=rep)
    y = xp.asarray(rng.normal(size=(n, 2)).astype(np.float32))
    return (y, xp.zeros_like(y), xp.ones_like(y), state, 0.5, 200.0, False), {}


_F32_2D = "float32[:, ::1]"
_F64_2D = "float64[:, ::1]"
_CSR = "int64[::1], int64[::1], float64[::1]"

SPEC = KernelSpec(
    name="tsne_step",
    source="gpu_sc.kernels.cuda._tsne_kernels",
    signatures={
        "tsne_exact_forces": [f"void({_F32_2D}, {_CSR}, {_F64_2D}, {_F32_2D}, float64[::1])"],
        "tsne_grid_spread": [
            f"void({_F32_2D}, int64[::1], int64[::1], float64, float64, float64, int64, {_F64_2D})"
        ],
        "tsne_grid_forces": [
            f"void({_F32_2D}, {_CSR}, {_F64_2D}, float64, float64, float64, int64, {_F64_2D}, "
            f"{_F32_2D}, float64[::1])"
        ],
        "tsne_update": [
            f"void({_F64_2D}, {_F32_2D}, float64[::1], float64, {_F32_2D}, {_F32_2D}, "
            f"{_F32_2D}, {_F32_2D}, float64[::1], float32, float32)"
        ],
    },
    reference=_reference,
    launch=_launch,
    cost=_cost,
    supports=_supports,
    example=_example,
    doc=__doc__,
)
