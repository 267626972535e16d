"""Engine steps: markers — ``rank_genes_groups`` (named by the catalogue)."""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import numpy as np
import pandas as pd

from .._scanpy_compat import check_mask, rank_genes_groups_methods, sanitize_anndata, select_groups
from ..dispatch.registry import EngineUnsupported
from ..kernels import markers as K

__all__ = ["rank_genes_groups", "rank_genes_groups_with"]

_DTYPES = {
    "names": "O",
    "scores": "float32",
    "logfoldchanges": "float32",
    "pvals": "float64",
    "pvals_adj": "float64",
}


def rank_genes_groups(
    adata,
    ctx,
    *,
    groupby,
    mask_var,
    use_raw,
    groups,
    reference,
    n_genes,
    rankby_abs,
    pts,
    key_added,
    copy,
    method,
    corr_method,
    tie_correct,
    layer,
    **kwds,
):
    """t-test, t-test_overestim_var and Wilcoxon rank-sum markers on the engine.

    Group sums come from sparse indicator products and ranks from sorted dense blocks of
    genes (:mod:`gpu_sc.kernels.markers`); the small per-group results (one score per group
    and gene) are finished on the host exactly as scanpy finishes them: Benjamini-Hochberg
    with statsmodels, the top-``n_genes`` selection with NumPy's argpartition/argsort (so tied
    scores are ordered as scanpy orders them) and the same structured arrays in ``uns``.
    """
    return rank_genes_groups_with(
        adata,
        ctx,
        K.group_sums,
        K.wilcoxon_rank_sums,
        groupby=groupby,
        mask_var=mask_var,
        use_raw=use_raw,
        groups=groups,
        reference=reference,
        n_genes=n_genes,
        rankby_abs=rankby_abs,
        pts=pts,
        key_added=key_added,
        method=method,
        corr_method=corr_method,
        tie_correct=tie_correct,
        layer=layer,
        **kwds,
    )


def rank_genes_groups_with(
    adata,
    ctx,
    sums_of,
    ranks_of,
    *,
    groupby,
    mask_var,
    use_raw,
    groups,
    reference,
    n_genes,
    rankby_abs,
    pts,
    key_added,
    method,
    corr_method,
    tie_correct,
    layer,
    **kwds,
):
    """:func:`rank_genes_groups` with the two passes over the matrix supplied by the caller:
    ``sums_of(am, X, masks)`` (the contract of :func:`gpu_sc.kernels.markers.group_sums`) and
    ``ranks_of(am, X, masks, cells=None)`` (that of
    :func:`~gpu_sc.kernels.markers.wilcoxon_rank_sums`).
    The Dask path passes block-wise versions; everything else is shared."""
    am, xp = ctx.am, ctx.am.xp
    method = "t-test" if method is None else method
    plan = _plan(
        adata, groupby, mask_var, use_raw, groups, reference, method, corr_method, layer, kwds
    )
    use_raw, X, var_names, groups_order, masks, iref = plan
    n_cells, n_total_genes = X.shape
    n_groups = masks.shape[0]
    if hasattr(X, "format") and X.format == "csr":
        X = X.tocsc()  # gene blocks are column slices

    sums = sums_of(am, X, masks)
    means, variances = sums.mean_var(xp)
    sizes = sums.sizes
    tested = [g for g in range(n_groups) if g != iref]
    alone = _warn_if_no_rest(am, sizes, n_cells, iref, tested, groups_order, groupby)
    # that case divides 0 by 0 (the rest's statistics): said once above, not as numpy's noise
    quiet = np.errstate(divide="ignore", invalid="ignore") if alone else contextlib.nullcontext()
    with quiet:
        tests = (method, iref, tested, tie_correct)
        scores, pvals, means_other = _test(am, X, masks, sums, means, variances, ranks_of, tests)
        base = adata.uns.get("log1p", {}).get("base")
        factor = 1.0 if base is None else float(np.log(base))
        fold = (xp.expm1(means * factor) + 1e-9) / (xp.expm1(means_other * factor) + 1e-9)
        logfold = xp.log2(fold)

    scores, pvals, logfold = (am.to_host(a) for a in (scores, pvals, logfold))
    n_genes_user = n_total_genes if n_genes is None or n_genes > n_total_genes else n_genes
    stats = _records(
        groups_order,
        tested,
        var_names,
        scores,
        pvals,
        logfold,
        n_genes_user,
        rankby_abs,
        corr_method,
    )
    result = {
        "params": dict(
            groupby=groupby,
            reference=reference,
            method=method,
            use_raw=use_raw,
            layer=layer,
            corr_method=corr_method,
        )
    }
    if pts:
        result.update(_fractions(am, sums, groups_order, var_names, rest=iref is None))
    result.update(stats)
    adata.uns["rank_genes_groups" if key_added is None else key_added] = result
    return None


