"""Preprocessing steps on an AnnData whose ``X`` is a Dask array of row blocks.

Each function has the signature of the in-memory engine's registered functions
(``func(adata, ctx, **scanpy_params)``, see :func:`gpu_sc.dispatch.registry.register`), runs
the same array-generic kernels of :mod:`gpu_sc.kernels` on every block, and writes scanpy's
keys as the in-memory engine does. ``ctx.am`` names the array module the blocks are computed
in (``numpy``: blocks stay where they are; ``cupy``: each block is moved to the worker's GPU
first).

What is lazy and what is computed: row-local steps (``normalize_total`` with a fixed
``target_sum``, ``log1p``, ``scale``'s transform, ``regress_out``'s residuals, every row or
column subset) only extend the graph; a step that needs statistics over all cells runs one
pass over the blocks, with per-block float64 accumulators added by a fixed-order tree
(:func:`gpu_sc.dask.graph.tree_sum`), and brings only those statistics (per-cell or per-gene
vectors, a genes x genes Gram matrix, the PCA coordinates) back to the client. The matrix
itself never comes back.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from dask import delayed

from ..dispatch.arrays import array_module, module_of
from ..dispatch.registry import EngineContext, EngineUnsupported
from ..engine.hvg import store_hvg
from ..engine.pca import explained_variance, resolve_n_comps, write_pca
from ..kernels import hvg as hvg_k
from ..kernels import normalize as norm_k
from ..kernels import pca as pca_k
from ..kernels import qc as qc_k
from ..kernels import regress as reg_k
from ..kernels import scale as scale_k
from ..kernels.reductions import as_csr, axis_sum
from .graph import (
    compute,
    is_dask,
    map_rows,
    row_blocks,
    row_offsets,
    subset_cols,
    subset_rows,
    to_array_module,
    to_host,
    tree_sum,
)

__all__ = [
    "calculate_qc_metrics",
    "filter_cells",
    "filter_genes",
    "highly_variable_genes",
    "log1p",
    "normalize_total",
    "pca",
    "regress_out",
    "scale",
    "subset_obs",
    "subset_var",
    "value_summary",
]


# ---------------------------------------------------------------------------------------------
# helpers


def _is_sparse_meta(x) -> bool:
    return sp.issparse(x._meta) or hasattr(x._meta, "indptr")


def _get_x(adata, layer: str | None, ctx: EngineContext):
    """The Dask matrix of ``adata`` (``X`` or a layer), its blocks in ``ctx.am``'s module."""
    if layer is not None:
        if layer not in adata.layers:
            raise EngineUnsupported(f"layer {layer!r} not found in adata")
        x = adata.layers[layer]
    else:
        x = adata.X
    if not is_dask(x):
        raise EngineUnsupported(
            f"matrix is a {type(x).__name__}, not a dask array; run the in-memory engine, "
            "or open the file with gpu_sc.datasets.read_lazy"
        )
    if _is_sparse_meta(x) and getattr(x._meta, "format", "csr") != "csr":
        raise EngineUnsupported("sparse blocks must be CSR; rechunk the matrix by rows")
    return to_array_module(x, ctx.am.name)


def _am(block):
    return module_of(block)


def _sum_dtype(dtype) -> np.dtype:
    return np.zeros(1, dtype=dtype).sum().dtype


def _index_dtype(nnz: int, n: int) -> np.dtype:
    """scipy's index dtype for a matrix of ``nnz`` nonzeros and largest dimension ``n``."""
    return np.dtype(np.int32 if max(nnz, n) <= np.iinfo(np.int32).max else np.int64)


def _actual(adata) -> None:
    if adata.is_view:
        adata._init_as_actual(adata.copy())


def _set_x(adata, x, layer: str | None) -> None:
    _actual(adata)
    if layer is not None:
        adata.layers[layer] = x
    else:
        adata.X = x


def _dask_matrices(adata) -> dict[str | None, Any]:
    out = {None: adata.X} if is_dask(adata.X) else {}
    out.update({k: v for k, v in adata.layers.items() if is_dask(v)})
    return out


