"""Engine steps: preprocessing (named by the catalogue).

Each function has scanpy's parameter names, computes with the array-generic kernels of
:mod:`gpu_sc.kernels` on ``ctx.am`` and writes into ``adata`` only after everything is computed.

Chunking: a step streams its matrix from host in row blocks of ``ctx.chunk_rows`` when
``ctx.chunked`` is set (the dispatcher's retry after an out-of-memory error) or when the host
matrix is too big for the device (:func:`gpu_sc.kernels.chunks.needs_chunking`). Otherwise the
matrix moves to the device once and is processed as a single block by the same code.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..dispatch.arrays import module_of
from ..dispatch.registry import EngineContext, EngineUnsupported
from ..kernels import hvg as hvg_k
from ..kernels import normalize as norm_k
from ..kernels import pca as pca_k
from ..kernels import qc as qc_k
from ..kernels import regress as reg_k
from ..kernels import scale as scale_k
from ..kernels.chunks import RowBlocks, is_device, needs_chunking, stack_rows
from ..kernels.reductions import as_csr, axis_sum

__all__: list[str] = []


# ---------------------------------------------------------------------------------------------
# helpers shared by the steps


def _plain(x: Any) -> Any:
    """Drop AnnData's view wrapper classes (no copy of the values), on host or device.

    The device views (``CupyArrayView``, ``CupySparseCS[RC]View``) subclass CuPy's classes as
    the host views subclass NumPy's and SciPy's, so one rewrap through their array module
    serves both (``np.asarray`` would raise on the device ones).
    """
    if not type(x).__module__.startswith("anndata"):
        return x
    am = module_of(x)
    if hasattr(x, "indptr"):
        cls = am.sparse.csr_matrix if x.format == "csr" else am.sparse.csc_matrix
        return cls((x.data, x.indices, x.indptr), shape=x.shape)
    return x.view(type=am.xp.ndarray)


def _get_x(adata, layer: str | None) -> Any:
    if layer is not None:
        if layer not in adata.layers:
            raise EngineUnsupported(f"layer {layer!r} not found in adata")
        x = adata.layers[layer]
    else:
        x = adata.X
    if x is None:
        raise EngineUnsupported("adata has no matrix to work on")
    if not (sp.issparse(x) or isinstance(x, np.ndarray) or is_device(x)):
        raise EngineUnsupported(f"matrix type {type(x).__name__} is not supported")
    if sp.issparse(x) and x.format not in ("csr", "csc"):
        raise EngineUnsupported(f"sparse format {x.format!r} is not supported (CSR/CSC are)")
    return _plain(x)


def _actual(adata) -> None:
    """Turn a view into an actual AnnData before writing (scanpy's ``view_to_actual``)."""
    if adata.is_view:
        adata._init_as_actual(adata.copy())


def _set_x(adata, x: Any, layer: str | None) -> None:
    _actual(adata)
    if layer is not None:
        adata.layers[layer] = x
    else:
        adata.X = x


class _Blocks:
    """The matrix as row blocks on the device: several blocks streamed from host in chunked
    mode, else one block (the whole matrix, moved to the device once and reused by every pass).
    """

    def __init__(self, ctx: EngineContext, x: Any, *, csr: bool = True, dense_result=False):
        self.am = ctx.am
        self.shape = x.shape
        self.chunked = bool(ctx.chunked or needs_chunking(ctx.am, x, max_nnz=ctx.max_device_nnz,
                                                       dense_result=dense_result))
        # cupyx sparse matrices hold floats only: integer counts travel as float64 (exact);
        # steps derive their output dtypes from the host matrix, not from the blocks.
        dtype = None
        if ctx.am.name == "cupy" and np.issubdtype(x.dtype, np.integer) and _is_sparse(x):
            dtype = np.float64
        if self.chunked:
            self._source: Iterable = RowBlocks(ctx.am, x, ctx.chunk_rows, dtype=dtype)
        else:
            xd = ctx.am.asarray(x, dtype=dtype)
            self._source = [(0, x.shape[0], as_csr(ctx.am, xd) if csr else xd)]

    def __iter__(self):
        return iter(self._source)

    def map(self, func) -> Any:
        """``func(start, stop, block)`` for every block, as one matrix: in chunked mode each
        block's result moves to host as soon as it is computed and the results are stacked
        there (the whole result never sits on the device); otherwise the single device result.
        """
        if not self.chunked:
            ((start, stop, b),) = self._source
            return func(start, stop, b)
        return stack_rows([self.am.to_host(func(*item)) for item in self])


def _is_sparse(x: Any) -> bool:
    return sp.issparse(x) or (is_device(x) and hasattr(x, "indptr"))


def _host(am, x) -> np.ndarray:
    return np.asarray(am.to_host(x))


def _sum_dtype(dtype) -> np.dtype:
    """dtype of numpy's ``sum`` of an array of ``dtype`` (int32 -> int64, float32 kept)."""
    return np.zeros(1, dtype=dtype).sum().dtype


def _major_nnz_dtype(x: Any, axis: int) -> np.dtype:
    """dtype of scipy's ``getnnz(axis)`` (indptr's dtype along the compressed axis, else int64)
    or numpy's ``count_nonzero`` (int64)."""
    if not hasattr(x, "indptr"):  # dense, host or device
        return np.dtype(np.int64)
    compressed = 1 if x.format == "csr" else 0
    return np.dtype(x.indptr.dtype) if axis == compressed else np.dtype(np.int64)


# ---------------------------------------------------------------------------------------------
# QC and filtering


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
    x = _get_x(adata, layer)
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

    sdt = _sum_dtype(x.dtype)
    n_obs = x.shape[0]
    obs = pd.DataFrame(index=adata.obs_names)
    col_n = f"n_{var_type}_by_{expr_type}"
    obs[col_n] = np.concatenate(nnz_rows).astype(_major_nnz_dtype(x, 1))
    if log1p:
        obs[f"log1p_{col_n}"] = np.log1p(obs[col_n])
    total = np.concatenate(totals).astype(sdt)
    obs[f"total_{expr_type}"] = total
    if log1p:
        obs[f"log1p_total_{expr_type}"] = np.log1p(obs[f"total_{expr_type}"])
    if ns:
        # scanpy divides float64 top sums by the row totals in the data dtype
        denom = np.concatenate(totals).astype(x.dtype).astype(np.float64)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            props = np.concatenate(tops, axis=0) / denom
        for i, n in enumerate(ns):
            obs[f"pct_{expr_type}_in_top_{n}_{var_type}"] = props[:, i] * 100
    for i, q in enumerate(qc_vars):
        col = f"total_{expr_type}_{q}"
        obs[col] = np.concatenate([parts[i] for parts in qcs]).astype(sdt)
        if log1p:
            obs[f"log1p_{col}"] = np.log1p(obs[col])
        with np.errstate(divide="ignore", invalid="ignore"):
            obs[f"pct_{expr_type}_{q}"] = obs[col] / obs[f"total_{expr_type}"] * 100

    var = pd.DataFrame(index=adata.var_names)
    var[f"n_cells_by_{expr_type}"] = nnz_cols.astype(_major_nnz_dtype(x, 0))
    var[f"mean_{expr_type}"] = sum_cols / n_obs
    if log1p:
        var[f"log1p_mean_{expr_type}"] = np.log1p(var[f"mean_{expr_type}"])
    var[f"pct_dropout_by_{expr_type}"] = (1 - var[f"n_cells_by_{expr_type}"] / n_obs) * 100
    var[f"total_{expr_type}"] = sum_cols.astype(sdt)
    if log1p:
        var[f"log1p_total_{expr_type}"] = np.log1p(var[f"total_{expr_type}"])

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
    by_counts, number, keep = _filter_mask(ctx, adata, 1, dict(
        min_counts=min_counts, min_genes=min_genes, max_counts=max_counts, max_genes=max_genes
    ))  # fmt: skip
    if not inplace:
        return keep, number
    _actual(adata)
    adata.obs["n_counts" if by_counts else "n_genes"] = number
    adata._inplace_subset_obs(keep)
    return None


def filter_genes(
    adata, ctx: EngineContext, *, min_counts, min_cells, max_counts, max_cells, inplace, copy
):
    by_counts, number, keep = _filter_mask(ctx, adata, 0, dict(
        min_counts=min_counts, min_cells=min_cells, max_counts=max_counts, max_cells=max_cells
    ))  # fmt: skip
    if not inplace:
        return keep, number
    _actual(adata)
    adata.var["n_counts" if by_counts else "n_cells"] = number
    adata._inplace_subset_var(keep)
    return None


# ---------------------------------------------------------------------------------------------
# normalize_total, log1p


def normalize_total(
    adata,
    ctx: EngineContext,
    *,
    target_sum,
    exclude_highly_expressed,
    max_fraction,
    key_added,
    layer,
    inplace,
    copy,
):
    if max_fraction < 0 or max_fraction > 1:
        raise ValueError("Choose max_fraction between 0 and 1.")
    am = ctx.am
    x = _get_x(adata, layer)
    sparse_input = _is_sparse(x)
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32)  # as scanpy
    blocks = _Blocks(ctx, x)
    counts_parts, hi = [], None
    for _, _, b in blocks:
        c = norm_k.counts_per_cell(am, b)
        counts_parts.append(_host(am, c))
        if exclude_highly_expressed:
            flags = _host(am, norm_k.highly_expressed(am, b, c, max_fraction))
            hi = flags if hi is None else (hi | flags)
    counts = np.concatenate(counts_parts)
    if exclude_highly_expressed:
        keep_dev = am.asarray(~hi)
        counts = np.concatenate(
            [_host(am, norm_k.counts_per_cell(am, b, keep_dev)) for _, _, b in blocks]
        )
    if target_sum is None:
        # scanpy: median over all cells for CSR input, over cells with counts for dense input
        target_sum = np.median(counts) if sparse_input else np.median(counts[counts > 0])
    factor = counts / target_sum
    if not np.all(factor > 0):
        warnings.warn("Some cells have zero counts", UserWarning, stacklevel=2)
    factor_dev = am.asarray(factor) if not blocks.chunked else None
    def divide(start, stop, b):
        f = factor_dev if factor_dev is not None else am.asarray(factor[start:stop])
        return norm_k.divide_rows(am, b, f)

    out = blocks.map(divide)
    if not inplace:
        return {"X": am.to_host(out), "norm_factor": factor}
    if key_added is not None:
        adata.obs[key_added] = factor
    _set_x(adata, out, layer)
    return None