def _warn_if_no_rest(am, sizes, n_cells, iref, tested, groups_order, groupby) -> list:
    """Return the tested groups that hold every cell (no rest to compare), warning once."""
    alone = []
    if iref is None:
        rest_sizes = n_cells - np.asarray(am.to_host(sizes))
        alone = [groups_order[g] for g in tested if rest_sizes[g] == 0]
    if alone:  # scanpy gives the same zeros behind numpy's "Mean of empty slice" warnings
        warnings.warn(
            f"rank_genes_groups: group {str(alone[0])!r} of {groupby!r} holds every cell, so "
            "there is no rest to compare it with: its scores are 0 and p-values 1; rank a "
            "clustering with at least 2 groups",
            UserWarning,
            stacklevel=3,  # rank_genes_groups_with's caller, as before this helper
        )
    return alone


def _test(am, X, masks, sums, means, variances, ranks_of, tests):
    """Return ``(scores, pvals, means_other)`` of the test; ``tests`` is
    ``(method, iref, tested, tie_correct)``."""
    method, iref, tested, tie_correct = tests
    xp = am.xp
    sizes = sums.sizes
    n_groups = masks.shape[0]
    if iref is None:
        means_other, vars_other = sums.rest_mean_var(xp)
        n_other = X.shape[0] - sizes
    else:
        means_other = xp.broadcast_to(means[iref], means.shape)
        vars_other = xp.broadcast_to(variances[iref], variances.shape)
        n_other = xp.full(n_groups, float(sizes[iref]))

    if method in ("t-test", "t-test_overestim_var"):
        n2 = n_other if method == "t-test" else sizes
        scores, pvals = K.t_test(
            am, means, variances, sizes[:, None], means_other, vars_other, n2[:, None]
        )
    elif iref is None:
        rank_sums, tie_sums, n_ranked = ranks_of(am, X, masks)
        scores, pvals = K.wilcoxon_z(
            am, rank_sums, tie_sums[None, :], sizes[:, None], n_ranked, tie_correct=tie_correct
        )
    else:
        scores = xp.zeros((n_groups, X.shape[1]))
        pvals = xp.ones((n_groups, X.shape[1]))
        for g in tested:
            cells = masks[g] | masks[iref]
            rank_sums, tie_sums, n_ranked = ranks_of(am, X, masks[g : g + 1], cells)
            scores[g], pvals[g] = (
                r[0]
                for r in K.wilcoxon_z(
                    am,
                    rank_sums,
                    tie_sums[None, :],
                    sizes[g],
                    n_ranked,
                    tie_correct=tie_correct,
                )
            )
    return scores, pvals, means_other


def _fractions(am, sums, groups_order, var_names, *, rest: bool) -> dict:
    """Return ``pts`` (and with ``rest``, ``pts_rest``): each gene's fraction of expressing cells."""
    names = [str(name) for name in groups_order]
    out = {"pts": pd.DataFrame(am.to_host(sums.pts()).T, index=var_names, columns=names)}
    if rest:
        out["pts_rest"] = pd.DataFrame(
            am.to_host(sums.pts_rest()).T, index=var_names, columns=names
        )
    return out


