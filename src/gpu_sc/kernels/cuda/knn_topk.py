"""Fused kernel ``knn_tile_topk``: one GEMM tile's distances merged into each row's top k.

The exact kNN (:func:`gpu_sc.kernels.knn.knn`) computes each tile's ``A @ B.T`` with the
array library (cuBLAS on a GPU), then this kernel reads the tile once: distance, self
exclusion and the running top-k merge in one launch, instead of the reference's element-wise
passes, threshold mask, compaction, partition and sort. The reference is
:func:`gpu_sc.kernels.knn.tile_topk`; IVF-style callers pass any candidate columns
(``col_ids``) and ``self_col = -1``.
"""

from __future__ import annotations

import numpy as np

from ..knn import tile_topk
from ._registry import grid, launch_stream
from ._spec import KernelCost, KernelSpec

__all__ = ["SPEC"]

_METRICS = {"euclidean": 0, "cosine": 1}
_KMAX = 256  # = _knn_topk_src.KMAX (not imported: that module imports numba.cuda)
_BLOCK = 128  # = _knn_topk_src.BLOCK


def _launch(
    xp,
    kernels,
    g,
    sq_a,
    sq_b,
    col_ids,
    self_col,
    best_d,
    best_i,
    *,
    metric="euclidean",
    round32=False,
):
    kern = kernels["knn_tile_topk"]
    single = int(g.dtype == np.float32)
    stream = launch_stream(xp)
    config = (
        kern[grid(g.shape[0], 1), _BLOCK]
        if stream is None
        else kern[grid(g.shape[0], 1), _BLOCK, stream]
    )
    config(
        g,
        sq_a,
        sq_b,
        col_ids,
        self_col,
        best_d,
        best_i,
        _METRICS[metric],
        single,
        int(bool(round32)),
    )
    return best_d, best_i


def _supports(g, sq_a, sq_b, col_ids, self_col, best_d, best_i, **_):
    if best_d.shape[1] > _KMAX:
        return f"k = {best_d.shape[1]} > {_KMAX}"
    if g.dtype not in (np.float32, np.float64) or best_d.dtype != np.float64:
        return f"tile dtype {g.dtype}, top-k dtype {best_d.dtype}"
    return None


def _cost(g, sq_a, sq_b, col_ids, self_col, best_d, best_i, **_) -> KernelCost:
    r, c = g.shape
    k = best_d.shape[1]
    s = g.dtype.itemsize
    state = r * k * (8 + 8)  # the running top-k, read and written once
    return KernelCost(
        read=r * c * s + r * s + c * (s + 8) + r * 8 + state,
        written=state,
        flops=3 * r * c,  # -2x, +|a|^2, +|b|^2 (compares not counted)
        flop_dtype=str(g.dtype),
        launches=1,
    )


def _example(xp, scale: int = 0):
    """A tile of ``r x c`` with ``k`` = 15 (scale 0: 8 x 40; 1: 4096 x 16384; 2: 2x)."""
    r, c = {0: (8, 40), 1: (4096, 16384), 2: (8192, 32768)}[scale]
    rng = np.random.default_rng(0)
    a = rng.normal(size=(r, 50))
    b = rng.normal(size=(c, 50))
    g = xp.asarray(a @ b.T)
    sq_a = xp.asarray((a * a).sum(1))
    sq_b = xp.asarray((b * b).sum(1))
    col_ids = xp.asarray(np.arange(c, dtype=np.int64))
    self_col = xp.asarray(np.where(np.arange(r) < c, np.arange(r), -1).astype(np.int64))
    best_d = xp.full((r, 15), np.inf)
    best_i = xp.full((r, 15), np.iinfo(np.int64).max, dtype=np.int64)
    return (g, sq_a, sq_b, col_ids, self_col, best_d, best_i), {"metric": "euclidean"}


_REST = "int64[:], int64[:], float64[:, :], int64[:, :], int32, int32, int32"
# (tile, norms): float64 (exact), float32 with float32 or with float64 norms (fast precision)
_TYPES = [("float64", "float64"), ("float32", "float32"), ("float32", "float64")]

SPEC = KernelSpec(
    name="knn_tile_topk",
    source="gpu_sc.kernels.cuda._knn_topk_src",
    signatures={"knn_tile_topk": [f"void({t}[:, :], {n}[:], {n}[:], {_REST})" for t, n in _TYPES]},
    reference=tile_topk,
    launch=_launch,
    cost=_cost,
    supports=_supports,
    example=_example,
    doc=__doc__,
)