def log1p(adata, ctx: EngineContext, *, base, copy, chunked, chunk_size, layer, obsm):
    if chunked and layer is not None:
        raise EngineUnsupported("scanpy rejects chunked=True with a layer")
    am = ctx.am
    x = _get_x(adata, layer)
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float64)  # as scanpy
    blocks = _Blocks(ctx, x, csr=False)
    out = blocks.map(lambda start, stop, b: norm_k.log1p(am, b, base))
    _set_x(adata, out, layer)
    adata.uns["log1p"] = {"base": base}
    return None


# ---------------------------------------------------------------------------------------------
# highly variable genes


def _sanitized_obs(adata) -> pd.DataFrame:
    """``adata.obs`` as scanpy's ``sanitize_anndata`` would leave it (string columns with
    repeated values become categoricals), without touching ``adata``."""
    obs = adata.obs.copy()
    adata.strings_to_categoricals(obs)
    return obs


def _batch_codes(adata, batch_key: str | None, *, unique_sorted: bool):
    """Per-cell batch code and the batch labels (one batch when ``batch_key`` is None)."""
    if batch_key is None:
        return None, [None]
    values = adata.obs[batch_key] if unique_sorted else _sanitized_obs(adata)[batch_key]
    if unique_sorted:  # seurat_v3: np.unique of the column's values
        labels, codes = np.unique(values.to_numpy(), return_inverse=True)
        return codes.astype(np.int64), list(labels)
    cat = values if isinstance(values.dtype, pd.CategoricalDtype) else pd.Categorical(values)
    cat = pd.Categorical(cat)
    if (cat.codes < 0).any():
        raise EngineUnsupported(f"obs[{batch_key!r}] has missing values")
    return cat.codes.astype(np.int64), list(cat.categories)


