"""The t-SNE gradient and update as fused kernels (numba-cuda), and their declared costs.

:func:`tsne` computes what :func:`gpu_sc.kernels.tsne.tsne` computes (the same affinities,
initialisation, schedule, error checks and stopping rules; the affinities and the
initialisation *are* the reference's) with each iteration's gradient and update fused:

* exact repulsion (``n <= 2048`` under ``"auto"``): **2 launches** per iteration,
  ``exact_forces`` (attraction over ``P`` + all-pairs repulsion in shared-memory tiles, ``Z``
  per block) and ``update`` (``Z``, gradient, gains, momentum, step);
* FFT repulsion: ``grid_spread`` (charges, one thread per box over its points in index order)
  and ``grid_forces`` (attraction + interpolation) around the reference's FFT convolution
  (CuPy's cuFFT calls), then ``update``.

Per-row sums and ``Z`` are reduced in a fixed order (sequential per thread, a fixed tree per
block, the partials summed in the same order by every block): the same input gives the same
embedding bit for bit on the same device. Against the reference it differs by the order of
the repulsion and ``Z`` sums (the reference sums whole tiles by BLAS and NumPy's pairwise
sums) and float contraction; the tests bound that on the simulator.
"""

from __future__ import annotations

import math

import numpy as np

from ...dispatch.arrays import ArrayModule
from .. import tsne as _ref
from ..segment import segment_ids

__all__ = ["exact_iteration_cost", "fft_iteration_cost", "tsne"]

_I64, _F64, _F32 = 8, 8, 4


def _k():
    from . import _tsne_kernels

    return _tsne_kernels