def _subset(adata, keep: np.ndarray, axis: int) -> None:
    """``adata`` subset in place along ``axis`` (0: cells, 1: genes); Dask matrices are
    subset block by block (:func:`~gpu_sc.dask.graph.subset_rows` / ``subset_cols``), the
    rest by anndata."""
    _actual(adata)
    keep = np.asarray(keep, dtype=bool)
    mats = _dask_matrices(adata)
    for key in mats:
        if key is None:
            adata.X = None
        else:
            del adata.layers[key]
    if axis == 0:
        adata._inplace_subset_obs(keep)
    else:
        adata._inplace_subset_var(keep)
    for key, x in mats.items():
        x = subset_rows(x, keep) if axis == 0 else subset_cols(x, keep)
        if key is None:
            adata.X = x
        else:
            adata.layers[key] = x


def subset_obs(adata, mask, **_params) -> None:
    """Keep the cells where ``mask`` is True (lazy for the Dask matrices)."""
    _subset(adata, mask, 0)


def subset_var(adata, mask, **_params) -> None:
    """Keep the genes where ``mask`` is True (lazy for the Dask matrices)."""
    _subset(adata, mask, 1)


# ---------------------------------------------------------------------------------------------
# the input's values, checked in one pass


def _summary_block(b):
    return qc_k.value_summary(_am(b), b)


def _summary_combine(*parts):
    out = dict(parts[0])
    for p in parts[1:]:
        if not out["fractional"]:
            out["example"] = p["example"]  # from the first block with a non-integer value
        for k in ("nonfinite", "negative", "nonzero", "fractional"):
            out[k] += p[k]
        out["min"] = min(out["min"], p["min"])
    return out


def value_summary(x) -> dict:
    """One pass over the blocks of ``x``: how many stored values are NaN/Inf, negative,
    nonzero and non-integer, the smallest finite value and a non-integer example."""
    task = delayed(_summary_block, pure=True)
    (out,) = compute(tree_sum([task(b) for b in row_blocks(x)], combine=_summary_combine))
    return out


# ---------------------------------------------------------------------------------------------
# QC and filtering


def _qc_block(b, masks, ns):
    am = _am(b)
    b = as_csr(am, b)
    o = qc_k.obs_metrics(am, b, [am.asarray(m) for m in masks], ns)
    c_nnz, c_sum = qc_k.var_accumulators(am, b)
    rows = {"nnz": o["nnz"], "total": o["total"], "top": o["top"], "qc": list(o["qc"])}
    return rows, (c_nnz, c_sum)


def _first(t):
    return t[0]


def _second(t):
    return t[1]


