"""Engine steps: quality control — ``calculate_qc_metrics``, ``filter_cells``, ``filter_genes``.

Each function has scanpy's parameter names, computes with the array-generic kernels of
:mod:`gpu_sc.kernels` on ``ctx.am`` and writes into ``adata`` only after everything is computed;
matrix access and row-block streaming are shared in :mod:`gpu_sc.engine._matrix`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..dispatch.registry import EngineContext
from ..kernels import qc as qc_k
from ..kernels.reductions import as_csr, axis_sum
from ._matrix import _actual, _get_x, _major_nnz_dtype, _subset, _sum_dtype, executor

__all__ = ["calculate_qc_metrics", "filter_cells", "filter_genes"]


def calculate_qc_metrics(
    adata,
    ctx: EngineContext,
    *,
    expr_type,
    var_type,
    qc_vars,
    percent_top,
    layer,
    use_raw,
    inplace,
    log1p,
    parallel,
):
    x = _get_x(adata, layer, use_raw=use_raw)
    qc_vars = [qc_vars] if isinstance(qc_vars, str) else list(qc_vars)
    masks = [np.asarray(adata.var[q].values, dtype=bool) for q in qc_vars]
    ns = sorted(int(n) for n in percent_top) if percent_top else None
    if ns and not (max(ns) <= x.shape[1] and min(ns) > 0):
        raise IndexError("Positions outside range of features.")

    ex = executor(ctx, x)
    rows, (nnz_cols, sum_cols) = ex.map_rows_reduce(_qc_block, masks, ns)
    if ex.lazy:  # scipy's index dtypes of the matrix the blocks would stack into
        obs_count_dtype = _index_dtype(int(rows["nnz"].sum()), x.shape[1])
        var_count_dtype = np.dtype(np.int64)
    else:
        obs_count_dtype, var_count_dtype = _major_nnz_dtype(x, 1), _major_nnz_dtype(x, 0)
    obs, var = qc_k.qc_tables(
        adata.obs_names,
        adata.var_names,
        nnz_rows=rows["nnz"],
        totals=rows["total"],
        tops=rows["top"] if ns else None,
        qcs=list(rows["qc"]),
        nnz_cols=nnz_cols,
        sum_cols=sum_cols,
        x_dtype=ex.dtype,
        obs_count_dtype=obs_count_dtype,
        var_count_dtype=var_count_dtype,
        expr_type=expr_type,
        var_type=var_type,
        qc_vars=qc_vars,
        percent_top=ns,
        log1p=log1p,
    )
    if not inplace:
        return obs, var
    _actual(adata)
    adata.obs[obs.columns] = obs
    adata.var[var.columns] = var
    return None


def _qc_block(am, b, masks, ns):
    """Per-cell metrics of a block, and its per-gene accumulators."""
    b = as_csr(am, b)
    o = qc_k.obs_metrics(am, b, [am.asarray(m) for m in masks], ns)
    rows = {"nnz": o["nnz"], "total": o["total"], "top": o["top"], "qc": list(o["qc"])}
    return rows, qc_k.var_accumulators(am, b)


def _index_dtype(nnz: int, n: int) -> np.dtype:
    """scipy's index dtype for a matrix of ``nnz`` nonzeros and largest dimension ``n``."""
    return np.dtype(np.int32 if max(nnz, n) <= np.iinfo(np.int32).max else np.int64)


def _one_threshold(names: tuple[str, ...], values: tuple) -> None:
    if sum(v is not None for v in values) != 1:
        a, b, c, d = names
        raise ValueError(
            f"Only provide one of the optional parameters `{a}`, `{b}`, `{c}`, `{d}` per call."
        )


def _count_block(am, b, axis: int, by_counts: bool):
    if by_counts:
        return axis_sum(am, b, axis=axis)
    return axis_sum(am, b, axis=axis, transform=lambda d: d > 0)


def _filter_numbers(ctx: EngineContext, x: Any, axis: int, by_counts: bool) -> np.ndarray:
    """Per row (``axis=1``) or column (``axis=0``): total counts (in numpy's sum dtype of the
    data) or number of positive values (int64), as scanpy's filter functions compute them."""
    ex = executor(ctx, x, csr=False)  # the reductions handle CSR and CSC alike
    if axis == 1:
        number = ex.map_rows(_count_block, axis, by_counts)
    else:
        number = ex.map_reduce(_count_block, axis, by_counts)
    return number.astype(_sum_dtype(ex.dtype) if by_counts else np.int64)


def _filter_mask(ctx: EngineContext, adata, axis: int, thresholds: dict):
    """scanpy's filter rule, shared by filter_cells (``axis=1``) and filter_genes (``axis=0``):
    ``thresholds`` are ``min_counts, min_<n>, max_counts, max_<n>`` by scanpy's names.
    Returns ``(by_counts, number per row/column, keep mask)``."""
    _one_threshold(tuple(thresholds), tuple(thresholds.values()))
    min_counts, min_n, max_counts, max_n = thresholds.values()
    by_counts = min_n is None and max_n is None
    number = _filter_numbers(ctx, _get_x(adata, None), axis=axis, by_counts=by_counts)
    low = min_counts if min_n is None else min_n
    high = max_counts if max_n is None else max_n
    keep = number >= low if low is not None else number <= high
    return by_counts, number, keep


def filter_cells(
    adata, ctx: EngineContext, *, min_counts, min_genes, max_counts, max_genes, inplace, copy
):
    by_counts, number, keep = _filter_mask(
        ctx,
        adata,
        1,
        dict(
            min_counts=min_counts, min_genes=min_genes, max_counts=max_counts, max_genes=max_genes
        ),
    )
    if not inplace:
        return keep, number
    _actual(adata)
    adata.obs["n_counts" if by_counts else "n_genes"] = number
    _subset(adata, keep, 0)
    return None


def filter_genes(
    adata, ctx: EngineContext, *, min_counts, min_cells, max_counts, max_cells, inplace, copy
):
    by_counts, number, keep = _filter_mask(
        ctx,
        adata,
        0,
        dict(
            min_counts=min_counts, min_cells=min_cells, max_counts=max_counts, max_cells=max_cells
        ),
    )
    if not inplace:
        return keep, number
    _actual(adata)
    adata.var["n_counts" if by_counts else "n_cells"] = number
    _subset(adata, keep, 1)
    return None


# ---------------------------------------------------------------------------------------------
# normalize_total, log1p
