"""Highly variable genes: per-gene statistics over cells (array-generic, on the device) and
the gene-level selection rules of scanpy's flavors (host, on ``n_genes`` numbers).

Device part: sums, sums of squares and counts of positive values per gene and per batch, and the
clipped sums of ``seurat_v3``. They are accumulators, so row blocks add up. Host part:
scanpy's binning (``pd.cut`` on means, percentile bins for ``cell_ranger``), dispersion
normalisation, loess fit of ``seurat_v3`` (scikit-misc, on one point per gene) and ranking.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd

from ..dispatch.arrays import ArrayModule
from .reductions import axis_sum, axis_sum_sq, with_data

__all__ = [
    "clipped_sums",
    "dispersion_table",
    "expm1_values",
    "group_sums",
    "mean_var",
    "select_cutoffs",
    "select_top",
    "seurat_table",
    "seurat_v3_fits",
    "seurat_v3_norm_var",
    "seurat_v3_table",
]


def expm1_values(am: ArrayModule, x: Any, base: float | None) -> Any:
    """``expm1(x)`` (after scaling by ``log(base)`` when the data were logged to ``base``),
    in the dtype of ``x``, as scanpy's seurat flavor undoes the logarithm."""
    xp = am.xp
    data = x.data if am.issparse(x) else x
    if base is not None:
        data = (data * xp.float64(math.log(base))).astype(data.dtype)
    out = xp.expm1(data)
    return with_data(am, x, out) if am.issparse(x) else out


def group_sums(am: ArrayModule, x: Any, codes: Any | None, n_groups: int) -> dict[str, Any]:
    """Per group of rows (``codes``: group of each row, or None for one group) and gene:
    ``sum``, ``sumsq`` (float64, shape ``(n_groups, n_genes)``), ``npos`` (int64: values
    > 0, scanpy's "expressed" in ``filter_genes(min_cells=1)``, not nonzeros: a negative
    value is not expressed) and the number of rows ``n`` per group."""
    xp = am.xp
    sums, sqs, npos, ns = [], [], [], []
    for g in range(n_groups):
        if codes is None:
            sub = x
        else:
            sub = x[xp.flatnonzero(codes == g)]
        ns.append(sub.shape[0])
        sums.append(axis_sum(am, sub, axis=0))
        sqs.append(axis_sum_sq(am, sub, axis=0))
        npos.append(axis_sum(am, sub, axis=0, transform=lambda d: d > 0).astype(xp.int64))
    return {
        "sum": xp.stack(sums),
        "sumsq": xp.stack(sqs),
        "npos": xp.stack(npos),
        "n": np.asarray(ns, dtype=np.int64),
    }


