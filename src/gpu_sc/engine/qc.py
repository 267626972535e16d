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
from ..kernels.reductions import axis_sum
from ._matrix import _actual, _Blocks, _get_x, _host, _major_nnz_dtype, _sum_dtype

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
    am = ctx.am
    x = _get_x(adata, layer, use_raw=use_raw)
    qc_vars = [qc_vars] if isinstance(qc_vars, str) else list(qc_vars)
    masks = [np.asarray(adata.var[q].values, dtype=bool) for q in qc_vars]
    ns = sorted(int(n) for n in percent_top) if percent_top else None
    if ns and not (max(ns) <= x.shape[1] and min(ns) > 0):
        raise IndexError("Positions outside range of features.")

    blocks = _Blocks(ctx, x)
    dev_masks = [am.asarray(m) for m in masks]
    nnz_rows, totals, tops, qcs = [], [], [], []
    nnz_cols = np.zeros(x.shape[1], dtype=np.int64)
    sum_cols = np.zeros(x.shape[1], dtype=np.float64)
    for _, _, b in blocks:
        o = qc_k.obs_metrics(am, b, dev_masks, ns)
        nnz_rows.append(_host(am, o["nnz"]))
        totals.append(_host(am, o["total"]))
        if ns:
            tops.append(_host(am, o["top"]))
        qcs.append([_host(am, t) for t in o["qc"]])
        c_nnz, c_sum = qc_k.var_accumulators(am, b)
        nnz_cols += _host(am, c_nnz)
        sum_cols += _host(am, c_sum)

    obs, var = qc_k.qc_tables(
        adata.obs_names,
        adata.var_names,
        nnz_rows=np.concatenate(nnz_rows),
        totals=np.concatenate(totals),
        tops=np.concatenate(tops, axis=0) if ns else None,
        qcs=[np.concatenate([parts[i] for parts in qcs]) for i in range(len(qc_vars))],
        nnz_cols=nnz_cols,
        sum_cols=sum_cols,
        x_dtype=x.dtype,
        obs_count_dtype=_major_nnz_dtype(x, 1),
        var_count_dtype=_major_nnz_dtype(x, 0),
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


def _one_threshold(names: tuple[str, ...], values: tuple) -> None:
    if sum(v is not None for v in values) != 1:
        a, b, c, d = names
        raise ValueError(
            f"Only provide one of the optional parameters `{a}`, `{b}`, `{c}`, `{d}` per call."
        )


def _filter_numbers(ctx: EngineContext, x: Any, axis: int, by_counts: bool) -> np.ndarray:
    """Per row (``axis=1``) or column (``axis=0``): total counts (in numpy's sum dtype of the
    data) or number of positive values (int64), as scanpy's filter functions compute them."""
    am = ctx.am
    blocks = _Blocks(ctx, x, csr=False)  # the reductions handle CSR and CSC alike
    parts = []
    for _, _, b in blocks:
        if by_counts:
            parts.append(_host(am, axis_sum(am, b, axis=axis)))
        else:
            parts.append(_host(am, axis_sum(am, b, axis=axis, transform=lambda d: d > 0)))
    number = np.concatenate(parts) if axis == 1 else np.sum(parts, axis=0)
    return number.astype(_sum_dtype(x.dtype) if by_counts else np.int64)


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
    adata._inplace_subset_obs(keep)
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
    adata._inplace_subset_var(keep)
    return None


# ---------------------------------------------------------------------------------------------
# normalize_total, log1p