def calculate_qc_metrics(
    adata,
    ctx: EngineContext,
    *,
    expr_type="counts",
    var_type="genes",
    qc_vars=(),
    percent_top=(50, 100, 200, 500),
    layer=None,
    use_raw=False,
    inplace=True,
    log1p=True,
    parallel=None,
):
    """scanpy's ``calculate_qc_metrics`` in one pass over the blocks."""
    if use_raw:
        raise EngineUnsupported("use_raw=True is not implemented")
    x = _get_x(adata, layer, ctx)
    qc_vars = [qc_vars] if isinstance(qc_vars, str) else list(qc_vars)
    masks = [np.asarray(adata.var[q].values, dtype=bool) for q in qc_vars]
    ns = sorted(int(n) for n in percent_top) if percent_top else None
    if ns and not (max(ns) <= x.shape[1] and min(ns) > 0):
        raise IndexError("Positions outside range of features.")

    task = delayed(_qc_block, pure=True)
    parts = [task(b, masks, ns) for b in row_blocks(x)]
    rows = [delayed(_first, pure=True)(p) for p in parts]
    cols = tree_sum([delayed(_second, pure=True)(p) for p in parts])
    *rows, (nnz_cols, sum_cols) = compute(*rows, cols)

    nnz_rows = np.concatenate([r["nnz"] for r in rows])
    obs, var = qc_k.qc_tables(
        adata.obs_names,
        adata.var_names,
        nnz_rows=nnz_rows,
        totals=np.concatenate([r["total"] for r in rows]),
        tops=np.concatenate([r["top"] for r in rows], axis=0) if ns else None,
        qcs=[np.concatenate([r["qc"][i] for r in rows]) for i in range(len(qc_vars))],
        nnz_cols=nnz_cols,
        sum_cols=sum_cols,
        x_dtype=x.dtype,
        obs_count_dtype=_index_dtype(int(nnz_rows.sum()), x.shape[1]),
        var_count_dtype=np.int64,
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


def _count_block(b, axis: int, by_counts: bool):
    am = _am(b)
    if by_counts:
        return axis_sum(am, b, axis=axis)
    return axis_sum(am, b, axis=axis, transform=lambda d: d > 0)


def _filter(ctx, adata, axis: int, thresholds: dict):
    names, values = tuple(thresholds), tuple(thresholds.values())
    if sum(v is not None for v in values) != 1:
        a, b, c, d = names
        raise ValueError(
            f"Only provide one of the optional parameters `{a}`, `{b}`, `{c}`, `{d}` per call."
        )
    min_counts, min_n, max_counts, max_n = values
    by_counts = min_n is None and max_n is None
    x = _get_x(adata, None, ctx)
    task = delayed(_count_block, pure=True)
    parts = [task(b, axis, by_counts) for b in row_blocks(x)]
    if axis == 1:
        number = np.concatenate(compute(*parts))
    else:
        (number,) = compute(tree_sum(parts))
    number = number.astype(_sum_dtype(x.dtype) if by_counts else np.int64)
    low = min_counts if min_n is None else min_n
    high = max_counts if max_n is None else max_n
    keep = number >= low if low is not None else number <= high
    return by_counts, number, keep


def filter_cells(
    adata,
    ctx: EngineContext,
    *,
    min_counts=None,
    min_genes=None,
    max_counts=None,
    max_genes=None,
    inplace=True,
    copy=False,
):
    """scanpy's ``filter_cells``: one pass for the per-cell numbers, then a lazy subset."""
    by_counts, number, keep = _filter(
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
    subset_obs(adata, keep)
    return None


def filter_genes(
    adata,
    ctx: EngineContext,
    *,
    min_counts=None,
    min_cells=None,
    max_counts=None,
    max_cells=None,
    inplace=True,
    copy=False,
):
    """scanpy's ``filter_genes``: one pass (tree sum of per-gene numbers), a lazy subset."""
    by_counts, number, keep = _filter(
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
    subset_var(adata, keep)
    return None


# ---------------------------------------------------------------------------------------------
# normalize_total, log1p


def _as_float32(b):
    if np.issubdtype(b.dtype, np.integer):
        return b.astype(np.float32)  # as scanpy
    return b


def _counts_block(b, keep_genes):
    am = _am(b)
    b = as_csr(am, _as_float32(b))
    keep = None if keep_genes is None else am.asarray(keep_genes)
    return norm_k.counts_per_cell(am, b, keep)


def _hi_block(b, max_fraction):
    am = _am(b)
    b = as_csr(am, _as_float32(b))
    return norm_k.highly_expressed(am, b, norm_k.counts_per_cell(am, b), max_fraction)


def _or(*parts):
    out = parts[0]
    for p in parts[1:]:
        out = out | p
    return out


def _normalize_block(b, target_sum, factor, keep_genes):
    """Row-local normalisation: ``factor`` (this block's rows) when precomputed, else from
    the block's own row totals and ``target_sum``."""
    am = _am(b)
    b = as_csr(am, _as_float32(b))
    if factor is None:
        keep = None if keep_genes is None else am.asarray(keep_genes)
        factor = norm_k.counts_per_cell(am, b, keep) / target_sum
    return norm_k.divide_rows(am, b, am.asarray(factor))


def _normalize_by(b, factor):
    return _normalize_block(b, None, factor, None)


def normalize_total(
    adata,
    ctx: EngineContext,
    *,
    target_sum=None,
    exclude_highly_expressed=False,
    max_fraction=0.05,
    key_added=None,
    layer=None,
    inplace=True,
    copy=False,
):
    """scanpy's ``normalize_total``. Lazy (no pass) for a fixed ``target_sum`` without
    ``key_added``; a pass for the median of ``target_sum=None``, for ``key_added`` and for
    the flags of ``exclude_highly_expressed``. Without a pass, cells with zero counts are not
    warned about (they stay zero, as in scanpy)."""
    if max_fraction < 0 or max_fraction > 1:
        raise ValueError("Choose max_fraction between 0 and 1.")
    x = _get_x(adata, layer, ctx)
    sparse_input = _is_sparse_meta(x)
    out_dtype = np.float32 if np.issubdtype(x.dtype, np.integer) else x.dtype
    blocks = row_blocks(x)
    keep_genes = None
    if exclude_highly_expressed:
        (hi,) = compute(
            tree_sum([delayed(_hi_block, pure=True)(b, max_fraction) for b in blocks], combine=_or)
        )
        keep_genes = ~np.asarray(hi, dtype=bool)
    factor = None
    if target_sum is None or key_added is not None or not inplace:
        task = delayed(_counts_block, pure=True)
        counts = np.concatenate(compute(*[task(b, keep_genes) for b in blocks]))
        if target_sum is None:
            target_sum = np.median(counts) if sparse_input else np.median(counts[counts > 0])
        factor = counts / target_sum
        if not np.all(factor > 0):
            warnings.warn("Some cells have zero counts", UserWarning, stacklevel=2)
    if factor is not None:
        import dask.array as da

        f = da.from_array(factor, chunks=(x.chunks[0],))
        out = da.blockwise(
            _normalize_by, "ij", x, "ij", f, "i", dtype=out_dtype, meta=_meta(x, out_dtype)
        )
    else:
        out = map_rows(
            _normalize_block, x, target_sum, None, keep_genes, sparse=sparse_input, dtype=out_dtype
        )
    if not inplace:
        return {"X": out, "norm_factor": factor}
    if key_added is not None:
        adata.obs[key_added] = factor
    _set_x(adata, out, layer)
    return None


def _meta(x, dtype):
    am = module_of(x._meta)
    if _is_sparse_meta(x):
        return am.sparse.csr_matrix((0, 0), dtype=dtype)
    return am.xp.empty((0, 0), dtype=dtype)


def _log1p_block(b, base):
    am = _am(b)
    if np.issubdtype(b.dtype, np.integer):
        b = b.astype(np.float64)  # as scanpy
    return norm_k.log1p(am, b, base)


def log1p(
    adata,
    ctx: EngineContext,
    *,
    base=None,
    copy=False,
    chunked=None,
    chunk_size=None,
    layer=None,
    obsm=None,
):
    """scanpy's ``log1p``: lazy, block by block."""
    if obsm is not None:
        raise EngineUnsupported("log1p of an obsm entry is not implemented")
    x = _get_x(adata, layer, ctx)
    dtype = np.float64 if np.issubdtype(x.dtype, np.integer) else x.dtype
    out = map_rows(_log1p_block, x, base, sparse=_is_sparse_meta(x), dtype=dtype)
    _set_x(adata, out, layer)
    adata.uns["log1p"] = {"base": base}
    return None


# ---------------------------------------------------------------------------------------------
# highly variable genes


def _stats_block(b, expm1_base, check, codes, n_groups):
    """Per group of rows (``codes``: this block's batch codes, or None for one group) and
    gene: float64 sum, sum of squares, int64 count of values > 0, and the rows per group, of the block
    (of ``expm1`` of it for ``seurat``); and whether it holds counts."""
    am = _am(b)
    b = as_csr(am, b)
    ok = _is_counts(am, b) if check else True
    if expm1_base is not False:
        b = hvg_k.expm1_values(am, b, expm1_base)
    c = None if codes is None else am.asarray(codes)
    s = hvg_k.group_sums(am, b, c, n_groups)
    return {
        "sum": s["sum"],
        "sumsq": s["sumsq"],
        "npos": s["npos"],
        "n": s["n"],
        "counts_ok": bool(ok),
    }


def _is_counts(am, x) -> bool:
    xp = am.xp
    data = x.data if am.issparse(x) else x
    if bool(xp.signbit(data).any()):
        return False
    if np.issubdtype(data.dtype, np.integer):
        return True
    return not bool(xp.any((data % 1) != 0))


def _clipped_block(b, clip_vals, codes):
    """Per group, per gene float64 sums and sums of squares of the clipped block."""
    am = _am(b)
    b = as_csr(am, b)
    sums, sqs = [], []
    for g, clip_val in enumerate(clip_vals):
        sub = b if codes is None else b[am.xp.flatnonzero(am.asarray(codes == g))]
        s, q = hvg_k.clipped_sums(am, sub, am.asarray(clip_val))
        sums.append(s)
        sqs.append(q)
    return am.xp.stack(sums), am.xp.stack(sqs)


def _batch_codes(adata, batch_key, *, unique_sorted: bool):
    """Per-cell batch code and labels, as the in-memory engine derives them."""
    if batch_key is None:
        return None, [None]
    if unique_sorted:  # seurat_v3: np.unique of the column's values
        labels, codes = np.unique(adata.obs[batch_key].to_numpy(), return_inverse=True)
        return codes.astype(np.int64), list(labels)
    obs = adata.obs.copy()
    adata.strings_to_categoricals(obs)
    values = obs[batch_key]
    cat = pd.Categorical(values)
    if (cat.codes < 0).any():
        raise EngineUnsupported(f"obs[{batch_key!r}] has missing values")
    return cat.codes.astype(np.int64), list(cat.categories)


def _group_stats(x, codes, n_groups, expm1_base, check) -> dict:
    off = row_offsets(x)
    task = delayed(_stats_block, pure=True)
    parts = [
        task(b, expm1_base, check, None if codes is None else codes[off[i] : off[i + 1]], n_groups)
        for i, b in enumerate(row_blocks(x))
    ]
    (stats,) = compute(tree_sum(parts))
    return stats


def highly_variable_genes(
    adata,
    ctx: EngineContext,
    *,
    layer=None,
    n_top_genes=None,
    min_disp=0.5,
    max_disp=np.inf,
    min_mean=0.0125,
    max_mean=3,
    span=0.3,
    n_bins=20,
    flavor="seurat",
    subset=False,
    inplace=True,
    batch_key=None,
    check_values=True,
):
    """scanpy's ``highly_variable_genes`` (``seurat``, ``cell_ranger``: one pass;
    ``seurat_v3``: two; with or without ``batch_key``), per-gene (per-batch) statistics as
    tree sums, the gene-level rules on the client as in the in-memory engine."""
    if flavor not in ("seurat", "cell_ranger", "seurat_v3", "seurat_v3_paper"):
        raise EngineUnsupported(f"flavor={flavor!r} is not implemented")
    if batch_key is not None and batch_key not in adata.obs:
        raise EngineUnsupported(f"batch_key {batch_key!r} is not a column of adata.obs")
    x = _get_x(adata, layer, ctx)
    if flavor in ("seurat_v3", "seurat_v3_paper"):
        return _hvg_seurat_v3(
            adata,
            x,
            flavor=flavor,
            n_top_genes=2000 if n_top_genes is None else n_top_genes,
            batch_key=batch_key,
            check_values=check_values,
            span=span,
            subset=subset,
            inplace=inplace,
        )
    cutoffs = None
    if n_top_genes is None:
        cutoffs = dict(min_disp=min_disp, max_disp=max_disp, min_mean=min_mean, max_mean=max_mean)
    codes, labels = _batch_codes(adata, batch_key, unique_sorted=False)
    base = adata.uns.get("log1p", {}).get("base") if flavor == "seurat" else False
    stats = _group_stats(x, codes, len(labels), base, False)
    var_names = adata.var_names

    df = hvg_k.seurat_table(
        stats,
        var_names,
        n_batches=None if batch_key is None else len(labels),
        flavor=flavor,
        n_bins=n_bins,
        cutoffs=cutoffs,
        n_top_genes=n_top_genes,
    )
    return store_hvg(
        adata,
        df,
        flavor=flavor,
        batch_key=batch_key,
        inplace=inplace,
        subset=subset,
        subset_var=subset_var,
    )


def _hvg_seurat_v3(
    adata, x, *, flavor, n_top_genes, batch_key, check_values, span, subset, inplace
):
    codes, labels = _batch_codes(adata, batch_key, unique_sorted=True)
    stats = _group_stats(x, codes, len(labels), False, check_values)
    if check_values and not stats["counts_ok"]:
        warnings.warn(
            f"`{flavor=!r}` expects raw count data, but non-integers were found.",
            UserWarning,
            stacklevel=3,
        )
    means, variances, fits = hvg_k.seurat_v3_fits(stats, span)
    off = row_offsets(x)
    clip_vals = delayed([f[3] for f in fits])  # one copy in the graph
    task = delayed(_clipped_block, pure=True)
    parts = [
        task(b, clip_vals, None if codes is None else codes[off[i] : off[i + 1]])
        for i, b in enumerate(row_blocks(x))
    ]
    ((csum, csq),) = compute(tree_sum(parts))
    df = hvg_k.seurat_v3_table(
        adata.var_names, means, variances, fits, csum, csq, flavor=flavor, n_top_genes=n_top_genes
    )
    return store_hvg(
        adata,
        df,
        flavor=flavor,
        batch_key=batch_key,
        inplace=inplace,
        subset=subset,
        subset_var=subset_var,
    )


# ---------------------------------------------------------------------------------------------
# regress_out, scale


def _normal_eq_block(b, r):
    am = _am(b)
    g, t = reg_k.normal_equations(am, b, am.asarray(r))
    return g, t


def _resid_block(b, r, coeff, out_dtype):
    am = _am(b)
    return reg_k.ols_residuals(am, b, am.asarray(r), am.asarray(coeff), am.xp.dtype(out_dtype))


def _cat_sums_block(b, codes, n_groups):
    am = _am(b)
    return reg_k.group_sums(am, b, am.asarray(codes), n_groups)


def _cat_combine(*parts):
    out = dict(parts[0])
    for p in parts[1:]:
        out["sum"] = out["sum"] + p["sum"]
        out["n"] = out["n"] + p["n"]
        out["min"] = np.minimum(out["min"], p["min"])
        out["max"] = np.maximum(out["max"], p["max"])
    return out


def _cat_sums_host(b, codes, n_groups):
    if b.shape[0] == 0:  # a block the filters emptied: nothing to add, no min / max
        return {
            "sum": np.zeros((n_groups, b.shape[1])),
            "n": np.zeros(n_groups, np.int64),
            "min": np.full(b.shape[1], np.inf),
            "max": np.full(b.shape[1], -np.inf),
        }
    return to_host(_cat_sums_block(b, codes, n_groups))


def _cat_resid_block(b, codes, means, a, slope, constant):
    am = _am(b)
    dev = [am.asarray(v) for v in (codes, means, a, slope, constant)]
    return reg_k.categorical_residuals(am, b, *dev)


def _regress_categorical(adata, x, column, layer):
    import dask.array as da

    codes = column.cat.codes.to_numpy().astype(np.int64)
    if (codes < 0).any():
        raise EngineUnsupported(f"obs[{column.name!r}] has missing values")
    n_groups = len(column.cat.categories)
    off = row_offsets(x)
    task = delayed(_cat_sums_host, pure=True)
    parts = [task(b, codes[off[i] : off[i + 1]], n_groups) for i, b in enumerate(row_blocks(x))]
    (acc,) = compute(tree_sum(parts, combine=_cat_combine))
    fit = reg_k.categorical_fit(acc["sum"], acc["n"], x.shape[0])
    constant = acc["min"] == acc["max"]
    c = da.from_array(codes, chunks=(x.chunks[0],))
    am = module_of(x._meta)
    out = da.blockwise(
        _cat_resid_block,
        "ij",
        x,
        "ij",
        c,
        "i",
        fit["means"],
        None,
        fit["a"],
        None,
        fit["b"],
        None,
        constant,
        None,
        dtype=np.float64,
        meta=am.xp.empty((0, 0), dtype=np.float64),
    )
    _set_x(adata, out, layer)
    adata.strings_to_categoricals()
    return None


def regress_out(adata, ctx: EngineContext, *, keys, layer=None, n_jobs=None, copy=False):
    """scanpy's ``regress_out``: continuous covariates by the normal equations (one pass),
    one categorical covariate by per-category sums (one pass); the dense residuals lazily."""
    import dask.array as da

    keys = [keys] if isinstance(keys, str) else list(keys)
    x = _get_x(adata, layer, ctx)
    obs = adata.obs.copy()
    adata.strings_to_categoricals(obs)
    first = obs[keys[0]] if keys and keys[0] in obs else None
    if first is not None and isinstance(first.dtype, pd.CategoricalDtype):
        if len(keys) > 1:
            raise ValueError(
                "If providing categorical variable, only a single one is allowed. For this one "
                "we regress on the mean for each category."
            )
        return _regress_categorical(adata, x, first, layer)
    for k in keys:
        if k in obs and not pd.api.types.is_numeric_dtype(obs[k]):
            raise EngineUnsupported(f"obs[{k!r}] is neither numeric nor categorical")
    regressors = obs[keys] if keys else obs
    regressors.insert(0, "ones", 1.0)
    r_host = regressors.to_numpy().astype(np.float64)
    off = row_offsets(x)
    blocks = row_blocks(x)
    task = delayed(_normal_eq_block, pure=True)
    parts = [task(b, r_host[off[i] : off[i + 1]]) for i, b in enumerate(blocks)]
    ((gram, rtx),) = compute(tree_sum(parts))
    if np.linalg.det(gram) == 0:
        raise EngineUnsupported("singular regressors (scanpy then fits a GLM per gene)")
    coeff = np.linalg.inv(gram) @ rtx
    if np.issubdtype(x.dtype, np.integer):
        out_dtype = np.float32 if x.dtype.itemsize <= 4 else np.float64
    else:
        out_dtype = x.dtype
    r = da.from_array(r_host, chunks=(x.chunks[0], r_host.shape[1]))
    am = module_of(x._meta)
    out = da.blockwise(
        _resid_block,
        "ij",
        x,
        "ij",
        r,
        "ik",
        coeff,
        None,
        np.dtype(out_dtype).str,
        None,
        concatenate=True,
        dtype=out_dtype,
        meta=am.xp.empty((0, 0), dtype=out_dtype),
    )
    _set_x(adata, out, layer)
    adata.strings_to_categoricals()
    return None


def _col_acc_block(b):
    am = _am(b)
    return scale_k.col_accumulators(am, b)


def _scale_block(b, mean, std, zero_center, max_value):
    am = _am(b)
    return scale_k.scale_block(
        am, b, am.asarray(mean), am.asarray(std), zero_center=zero_center, max_value=max_value
    )


def scale(
    adata,
    ctx: EngineContext,
    *,
    zero_center=True,
    max_value=None,
    copy=False,
    layer=None,
    obsm=None,
    mask_obs=None,
):
    """scanpy's ``scale``: per-gene sums in one pass, the scaling lazily."""
    if obsm is not None:
        raise EngineUnsupported("scaling an obsm entry is not implemented")
    if mask_obs is not None:
        raise EngineUnsupported("mask_obs is not implemented")
    x = _get_x(adata, layer, ctx)
    sparse = _is_sparse_meta(x)
    if sparse and zero_center:
        warnings.warn("zero-centering a sparse array/matrix densifies it.", UserWarning, 2)
    ((total, total_sq),) = compute(
        tree_sum([delayed(_col_acc_block, pure=True)(b) for b in row_blocks(x)])
    )
    np_am = array_module("numpy")
    mean, std = scale_k.mean_std(np_am, total, total_sq, x.shape[0])
    if sparse and not zero_center:
        dtype, out_sparse = x.dtype, True
    elif sparse:
        dtype, out_sparse = np.dtype(np.float64), False
    else:
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float64)
        out_sparse = False
    out = map_rows(
        _scale_block, x, mean, std, zero_center, max_value, sparse=out_sparse, dtype=dtype
    )
    _set_x(adata, out, layer)
    adata.var["mean"] = mean
    adata.var["std"] = std
    return None


# ---------------------------------------------------------------------------------------------
# PCA


def _gram_block(b, cols):
    am = _am(b)
    if cols is not None:
        b = b[:, am.asarray(cols)]
    return pca_k.gram_block(am, b)


def _project_block(b, cols, mean, evecs, dtype):
    """The block's PCA coordinates, in float64 and then cast to ``dtype`` here, on the
    worker, so that the client receives them at their final size (same values as casting
    after concatenation, as the in-memory engine does)."""
    am = _am(b)
    if cols is not None:
        b = b[:, am.asarray(cols)]
    out = pca_k.project_block(am, b, am.asarray(mean), am.asarray(evecs))
    return out.astype(dtype, copy=False)


def pca(
    adata,
    ctx: EngineContext,
    *,
    n_comps=None,
    layer=None,
    zero_center=True,
    svd_solver=None,
    chunked=False,
    chunk_size=None,
    random_state=0,
    return_info=False,
    mask_var=None,
    use_highly_variable=None,
    dtype="float32",
    key_added=None,
    copy=False,
):
    """PCA from the covariance accumulated over blocks (float64 Gram, a tree sum), its
    eigendecomposition on the client, and the projection block by block; ``X_pca`` is an
    in-memory NumPy array. Up to :data:`gpu_sc.kernels.pca.EIGH_MAX_FEATURES` features."""
    from scanpy.preprocessing._pca import _handle_mask_var

    center = bool(zero_center or chunked)  # scanpy's incremental PCA (chunked) always centres
    mask_param, mask = _handle_mask_var(adata, mask_var, use_highly_variable=use_highly_variable)
    x = _get_x(adata, layer, ctx)
    if not center and hasattr(getattr(x, "_meta", None), "indptr"):
        raise TypeError(  # scanpy's error
            "`zero_center=False` is not supported for sparse Dask arrays (yet). "
            "See <https://github.com/dask/dask-ml/issues/123>."
        )
    n_obs = x.shape[0]
    n_feat = int(mask.sum()) if mask is not None else x.shape[1]
    n_comps = resolve_n_comps(n_comps, n_obs, n_feat)
    if n_feat > pca_k.EIGH_MAX_FEATURES:
        raise EngineUnsupported(
            f"{n_feat} features: the dask PCA handles up to {pca_k.EIGH_MAX_FEATURES}; "
            "select highly variable genes first"
        )
    float_dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float64)
    cols = None if mask is None or mask.all() else np.flatnonzero(mask)
    blocks = row_blocks(x)
    ((total, gram),) = compute(tree_sum([delayed(_gram_block, pure=True)(b, cols) for b in blocks]))
    np_am = array_module("numpy")
    mean, evals, evecs, total_var = pca_k.exact_pca(
        np_am, total, gram, n_obs, n_comps, center=center
    )
    mean_d, evecs_d = delayed(mean), delayed(evecs)  # one copy in the graph, not one a block
    proj = delayed(_project_block, pure=True)
    out_dtype = np.dtype(dtype)
    x_pca = np.concatenate(
        compute(*[proj(b, cols, mean_d, evecs_d, out_dtype) for b in blocks]), axis=0
    )
    components = evecs.T.astype(float_dtype)
    variance, variance_ratio = explained_variance(
        evals, x_pca, total_var, n_obs, center=center, dtype=float_dtype
    )

    write_pca(
        adata,
        x_pca,
        components,
        variance,
        variance_ratio,
        mask=mask,
        mask_param=mask_param,
        zero_center=zero_center,
        layer=layer,
        key_added=key_added,
    )
    return None