def mean_var(total: np.ndarray, total_sq: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased variance from float64 sums, as scanpy's ``_get_mean_var``."""
    mean = total / n
    var = total_sq / n - mean**2
    if n != 1:
        var *= n / (n - 1)
    return mean, var


def clipped_sums(am: ArrayModule, x: Any, clip_val: Any) -> tuple[Any, Any]:
    """Per gene, float64 sum and sum of squares of ``min(x, clip_val[gene])`` (zeros stay 0
    since ``clip_val >= 0``), scanpy's ``_sum_and_sum_squares_clipped``."""
    xp = am.xp
    if am.issparse(x):
        xr = x.tocsr() if x.format != "csr" else x
        d = xp.minimum(xr.data.astype(xp.float64), clip_val[xr.indices])
        m = with_data(am, xr, d)
        return axis_sum(am, m, axis=0), axis_sum(am, m, axis=0, transform=lambda v: v * v)
    d = xp.minimum(x.astype(xp.float64), clip_val[None, :])
    return xp.sum(d, axis=0), xp.sum(d * d, axis=0)


# ---------------------------------------------------------------------------------------------
# gene-level rules (host; n_genes values)


def _mad(a: np.ndarray) -> float:
    """statsmodels' ``robust.mad`` (normalised median absolute deviation around the median)."""
    from statsmodels.robust import mad

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        return mad(a)


def dispersion_table(
    mean: np.ndarray, var: np.ndarray, *, flavor: str, n_bins: int
) -> pd.DataFrame:
    """scanpy's ``means``, ``dispersions`` and ``dispersions_norm`` from per-gene mean/var
    (of expm1 data for ``seurat``), with seurat's log scale and per-bin normalisation."""
    mean = mean.copy()
    mean[mean == 0] = 1e-12
    dispersion = var / mean
    if flavor == "seurat":
        dispersion[dispersion == 0] = np.nan
        dispersion = np.log(dispersion)
        mean = np.log1p(mean)
    df = pd.DataFrame({"means": mean, "dispersions": dispersion})
    if flavor == "seurat":
        bins = n_bins
    else:
        bins = np.r_[-np.inf, np.percentile(df["means"], np.arange(10, 105, 5)), np.inf]
    df["mean_bin"] = pd.cut(df["means"], bins=bins)
    grouped = df.groupby("mean_bin", observed=True)["dispersions"]
    if flavor == "seurat":
        stats = grouped.agg(avg="mean", dev="std")
        single = stats["dev"].isnull()
        stats.loc[single, "dev"] = stats.loc[single, "avg"]
        stats.loc[single, "avg"] = 0
    else:
        stats = grouped.agg(avg="median", dev=_mad)
    stats = stats.loc[df["mean_bin"]].set_index(df.index)
    df["dispersions_norm"] = (df["dispersions"] - stats["avg"]) / stats["dev"]
    return df


def select_cutoffs(df: pd.DataFrame, cutoffs: dict[str, float]) -> np.ndarray:
    """scanpy's ``_Cutoffs.in_bounds`` on means and NaN-zeroed normalised dispersions."""
    disp = np.nan_to_num(df["dispersions_norm"].to_numpy())
    mean = df["means"].to_numpy()
    return (
        (mean > cutoffs["min_mean"])
        & (mean < cutoffs["max_mean"])
        & (disp > cutoffs["min_disp"])
        & (disp < cutoffs["max_disp"])
    )


def select_top(dispersion_norm: np.ndarray, n_top_genes: int) -> np.ndarray:
    """scanpy's ``_subset_genes`` for ``n_top_genes``: all genes at or above the n-th highest
    normalised dispersion."""
    n_top_genes = min(n_top_genes, dispersion_norm.size)
    x = dispersion_norm[~np.isnan(dispersion_norm)]
    if n_top_genes > x.size:
        warnings.warn(
            "`n_top_genes` > number of normalized dispersions, returning all genes with "
            "normalized dispersions.",
            UserWarning,
            stacklevel=2,
        )
        n_top_genes = x.size
    x = np.sort(x)[::-1]
    return np.nan_to_num(dispersion_norm, nan=-np.inf) >= x[n_top_genes - 1]


def seurat_v3_norm_var(
    mean: np.ndarray, var: np.ndarray, n_obs: int, span: float
) -> tuple[np.ndarray, np.ndarray]:
    """Loess fit of log10 variance on log10 mean (scikit-misc, as scanpy): returns the
    regularised standard deviation ``reg_std`` and the clip value per gene."""
    from skmisc.loess import loess

    not_const = var > 0
    estimat_var = np.zeros(mean.size, dtype=np.float64)
    model = loess(np.log10(mean[not_const]), np.log10(var[not_const]), span=span, degree=2)
    model.fit()
    estimat_var[not_const] = model.outputs.fitted_values
    reg_std = np.sqrt(10**estimat_var)
    clip_val = reg_std * np.sqrt(n_obs) + mean
    return reg_std, clip_val


def seurat_table(stats, var_names, *, n_batches, flavor, n_bins, cutoffs, n_top_genes):
    """scanpy's seurat/cell_ranger HVG table from per-batch gene statistics ``stats``.

    Host-side, on per-gene vectors; shared by the in-memory engine and the Dask path.
    ``n_batches`` None: one batch, without the per-batch filter of unexpressed genes.
    """

    def one_batch(g: int, filter_unexpressed: bool) -> pd.DataFrame:
        filt = stats["npos"][g] > 0 if filter_unexpressed else np.ones(len(var_names), bool)
        n = int(stats["n"][g])
        mean, var = mean_var(stats["sum"][g][filt], stats["sumsq"][g][filt], n)
        df = dispersion_table(mean, var, flavor=flavor, n_bins=n_bins)
        if cutoffs is not None:
            df["highly_variable"] = select_cutoffs(df, cutoffs)
        else:
            df["highly_variable"] = select_top(df["dispersions_norm"].to_numpy(), n_top_genes)
        df.index = var_names[filt]
        n_removed = int((~filt).sum())
        if n_removed:
            missing = pd.DataFrame(np.zeros((n_removed, len(df.columns))), columns=df.columns)
            missing["highly_variable"] = missing["highly_variable"].astype(bool)
            missing.index = var_names[~filt]
            df = pd.concat([df, missing]).loc[var_names]
        return df

    if n_batches is None:
        df = one_batch(0, filter_unexpressed=False)
    else:
        df = pd.concat([one_batch(g, True) for g in range(n_batches)], axis=0)
        df["highly_variable"] = df["highly_variable"].astype(int)
        df = df.groupby(df.index, observed=True).agg(
            dict(means="mean", dispersions="mean", dispersions_norm="mean", highly_variable="sum")
        )
        df["highly_variable_nbatches"] = df["highly_variable"]
        df["highly_variable_intersection"] = df["highly_variable_nbatches"] == n_batches
        if cutoffs is None:
            df = df.sort_values(  # not inplace=: deprecated in pandas 3.1
                ["highly_variable_nbatches", "dispersions_norm"],
                ascending=False,
                na_position="last",
            )
            df["highly_variable"] = np.arange(df.shape[0]) < n_top_genes
            df = df.loc[var_names]
        else:
            df["dispersions_norm"] = df["dispersions_norm"].fillna(0)
            df["highly_variable"] = select_cutoffs(df, cutoffs)
    return df


def seurat_v3_fits(stats, span: float):
    """``seurat_v3``'s first pass, from per-batch gene statistics ``stats``: the overall
    ``(means, variances)`` and, per batch, ``(n, mean, reg_std, clip_val)``. Host-side;
    shared by the in-memory engine and the Dask path."""
    n_total = int(stats["n"].sum())
    means, variances = mean_var(stats["sum"].sum(0), stats["sumsq"].sum(0), n_total)
    fits = []
    for g in range(len(stats["n"])):
        n = int(stats["n"][g])
        mean, var = mean_var(stats["sum"][g], stats["sumsq"][g], n)
        reg_std, clip_val = seurat_v3_norm_var(mean, var, n, span)
        fits.append((n, mean, reg_std, clip_val))
    return means, variances, fits


def seurat_v3_table(var_names, means, variances, fits, csum, csq, *, flavor, n_top_genes):
    """scanpy's ``seurat_v3``/``seurat_v3_paper`` table from the fits and the per-batch
    clipped sums ``csum``/``csq`` (``(n_batches, n_genes)``): normalised variances, ranking
    exactly as scanpy's ``_highly_variable_genes_seurat_v3``, and the selection."""
    norm_gene_vars = []
    for g, (n, mean, reg_std, _) in enumerate(fits):
        v = (1 / ((n - 1) * np.square(reg_std))) * (
            (n * np.square(mean)) + csq[g] - 2 * csum[g] * mean
        )
        norm_gene_vars.append(v.reshape(1, -1))
    norm_gene_vars = np.concatenate(norm_gene_vars, axis=0)
    ranked = np.argsort(np.argsort(-norm_gene_vars, axis=1), axis=1).astype(np.float32)
    num_batches_high_var = np.sum((ranked < n_top_genes).astype(int), axis=0)
    ranked[ranked >= n_top_genes] = np.nan
    median_ranked = np.ma.median(np.ma.masked_invalid(ranked), axis=0).filled(np.nan)
    df = pd.DataFrame(index=var_names)
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
    return df
