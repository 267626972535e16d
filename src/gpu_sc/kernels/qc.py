"""Quality-control metrics per cell and per gene (scanpy's ``calculate_qc_metrics``),
plus the per-cell / per-gene numbers behind ``filter_cells`` and ``filter_genes``.

Each function works on one row block (or the whole matrix) and returns float64 / int64
accumulators; the engine casts them to scanpy's dtypes after the last block.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._scanpy_compat import qc_var_mean
from ..dispatch.arrays import ArrayModule
from .reductions import axis_nnz, axis_sum

__all__ = [
    "obs_metrics",
    "qc_tables",
    "top_cumulative_sums",
    "value_summary",
    "var_accumulators",
]


def top_cumulative_sums(am: ArrayModule, x: Any, ns: Sequence[int]) -> Any:
    """Per row, the sum of its ``n`` largest values for each ``n`` in sorted ``ns``
    (float64, shape ``(n_rows, len(ns))``); scanpy divides these by the row totals."""
    xp = am.xp
    ns = sorted(int(n) for n in ns)
    if am.issparse(x):
        x = x.tocsr() if x.format != "csr" else x
        nnz = x.data.size
        pos = xp.arange(nnz, dtype=xp.int64)
        row = xp.searchsorted(x.indptr.astype(xp.int64), pos, side="right") - 1
        # sort values descending within each row (row order is already ascending)
        order = xp.lexsort(xp.stack([-x.data.astype(xp.float64), row.astype(xp.float64)]))
        data = x.data[order].astype(xp.float64)
        rank = pos - x.indptr.astype(xp.int64)[row]
        cols = [xp.asarray(_row_sums_of(am, x, data * (rank < n))).reshape(-1, 1) for n in ns]
        return xp.concatenate(cols, axis=1)
    top = -xp.sort(-x.astype(xp.float64), axis=1)[:, : ns[-1]]
    csum = xp.cumsum(top, axis=1)
    return csum[:, [n - 1 for n in ns]]


def _row_sums_of(am: ArrayModule, x: Any, values: Any) -> Any:
    m = am.sparse.csr_matrix((values, x.indices, x.indptr), shape=x.shape)
    return axis_sum(am, m, axis=1)


def obs_metrics(
    am: ArrayModule, x: Any, qc_masks: Sequence[Any], percent_top: Sequence[int] | None
) -> dict[str, Any]:
    """Per-row QC accumulators of one block.

    Returns a dict with ``nnz`` (int64), ``total`` (float64), ``top`` (float64 cumulative
    sums of the largest values, or None) and ``qc`` (list of float64 totals over the genes
    of each boolean mask in ``qc_masks``).
    """
    out = {
        "nnz": axis_nnz(am, x, axis=1),
        "total": axis_sum(am, x, axis=1),
        "top": top_cumulative_sums(am, x, percent_top) if percent_top else None,
        "qc": [],
    }
    if qc_masks:
        xc = x.tocsc() if am.issparse(x) and x.format != "csc" else x
        for mask in qc_masks:
            idx = am.xp.flatnonzero(mask)
            out["qc"].append(axis_sum(am, xc[:, idx], axis=1))
    return out


def var_accumulators(am: ArrayModule, x: Any) -> tuple[Any, Any]:
    """Per-column ``(nnz int64, sum float64)`` of one row block; add them up across blocks."""
    return axis_nnz(am, x, axis=0), axis_sum(am, x, axis=0)


def qc_tables(
    obs_names,
    var_names,
    *,
    nnz_rows,
    totals,
    tops,
    qcs,
    nnz_cols,
    sum_cols,
    x_dtype,
    obs_count_dtype,
    var_count_dtype,
    expr_type,
    var_type,
    qc_vars,
    percent_top,
    log1p,
):
    """scanpy's ``calculate_qc_metrics`` tables ``(obs, var)`` from host accumulators.

    ``nnz_rows``/``totals`` (per cell), ``tops`` (per cell, one column per sorted
    ``percent_top``; None without), ``qcs`` (per ``qc_vars`` entry, per cell) and
    ``nnz_cols``/``sum_cols`` (per gene) are whole-matrix NumPy arrays, however they were
    accumulated (the engine's row blocks or the Dask path's). Shared by both paths.
    """
    import pandas as pd

    sdt = np.zeros(1, dtype=x_dtype).sum().dtype  # scanpy's sums keep numpy's sum dtype
    n_obs = len(obs_names)
    obs = pd.DataFrame(index=obs_names)
    col_n = f"n_{var_type}_by_{expr_type}"
    obs[col_n] = nnz_rows.astype(obs_count_dtype)
    if log1p:
        obs[f"log1p_{col_n}"] = np.log1p(obs[col_n])
    obs[f"total_{expr_type}"] = totals.astype(sdt)
    if log1p:
        obs[f"log1p_total_{expr_type}"] = np.log1p(obs[f"total_{expr_type}"])
    if percent_top:
        # scanpy divides float64 top sums by the row totals in the data dtype
        denom = totals.astype(x_dtype).astype(np.float64)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            props = tops / denom
        for i, n in enumerate(percent_top):
            obs[f"pct_{expr_type}_in_top_{n}_{var_type}"] = props[:, i] * 100
    for i, q in enumerate(qc_vars):
        col = f"total_{expr_type}_{q}"
        obs[col] = qcs[i].astype(sdt)
        if log1p:
            obs[f"log1p_{col}"] = np.log1p(obs[col])
        with np.errstate(divide="ignore", invalid="ignore"):
            obs[f"pct_{expr_type}_{q}"] = obs[col] / obs[f"total_{expr_type}"] * 100

    var = pd.DataFrame(index=var_names)
    var[f"n_cells_by_{expr_type}"] = nnz_cols.astype(var_count_dtype)
    var[f"mean_{expr_type}"] = qc_var_mean(sum_cols, sdt, n_obs)  # its dtype: scanpy's
    if log1p:
        var[f"log1p_mean_{expr_type}"] = np.log1p(var[f"mean_{expr_type}"])
    var[f"pct_dropout_by_{expr_type}"] = (1 - var[f"n_cells_by_{expr_type}"] / n_obs) * 100
    var[f"total_{expr_type}"] = sum_cols.astype(sdt)
    if log1p:
        var[f"log1p_total_{expr_type}"] = np.log1p(var[f"total_{expr_type}"])
    return obs, var


def value_summary(am: ArrayModule, x: Any) -> dict:
    """What :func:`gpu_sc.pipeline.validate_counts` checks, over the stored values of ``x``
    (a matrix or a block of one, sparse or dense): how many are NaN/Inf, negative, nonzero
    and non-integer, the smallest finite value and the first non-integer one."""
    xp = am.xp
    v = x.data if am.issparse(x) else x.ravel()
    zero = {
        "nonfinite": 0,
        "negative": 0,
        "nonzero": 0,
        "fractional": 0,
        "min": 0.0,
        "example": 0.0,
    }
    if v.dtype.kind not in "biufc":
        return zero
    finite = xp.isfinite(v) if v.dtype.kind in "fc" else xp.ones(v.shape, dtype=bool)
    fv = v[finite]
    frac = fv != xp.round(fv) if v.dtype.kind in "fc" else xp.zeros(fv.shape, dtype=bool)
    return {
        "nonfinite": int((~finite).sum()),
        "negative": int((fv < 0).sum()),
        "nonzero": int((fv != 0).sum()),
        "fractional": int(frac.sum()),
        "min": float(fv.min()) if fv.size else 0.0,
        "example": float(fv[frac][0]) if bool(frac.any()) else 0.0,
    }