def _plan(adata, groupby, mask_var, use_raw, groups, reference, method, corr_method, layer, kwds):
    """Validate like scanpy, in scanpy's order and with scanpy's errors (what this does not
    implement raises :class:`EngineUnsupported`, so scanpy runs), and select the data."""
    if kwds:
        raise EngineUnsupported(f"extra arguments {sorted(kwds)}")
    mask_var = check_mask(adata, mask_var, "var")
    if use_raw is None:
        use_raw = adata.raw is not None
    elif use_raw is True and adata.raw is None:
        raise ValueError("Received `use_raw=True`, but `adata.raw` is empty.")
    if method not in (avail_methods := rank_genes_groups_methods()):
        raise ValueError(f"Method must be one of {avail_methods}.")
    if method == "logreg":  # the catalogue declares it; an engine caller gets the same
        raise EngineUnsupported("method='logreg' is not implemented")
    avail_corr = {"benjamini-hochberg", "bonferroni"}
    if corr_method not in avail_corr:
        raise ValueError(f"Correction method must be one of {avail_corr}.")
    sanitize_anndata(adata)  # as scanpy: string columns become categorical
    if groupby not in adata.obs or not isinstance(adata.obs[groupby].dtype, pd.CategoricalDtype):
        raise EngineUnsupported(f"obs[{groupby!r}] is not categorical (scanpy reports it)")
    order: Any
    if groups == "all":
        order = "all"
    elif isinstance(groups, str | int):
        raise ValueError("Specify a sequence of groups")
    else:
        order = list(groups)
        if isinstance(order[0], int):
            order = [str(n) for n in order]
        if reference != "rest" and reference not in set(order):
            order += [reference]
    categories = adata.obs[groupby].cat.categories
    if reference != "rest" and reference not in categories:
        cats = categories.tolist()
        raise ValueError(f"reference = {reference} needs to be one of groupby = {cats}.")
    groups_order, masks = select_groups(adata, order, groupby)
    singlets = set(groups_order) & set(adata.obs[groupby].value_counts().loc[lambda x: x < 2].index)
    if singlets:
        raise ValueError(
            f"Could not calculate statistics for groups {', '.join(singlets)} "
            "since they only contain one sample."
        )
    if layer is not None:
        if use_raw:
            raise ValueError("Cannot specify `layer` and have `use_raw=True`.")
        X, var_names = adata.layers[layer], adata.var_names
    elif use_raw:
        X, var_names = adata.raw.X, adata.raw.var_names
    else:
        X, var_names = adata.X, adata.var_names
    if mask_var is not None:
        X, var_names = X[:, mask_var], var_names[mask_var]
    iref = None
    if reference != "rest":
        iref = int(np.where(groups_order == reference)[0][0])
    return use_raw, X, var_names, groups_order, np.asarray(masks, dtype=bool), iref


def _select_top_n(scores, n_top: int):
    """scanpy's ``_select_top_n`` verbatim: tied scores come out in scanpy's order."""
    reference_indices = np.arange(scores.shape[0], dtype=int)
    partition = np.argpartition(scores, -n_top)[-n_top:]
    partial_indices = np.argsort(scores[partition])[::-1]
    return reference_indices[partition][partial_indices]


def _records(
    groups_order, tested, var_names, scores, pvals, logfold, n_top, rankby_abs, corr_method
):
    """scanpy's ``compute_statistics`` bookkeeping and structured arrays, from host arrays."""
    from statsmodels.stats.multitest import multipletests

    n_genes = scores.shape[1]
    stats: Any = None  # the first tested group's frame
    for g in tested:
        name = str(groups_order[g])
        idx = _select_top_n(np.abs(scores[g]) if rankby_abs else scores[g], n_top)
        if stats is None:
            stats = pd.DataFrame(columns=pd.MultiIndex.from_tuples([(name, "names")]))
        stats[name, "names"] = var_names[idx]
        stats[name, "scores"] = scores[g][idx]
        p = pvals[g].copy()
        stats[name, "pvals"] = p[idx]
        if corr_method == "benjamini-hochberg":
            p[np.isnan(p)] = 1
            _, p_adj, _, _ = multipletests(p, alpha=0.05, method="fdr_bh")
        else:
            p_adj = np.minimum(p * n_genes, 1.0)
        stats[name, "pvals_adj"] = p_adj[idx]
        stats[name, "logfoldchanges"] = logfold[g][idx]
    stats.columns = stats.columns.swaplevel()
    return {
        col: stats[col].to_records(index=False, column_dtypes=_DTYPES[col])
        for col in stats.columns.levels[0]
    }
