"""Scaling to unit variance (and zero mean), scanpy's ``scale``, array-generic.

Precision follows scanpy per input type: dense float32 is centred and divided in float64 and
rounded to float32 after each operation (numpy's in-place ufuncs); zero-centring sparse input
gives a dense float64 matrix; sparse without centring divides in float64 and stores float32.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..dispatch.arrays import ArrayModule
from .reductions import axis_sum, axis_sum_sq, with_data

__all__ = ["col_accumulators", "mean_std", "scale_block"]


def col_accumulators(am: ArrayModule, x: Any) -> tuple[Any, Any]:
    """Per-gene float64 ``(sum, sum of squares)`` of one row block."""
    return axis_sum(am, x, axis=0), axis_sum_sq(am, x, axis=0)


def mean_std(am: ArrayModule, total: Any, total_sq: Any, n: int) -> tuple[Any, Any]:
    """scanpy's mean and unbiased std (std 0 replaced by 1)."""
    xp = am.xp
    mean = total / n
    var = total_sq / n - mean**2
    if n != 1:
        var = var * (n / (n - 1))
    std = xp.sqrt(var)
    std = xp.where(std == 0, 1.0, std)
    return mean, std


def scale_block(
    am: ArrayModule, x: Any, mean: Any, std: Any, *, zero_center: bool, max_value: float | None
) -> Any:
    """Scaled (and clipped) version of a row block, in scanpy's output type and dtype."""
    xp = am.xp
    if am.issparse(x) and not zero_center:
        xr = x.tocsr() if x.format != "csr" else x
        out = xr.data.astype(xp.float64) / std[xr.indices]
        if max_value is not None:
            out = xp.minimum(out, max_value)
        return with_data(am, xr, out.astype(xr.dtype))
    if am.issparse(x):
        out = (x.toarray().astype(xp.float64) - mean[None, :]) / std[None, :]
        dtype = xp.float64
    else:
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else xp.float64
        out = x.astype(xp.float64)
        if zero_center:
            out = (out - mean[None, :]).astype(dtype).astype(xp.float64)
        out = (out / std[None, :]).astype(dtype)
    if max_value is not None:
        limit = xp.asarray(max_value, dtype=out.dtype)
        out = xp.minimum(out, limit)
        if zero_center:
            out = xp.maximum(out, -limit)
    return out
