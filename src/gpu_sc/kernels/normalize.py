"""Library-size normalisation (scanpy's ``normalize_total``) and ``log1p``, array-generic.

Both are row-local, so a row block is normalised exactly as it would be inside the whole
matrix; only the per-gene "highly expressed" flags of ``exclude_highly_expressed`` and the
median of ``target_sum=None`` need a first pass over all rows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..dispatch.arrays import ArrayModule
from .reductions import axis_sum, with_data

__all__ = ["counts_per_cell", "divide_rows", "highly_expressed", "log1p", "row_ids"]


def row_ids(am: ArrayModule, x: Any) -> Any:
    """Row index of each stored value of CSR ``x``."""
    xp = am.xp
    pos = xp.arange(x.data.size, dtype=xp.int64)
    return xp.searchsorted(x.indptr.astype(xp.int64), pos, side="right") - 1


def counts_per_cell(am: ArrayModule, x: Any, keep_genes: Any | None = None) -> Any:
    """Row totals in ``x``'s float dtype (scanpy accumulates in float64 and stores in the data
    dtype), over all genes or only those where ``keep_genes`` is True."""
    xp = am.xp
    if keep_genes is None:
        total = axis_sum(am, x, axis=1)
    elif am.issparse(x):
        kept = keep_genes[x.indices].astype(xp.float64)
        total = axis_sum(am, with_data(am, x, x.data.astype(xp.float64) * kept), axis=1)
    else:
        total = axis_sum(am, x[:, xp.flatnonzero(keep_genes)], axis=1)
    return total.astype(x.dtype)


def highly_expressed(am: ArrayModule, x: Any, counts: Any, max_fraction: float) -> Any:
    """Per gene: is it above ``max_fraction`` of its cell's total in at least one cell of ``x``?

    The comparison follows scanpy's per-format code: CSR compares the float32 value with the
    float64 product ``max_fraction * count``; dense compares in the data dtype.
    """
    xp = am.xp
    if am.issparse(x):
        thr = max_fraction * counts.astype(xp.float64)
        hit = x.data.astype(xp.float64) > thr[row_ids(am, x)]
        # integer scatter-add: exact and independent of execution order
        return xp.bincount(x.indices[hit], minlength=x.shape[1]) > 0
    thr = counts[:, None] * x.dtype.type(max_fraction)
    return xp.any(x > thr, axis=0)


def divide_rows(am: ArrayModule, x: Any, factor: Any) -> Any:
    """``x`` with each row divided by ``factor`` (zeros replaced by 1, as scanpy does)."""
    safe = factor + (factor == 0)
    if am.issparse(x):
        return with_data(am, x, x.data / safe[row_ids(am, x)])
    return x / safe[:, None]


def log1p(am: ArrayModule, x: Any, base: float | None) -> Any:
    """``log(1 + x)`` (natural, or to ``base``), computed like scanpy: in the float dtype of
    ``x`` (integers become float64), division by ``log(base)`` in float64."""
    xp = am.xp
    data = x.data if am.issparse(x) else x
    if not np.issubdtype(data.dtype, np.floating):
        data = data.astype(xp.float64)
    out = xp.log1p(data)
    if base is not None:
        out = (out / xp.float64(math.log(base))).astype(data.dtype)
    return with_data(am, x, out) if am.issparse(x) else out
