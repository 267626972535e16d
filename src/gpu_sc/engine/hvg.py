"""Engine step: ``highly_variable_genes`` (seurat, cell_ranger, seurat_v3 flavours).

Each function has scanpy's parameter names, computes with the array-generic kernels of
:mod:`gpu_sc.kernels` on ``ctx.am`` and writes into ``adata`` only after everything is computed;
matrix access and row-block streaming are shared in :mod:`gpu_sc.engine._matrix`.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from ..dispatch.registry import EngineContext, EngineUnsupported
from ..kernels import hvg as hvg_k
from ._matrix import _actual, _Blocks, _get_x, _host, _sanitized_obs

__all__ = ["highly_variable_genes", "store_hvg"]


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
    acc: Any = None  # the first block's sums
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
        subset_var=_subset_var,
    )


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
    means, variances, fits = hvg_k.seurat_v3_fits(stats, span)
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
        subset_var=_subset_var,
    )


def _subset_var(adata, mask) -> None:
    adata._inplace_subset_var(mask)


def store_hvg(adata, df, *, flavor, batch_key, inplace, subset, subset_var):
    """Return or store an HVG table ``df`` as scanpy does for ``flavor``; shared by the
    in-memory engine and the Dask path, which subsets its matrices with ``subset_var``."""
    v3 = flavor in ("seurat_v3", "seurat_v3_paper")
    if not inplace:
        if v3 and batch_key is None:
            df = df.drop(["highly_variable_nbatches"], axis=1)
        return df.loc[df["highly_variable"].to_numpy()] if subset else df
    _actual(adata)
    adata.uns["hvg"] = {"flavor": flavor}
    if v3:
        adata.var["highly_variable"] = df["highly_variable"].to_numpy()
        adata.var["highly_variable_rank"] = df["highly_variable_rank"].to_numpy()
        adata.var["means"] = df["means"].to_numpy()
        adata.var["variances"] = df["variances"].to_numpy()
        adata.var["variances_norm"] = df["variances_norm"].to_numpy().astype("float64", copy=False)
        if batch_key is not None:
            adata.var["highly_variable_nbatches"] = df["highly_variable_nbatches"].to_numpy()
    else:
        adata.var["highly_variable"] = df["highly_variable"]
        adata.var["means"] = df["means"]
        adata.var["dispersions"] = df["dispersions"]
        # (no copy=False: pandas 3 deprecates the keyword)
        adata.var["dispersions_norm"] = df["dispersions_norm"].astype(np.float32)
        if batch_key is not None:
            adata.var["highly_variable_nbatches"] = df["highly_variable_nbatches"]
            adata.var["highly_variable_intersection"] = df["highly_variable_intersection"]
            adata.strings_to_categoricals()  # scanpy sanitizes adata for batches
    if subset:
        subset_var(adata, adata.var["highly_variable"].to_numpy())
    return None


# ---------------------------------------------------------------------------------------------
# regress_out, scale