def _group_stats(ctx, blocks: _Blocks, codes, n_groups: int, transform=None, check=False):
    """Host float64 per-group gene sums / sums of squares / nonzero counts over all blocks."""
    am = ctx.am
    acc = None
    counts_ok = True
    for start, stop, b in blocks:
        if check:
            counts_ok &= _is_counts(am, b)
        if transform is not None:
            b = transform(b)
        c = None if codes is None else am.asarray(codes[start:stop])
        s = hvg_k.group_sums(am, b, c, n_groups)
        s = {k: (v if k == "n" else _host(am, v)) for k, v in s.items()}
        if acc is None:
            acc = s
        else:
            for k in acc:
                acc[k] = acc[k] + s[k]
    acc["counts_ok"] = counts_ok
    return acc


def _is_counts(am, x) -> bool:
    xp = am.xp
    data = x.data if am.issparse(x) else x
    if bool(xp.signbit(data).any()):
        return False
    if np.issubdtype(data.dtype, np.integer):
        return True
    return not bool(xp.any((data % 1) != 0))


def highly_variable_genes(
    adata,
    ctx: EngineContext,
    *,
    layer,
    n_top_genes,
    min_disp,
    max_disp,
    min_mean,
    max_mean,
    span,
    n_bins,
    flavor,
    subset,
    inplace,
    batch_key,
    check_values,
):
    x = _get_x(adata, layer)
    if flavor in ("seurat_v3", "seurat_v3_paper"):
        return _hvg_seurat_v3(
            adata,
            ctx,
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
    transform = None
    if flavor == "seurat":
        base = adata.uns.get("log1p", {}).get("base")
        transform = lambda b: hvg_k.expm1_values(ctx.am, b, base)  # noqa: E731
    stats = _group_stats(ctx, _Blocks(ctx, x), codes, len(labels), transform)
    var_names = adata.var_names

    def one_batch(g: int, filter_unexpressed: bool) -> pd.DataFrame:
        filt = stats["nnz"][g] > 0 if filter_unexpressed else np.ones(x.shape[1], bool)
        n = int(stats["n"][g])
        mean, var = hvg_k.mean_var(stats["sum"][g][filt], stats["sumsq"][g][filt], n)
        df = hvg_k.dispersion_table(mean, var, flavor=flavor, n_bins=n_bins)
        if cutoffs is not None:
            df["highly_variable"] = hvg_k.select_cutoffs(df, cutoffs)
        else:
            df["highly_variable"] = hvg_k.select_top(
                df["dispersions_norm"].to_numpy(), n_top_genes
            )
        df.index = var_names[filt]
        n_removed = int((~filt).sum())
        if n_removed:
            missing = pd.DataFrame(np.zeros((n_removed, len(df.columns))), columns=df.columns)
            missing["highly_variable"] = missing["highly_variable"].astype(bool)
            missing.index = var_names[~filt]
            df = pd.concat([df, missing]).loc[var_names]
        return df

    if batch_key is None:
        df = one_batch(0, filter_unexpressed=False)
    else:
        df = pd.concat([one_batch(g, True) for g in range(len(labels))], axis=0)
        df["highly_variable"] = df["highly_variable"].astype(int)
        df = df.groupby(df.index, observed=True).agg(
            dict(means="mean", dispersions="mean", dispersions_norm="mean", highly_variable="sum")
        )
        df["highly_variable_nbatches"] = df["highly_variable"]
        df["highly_variable_intersection"] = df["highly_variable_nbatches"] == len(labels)
        if cutoffs is None:
            df.sort_values(
                ["highly_variable_nbatches", "dispersions_norm"],
                ascending=False,
                na_position="last",
                inplace=True,
            )
            df["highly_variable"] = np.arange(df.shape[0]) < n_top_genes
            df = df.loc[var_names]
        else:
            df["dispersions_norm"] = df["dispersions_norm"].fillna(0)
            df["highly_variable"] = hvg_k.select_cutoffs(df, cutoffs)

    if not inplace:
        return df.loc[df["highly_variable"]] if subset else df
    _actual(adata)
    adata.uns["hvg"] = {"flavor": flavor}
    adata.var["highly_variable"] = df["highly_variable"]
    adata.var["means"] = df["means"]
    adata.var["dispersions"] = df["dispersions"]
    adata.var["dispersions_norm"] = df["dispersions_norm"].astype(np.float32, copy=False)
    if batch_key is not None:
        adata.var["highly_variable_nbatches"] = df["highly_variable_nbatches"]
        adata.var["highly_variable_intersection"] = df["highly_variable_intersection"]
        adata.strings_to_categoricals()  # scanpy sanitizes adata for batches
    if subset:
        adata._inplace_subset_var(adata.var["highly_variable"].to_numpy())
    return None


def _hvg_seurat_v3(
    adata, ctx, x, *, flavor, n_top_genes, batch_key, check_values, span, subset, inplace
):
    am = ctx.am
    codes, labels = _batch_codes(adata, batch_key, unique_sorted=True)
    blocks = _Blocks(ctx, x)
    stats = _group_stats(ctx, blocks, codes, len(labels), check=check_values)
    if check_values and not stats["counts_ok"]:
        warnings.warn(
            f"`{flavor=!r}` expects raw count data, but non-integers were found.",
            UserWarning,
            stacklevel=3,
        )
    n_total = int(stats["n"].sum())
    means, variances = hvg_k.mean_var(stats["sum"].sum(0), stats["sumsq"].sum(0), n_total)

    fits = []
    for g in range(len(labels)):
        n = int(stats["n"][g])
        mean, var = hvg_k.mean_var(stats["sum"][g], stats["sumsq"][g], n)
        reg_std, clip_val = hvg_k.seurat_v3_norm_var(mean, var, n, span)
        fits.append((n, mean, reg_std, clip_val))
    clip_dev = [am.asarray(f[3]) for f in fits]
    csum = np.zeros((len(labels), x.shape[1]))
    csq = np.zeros((len(labels), x.shape[1]))
    for start, stop, b in blocks:
        for g in range(len(labels)):
            sub = b if codes is None else b[am.xp.flatnonzero(am.asarray(codes[start:stop] == g))]
            if sub.shape[0] == 0:
                continue
            s, q = hvg_k.clipped_sums(am, sub, clip_dev[g])
            csum[g] += _host(am, s)
            csq[g] += _host(am, q)
    norm_gene_vars = []
    for g, (n, mean, reg_std, _) in enumerate(fits):
        v = (1 / ((n - 1) * np.square(reg_std))) * (
            (n * np.square(mean)) + csq[g] - 2 * csum[g] * mean
        )
        norm_gene_vars.append(v.reshape(1, -1))
    norm_gene_vars = np.concatenate(norm_gene_vars, axis=0)

    # ranking exactly as scanpy's _highly_variable_genes_seurat_v3
    ranked = np.argsort(np.argsort(-norm_gene_vars, axis=1), axis=1).astype(np.float32)
    num_batches_high_var = np.sum((ranked < n_top_genes).astype(int), axis=0)
    ranked[ranked >= n_top_genes] = np.nan
    median_ranked = np.ma.median(np.ma.masked_invalid(ranked), axis=0).filled(np.nan)
    df = pd.DataFrame(index=adata.var_names)
    df["means"], df["variances"] = means, variances
    df["gene_name"] = df.index
    df["highly_variable_nbatches"] = num_batches_high_var
    df["highly_variable_rank"] = median_ranked
    df["variances_norm"] = np.mean(norm_gene_vars, axis=0)
    if flavor == "seurat_v3":
        sort_cols, ascending = ["highly_variable_rank", "highly_variable_nbatches"], [True, False]
    else:
        sort_cols, ascending = ["highly_variable_nbatches", "highly_variable_rank"], [False, True]
    order = df[sort_cols].sort_values(sort_cols, ascending=ascending, na_position="last").index
    df["highly_variable"] = False
    df.loc[order[: int(n_top_genes)], "highly_variable"] = True
    if not inplace:
        if batch_key is None:
            df = df.drop(["highly_variable_nbatches"], axis=1)
        return df.iloc[df["highly_variable"].to_numpy(), :] if subset else df
    _actual(adata)
    adata.uns["hvg"] = {"flavor": flavor}
    adata.var["highly_variable"] = df["highly_variable"].to_numpy()
    adata.var["highly_variable_rank"] = df["highly_variable_rank"].to_numpy()
    adata.var["means"] = df["means"].to_numpy()
    adata.var["variances"] = df["variances"].to_numpy()
    adata.var["variances_norm"] = df["variances_norm"].to_numpy().astype("float64", copy=False)
    if batch_key is not None:
        adata.var["highly_variable_nbatches"] = df["highly_variable_nbatches"].to_numpy()
    if subset:
        adata._inplace_subset_var(df["highly_variable"].to_numpy())
    return None


# ---------------------------------------------------------------------------------------------
# regress_out, scale


def regress_out(adata, ctx: EngineContext, *, keys, layer, n_jobs, copy):
    am, xp = ctx.am, ctx.am.xp
    keys = [keys] if isinstance(keys, str) else list(keys)
    x = _get_x(adata, layer)
    blocks = _Blocks(ctx, x, dense_result=True)
    obs = _sanitized_obs(adata)
    first = obs[keys[0]] if keys and keys[0] in obs else None
    if first is not None and isinstance(first.dtype, pd.CategoricalDtype):
        if len(keys) > 1:
            raise ValueError(
                "If providing categorical variable, only a single one is allowed. For this one "
                "we regress on the mean for each category."
            )
        codes = first.cat.codes.to_numpy().astype(np.int64)
        if (codes < 0).any():
            raise EngineUnsupported(f"obs[{keys[0]!r}] has missing values")
        n_groups = len(first.cat.categories)
        acc = None
        for start, stop, b in blocks:
            s = reg_k.group_sums(am, b, am.asarray(codes[start:stop]), n_groups)
            s = {k: _host(am, v) for k, v in s.items()}
            if acc is None:
                acc = s
            else:
                acc["sum"] += s["sum"]
                acc["n"] += s["n"]
                acc["min"] = np.minimum(acc["min"], s["min"])
                acc["max"] = np.maximum(acc["max"], s["max"])
        fit = reg_k.categorical_fit(acc["sum"], acc["n"], x.shape[0])
        dev = {k: am.asarray(v) for k, v in fit.items()}
        constant = am.asarray(acc["min"] == acc["max"])
        out = blocks.map(
            lambda start, stop, b: reg_k.categorical_residuals(
                am, b, am.asarray(codes[start:stop]), dev["means"], dev["a"], dev["b"], constant
            )
        )
    else:
        for k in keys:
            if k in obs and not pd.api.types.is_numeric_dtype(obs[k]):
                raise EngineUnsupported(f"obs[{k!r}] is neither numeric nor categorical")
        regressors = obs[keys] if keys else obs
        regressors.insert(0, "ones", 1.0)
        r_host = regressors.to_numpy().astype(np.float64)
        gram, rtx = None, None
        for start, stop, b in blocks:
            g, t = reg_k.normal_equations(am, b, am.asarray(r_host[start:stop]))
            gram = _host(am, g) if gram is None else gram + _host(am, g)
            rtx = _host(am, t) if rtx is None else rtx + _host(am, t)
        if np.linalg.det(gram) == 0:
            raise EngineUnsupported("singular regressors (scanpy then fits a GLM per gene)")
        coeff = am.asarray(np.linalg.inv(gram) @ rtx)
        if np.issubdtype(x.dtype, np.integer):
            out_dtype = np.float32 if x.dtype.itemsize <= 4 else np.float64
        else:
            out_dtype = x.dtype
        out = blocks.map(
            lambda start, stop, b: reg_k.ols_residuals(
                am, b, am.asarray(r_host[start:stop]), coeff, xp.dtype(out_dtype)
            )
        )
    _set_x(adata, out, layer)
    adata.strings_to_categoricals()  # scanpy's sanitize_anndata
    return None


def scale(adata, ctx: EngineContext, *, zero_center, max_value, copy, layer, obsm, mask_obs):
    am = ctx.am
    x = _get_x(adata, layer)
    if _is_sparse(x) and zero_center:  # host or device sparse
        warnings.warn("zero-centering a sparse array/matrix densifies it.", UserWarning, 2)
    blocks = _Blocks(ctx, x, dense_result=bool(zero_center))
    total = np.zeros(x.shape[1])
    total_sq = np.zeros(x.shape[1])
    for _, _, b in blocks:
        s, q = scale_k.col_accumulators(am, b)
        total += _host(am, s)
        total_sq += _host(am, q)
    mean, std = scale_k.mean_std(am, am.asarray(total), am.asarray(total_sq), x.shape[0])
    out = blocks.map(
        lambda start, stop, b: scale_k.scale_block(
            am, b, mean, std, zero_center=zero_center, max_value=max_value
        )
    )
    _set_x(adata, out, layer)
    adata.var["mean"] = _host(am, mean)
    adata.var["std"] = _host(am, std)
    return None


# ---------------------------------------------------------------------------------------------
# PCA


def pca(
    adata,
    ctx: EngineContext,
    *,
    n_comps,
    layer,
    zero_center,
    svd_solver,
    chunked,
    chunk_size,
    random_state,
    return_info,
    mask_var,
    use_highly_variable,
    dtype,
    key_added,
    copy,
):
    from scanpy import settings as sc_settings
    from scanpy.preprocessing._pca import _handle_mask_var

    am, xp = ctx.am, ctx.am.xp
    mask_param, mask = _handle_mask_var(adata, mask_var, use_highly_variable=use_highly_variable)
    x = _get_x(adata, layer)
    n_obs = x.shape[0]
    n_feat = int(mask.sum()) if mask is not None else x.shape[1]
    if n_comps is None:
        min_dim = min(n_feat, n_obs)
        n_comps = min_dim - 1 if min_dim <= sc_settings.N_PCS else sc_settings.N_PCS
    if not 1 <= n_comps < min(n_obs, n_feat):
        raise EngineUnsupported(f"n_comps={n_comps} must be in [1, min(n_obs, n_vars))")
    float_dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float64)
    blocks = _Blocks(ctx, x)
    cols = am.asarray(np.flatnonzero(mask)) if mask is not None else None

    def sub(b):
        return b[:, cols] if cols is not None else b

    seed = random_state if isinstance(random_state, int | np.integer) else 0
    if n_feat <= pca_k.EIGH_MAX_FEATURES:
        total, gram = None, None
        for _, _, b in blocks:
            s, g = pca_k.gram_block(am, sub(b))
            total = s if total is None else total + s
            gram = g if gram is None else gram + g
        mean, cov = pca_k.covariance(am, total, gram, n_obs)
        total_var = float(xp.trace(cov))
        evals, evecs = pca_k.top_eigh(am, cov, n_comps)
    else:
        total = None
        total_sq = None
        for _, _, b in blocks:
            s, q = scale_k.col_accumulators(am, sub(b))
            total = s if total is None else total + s
            total_sq = q if total_sq is None else total_sq + q
        mean = total / n_obs
        total_var = float(((total_sq - n_obs * mean**2) / (n_obs - 1)).sum())

        def apply_cov(v):
            acc = None
            for _, _, b in blocks:
                bs = sub(b)
                xv = bs.astype(xp.float64) @ v
                part = pca_k.t_matmul(am, bs, xv)
                acc = part if acc is None else acc + part
            return (acc - n_obs * xp.outer(mean, mean @ v)) / (n_obs - 1)

        evals, evecs = pca_k.top_eigh_randomized(am, apply_cov, n_feat, n_comps, seed=int(seed))
    evecs = pca_k.flip_signs(am, evecs)
    x_pca = blocks.map(lambda start, stop, b: pca_k.project_block(am, sub(b), mean, evecs))
    x_pca = am.to_host(x_pca)
    if x_pca.dtype.descr != np.dtype(dtype).descr:
        x_pca = x_pca.astype(dtype)
    components = _host(am, evecs).T.astype(float_dtype)
    variance = _host(am, evals).astype(float_dtype)
    variance_ratio = (_host(am, evals) / total_var).astype(float_dtype)

    key_obsm, key_varm, key_uns = ("X_pca", "PCs", "pca") if key_added is None else [key_added] * 3
    if mask is not None:
        loadings = np.zeros(shape=(adata.n_vars, n_comps))
        loadings[mask] = components.T
    else:
        loadings = components.T
    params = dict(
        zero_center=zero_center,
        use_highly_variable=mask_param == "highly_variable",
        mask_var=mask_param,
    )
    if layer is not None:
        params["layer"] = layer
    _actual(adata)
    adata.obsm[key_obsm] = x_pca
    adata.varm[key_varm] = loadings
    adata.uns[key_uns] = dict(params=params, variance=variance, variance_ratio=variance_ratio)
    return None