def exact_iteration_cost(n: int, nnz: int) -> dict[str, dict[str, float]]:
    """Declared cost per launch of one exact-repulsion iteration, by kernel.

    ``exact_forces``: reads the ``(n, 2)`` float32 positions once per block of 128 rows
    (the tiles) and once per ``P`` entry, ``P`` itself (index + value) and its offsets;
    writes ``attr`` (float64), ``rep`` (float32) and a partial per block. ``~12`` flop per
    pair (difference, square, reciprocal, force), ``~14`` per ``P`` entry.
    ``update``: reads ``attr``, ``rep``, the positions, step and gains and all the partials
    per block; writes positions, step, gains and gradient; ``~20`` flop per point.
    """
    blocks = max(1, -(-n // 128))
    forces = {
        "bytes_read": float(
            blocks * n * 2 * _F32 + nnz * (2 * _F32 + _I64 + _F64) + (n + 1) * _I64
        ),
        "bytes_written": float(n * 2 * (_F64 + _F32) + blocks * _F64),
        "flop": float(12 * n * max(n - 1, 0) + 14 * nnz),
    }
    return {"exact_forces": forces, "update": _update_cost(n, blocks)}


def _update_cost(n: int, blocks: int) -> dict[str, float]:
    return {
        "bytes_read": float(n * 2 * (_F64 + 4 * _F32) + blocks * blocks * _F64),
        "bytes_written": float(n * 2 * 4 * _F32 + _F64),
        "flop": float(20 * n * 2),
    }


def fft_iteration_cost(n: int, nnz: int, n_boxes: int) -> dict[str, dict[str, float]]:
    """Declared cost per launch of the FFT path's kernels (the FFTs are CuPy calls).

    ``grid_spread``: reads each point's row and sort position once, writes the ``9`` nodes
    of every box; ``~40`` flop per point (weights). ``grid_forces``: the attraction as in
    :func:`exact_iteration_cost` plus, per point, ``9`` potential rows (3 float64) and
    ``~60`` flop; ``update`` as there.
    """
    blocks = max(1, -(-n // 128))
    boxes = n_boxes * n_boxes
    spread = {
        "bytes_read": float(n * (2 * _F32 + _I64) + (boxes + 1) * _I64),
        "bytes_written": float(boxes * 9 * _F64),
        "flop": float(40 * n),
    }
    forces = {
        "bytes_read": float(
            n * 2 * _F32 + nnz * (2 * _F32 + _I64 + _F64) + (n + 1) * _I64 + n * 9 * 3 * _F64
        ),
        "bytes_written": float(n * 2 * (_F64 + _F32) + blocks * _F64),
        "flop": float(14 * nnz + 60 * n),
    }
    return {"grid_spread": spread, "grid_forces": forces, "update": _update_cost(n, blocks)}


class _Gradient:
    """Device buffers and launches of one t-SNE run (positions updated in place)."""

    def __init__(self, am: ArrayModule, P, n: int, repulsion: str):
        xp = am.xp
        self.am, self.n, self.repulsion = am, n, repulsion
        k = _k()
        self.tpb = k.TPB
        self.blocks = max(1, -(-n // k.TPB))
        self.attr = xp.empty((n, 2), dtype=xp.float64)
        self.rep = xp.empty((n, 2), dtype=xp.float32)
        self.zpart = xp.empty(self.blocks, dtype=xp.float64)
        self.z_out = xp.empty(1, dtype=xp.float64)
        self.grad = xp.empty((n, 2), dtype=xp.float32)
        self.launches = 0
        self.P = None
        self.set_P(P)

    def set_P(self, P):
        xp = self.am.xp
        self.P = P
        self.p_ptr = xp.asarray(P.indptr, dtype=xp.int64)
        self.p_idx = xp.asarray(P.indices, dtype=xp.int64)
        self.p_val = xp.ascontiguousarray(xp.asarray(P.data, dtype=xp.float64))

    def forces(self, y):
        """Attraction, repulsion and the ``Z`` partials at ``y``; returns ``Z``'s offset."""
        k = _k()
        grid = (self.blocks, self.tpb)
        if self.repulsion == "exact":
            k.exact_forces_kernel[grid](
                y, self.p_ptr, self.p_idx, self.p_val, self.attr, self.rep, self.zpart
            )
            self.launches += 1
            return 0.0
        pot, lo0, lo1, h, n_boxes = self._potentials(y)
        k.grid_forces_kernel[grid](
            y, self.p_ptr, self.p_idx, self.p_val, pot, lo0, lo1, h, n_boxes,
            self.attr, self.rep, self.zpart,
        )  # fmt: skip
        self.launches += 1
        return -float(self.n)

    def _potentials(self, y, n_interp=3, min_boxes=50, max_boxes=200, boxes_per_unit=1.0):
        """The reference's grid (:func:`gpu_sc.kernels.tsne._repulsion_fft`): charges by
        ``grid_spread``, the convolution by FFT (array calls), potentials ``(m * m, 3)``."""
        am, xp, k = self.am, self.am.xp, _k()
        n = self.n
        yd = y.astype(xp.float64)
        lo = yd.min(axis=0)
        lims = am.to_host(xp.concatenate([lo, yd.max(axis=0)]))  # one device-to-host read
        lo0, lo1 = float(lims[0]), float(lims[1])
        span = float(max(lims[2] - lims[0], lims[3] - lims[1])) * (1 + 1e-6) + 1e-12
        n_boxes = int(min(max_boxes, max(min_boxes, math.ceil(span * boxes_per_unit))))
        h = span / n_boxes
        m = n_boxes * n_interp
        spacing = h / n_interp
        box = xp.minimum(xp.floor((yd - lo) / h).astype(xp.int64), n_boxes - 1)
        bid = box[:, 0] * n_boxes + box[:, 1]
        # Unique keys: the points of each box in index order, whatever the sort.
        order = xp.argsort(bid * n + xp.arange(n, dtype=xp.int64)).astype(xp.int64)
        counts = xp.bincount(bid, minlength=n_boxes * n_boxes)
        box_ptr = xp.concatenate([xp.zeros(1, xp.int64), xp.cumsum(counts).astype(xp.int64)])
        padded = xp.zeros((2 * m, 2 * m))
        cells = n_boxes * n_boxes
        k.grid_spread_kernel[(max(1, -(-cells // self.tpb)), self.tpb)](
            y, order, box_ptr, lo0, lo1, h, n_boxes, padded
        )
        self.launches += 1
        offs = xp.arange(2 * m)
        offs = xp.where(offs < m, offs, offs - 2 * m).astype(xp.float64) * spacing
        dx, dy = offs[:, None], offs[None, :]
        w = 1.0 / (1.0 + dx * dx + dy * dy)
        kernels = xp.stack([w, w * w * dx, w * w * dy])
        conv = xp.fft.irfft2(xp.fft.rfft2(padded)[None] * xp.fft.rfft2(kernels), s=(2 * m, 2 * m))
        pot = xp.ascontiguousarray(conv[:, :m, :m].reshape(3, m * m).T)
        return pot, lo0, lo1, h, n_boxes

    def update(self, y, upd, gains, z_offset, momentum, learning_rate):
        k = _k()
        k.update_kernel[(self.blocks, self.tpb)](
            self.attr, self.rep, self.zpart, float(z_offset), y, upd, gains, self.grad,
            self.z_out, np.float32(momentum), np.float32(learning_rate),
        )  # fmt: skip
        self.launches += 1

    def z(self) -> float:
        """``Z`` of the last update (a device-to-host read: on check iterations only)."""
        return float(self.am.to_host(self.z_out)[0])


def _error(am: ArrayModule, P, y, z: float) -> float:
    """The reference's KL error at ``y`` (array calls, on check iterations only)."""
    xp = am.xp
    rows = segment_ids(am, xp.diff(P.indptr))
    _, w = _ref._attraction(am, P, y, rows)
    q = xp.maximum(w / z, _ref._FLOAT32_TINY)
    p = P.data
    return float((p * xp.log(xp.maximum(p, _ref._FLOAT32_TINY) / q)).sum())


def tsne(
    am: ArrayModule,
    X,
    *,
    perplexity: float = 30.0,
    early_exaggeration: float = 12.0,
    learning_rate: float | str = "auto",
    max_iter: int = 1000,
    n_iter_without_progress: int = 300,
    min_grad_norm: float = 1e-7,
    metric: str = "euclidean",
    repulsion: str = "auto",
    P=None,
    stats: dict | None = None,
):
    """:func:`gpu_sc.kernels.tsne.tsne` with the fused gradient; same parameters and returns.

    ``stats``, if given, receives ``launches`` (kernel launches) and ``iterations``.
    """
    xp = am.xp
    X = xp.asarray(X)
    n = X.shape[0]
    if P is None:
        P = _ref.joint_probabilities(am, X, perplexity, metric)
    if repulsion == "auto":
        repulsion = "exact" if n <= _ref._EXACT_MAX_N else "fft"
    if repulsion not in ("exact", "fft"):
        raise ValueError(f"repulsion must be 'auto', 'exact' or 'fft', not {repulsion!r}")
    if learning_rate == "auto":
        learning_rate = max(n / early_exaggeration / 4.0, 50.0)
    y = xp.ascontiguousarray(_ref.pca_init(am, X))
    if y.shape[1] != 2:
        raise ValueError("the fused t-SNE gradient is 2-D")
    P_ex = P * float(early_exaggeration)
    grad = _Gradient(am, P_ex, n, repulsion)
    y, _, it = _descent(
        am, grad, y, 0, _ref._EXPLORATION_ITER, momentum=0.5, learning_rate=learning_rate,
        n_iter_without_progress=_ref._EXPLORATION_ITER, min_grad_norm=min_grad_norm,
    )  # fmt: skip
    kl = None
    if it < _ref._EXPLORATION_ITER or max_iter - _ref._EXPLORATION_ITER > 0:
        grad.set_P(P)
        y, kl, it = _descent(
            am, grad, y, it + 1, max_iter, momentum=0.8, learning_rate=learning_rate,
            n_iter_without_progress=n_iter_without_progress, min_grad_norm=min_grad_norm,
        )  # fmt: skip
    if stats is not None:
        stats["launches"] = grad.launches
        stats["iterations"] = it + 1
    return y, kl, it, P


def _descent(
    am, grad, y, it, max_iter, *, momentum, learning_rate, n_iter_without_progress, min_grad_norm
):
    """The reference's ``_gradient_descent`` with the gradient and step fused in kernels."""
    xp = am.xp
    y = y.copy()
    upd = xp.zeros_like(y)
    gains = xp.ones_like(y)
    best_error = error = float("inf")
    best_iter = i = it
    for i in range(it, max_iter):
        check = (i + 1) % _ref._N_ITER_CHECK == 0
        want_error = check or i == max_iter - 1
        y_before = y.copy() if want_error else None
        z_offset = grad.forces(y)
        grad.update(y, upd, gains, z_offset, momentum, learning_rate)
        if want_error:
            error = _error(am, grad.P, y_before, grad.z())
        if check:
            grad_norm = float(xp.sqrt((grad.grad.astype(xp.float64) ** 2).sum()))
            if error < best_error:
                best_error, best_iter = error, i
            elif i - best_iter > n_iter_without_progress:
                break
            if grad_norm <= min_grad_norm:
                break
    return y, error, i
