"""Gene-set scores (scanpy's ``tl.score_genes``, Seurat's ``AddModuleScore``), array-generic.

A cell's score is the mean expression of the gene set minus the mean expression of control
genes drawn, per expression bin of the gene set, from genes of similar average expression:

1. ``gene_means``: every pool gene's mean over cells (NaN-aware, float64 for sparse input);
2. :func:`control_genes` (host, a few thousand numbers): rank the means into ``n_bins - 1``
   cuts and draw ``ctrl_size`` genes of each cut holding a set gene, with a
   ``numpy.random.RandomState(seed)``: the draws of scanpy's ``np.random.seed(seed)``
   followed by pandas ``sample``, without touching NumPy's global generator;
3. ``row_means`` over the set and over the controls; the score is their difference.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..dispatch.arrays import ArrayModule
from .reductions import axis_sum, with_data

__all__ = ["control_genes", "nan_means", "scores"]


def nan_means(am: ArrayModule, x: Any, axis: int, dtype=None) -> Any:
    """Mean along ``axis`` ignoring NaN, as scanpy's ``_nan_means``: float64 sums of sparse
    values (implicit zeros count), the array library's ``nanmean`` of dense ones."""
    xp = am.xp
    if not am.issparse(x):
        return xp.nanmean(x, axis=axis, dtype=dtype)
    nan = xp.isnan(x.data)
    n = x.shape[axis]
    if bool(nan.any()):
        x = with_data(am, x, xp.where(nan, 0, x.data))
        n = n - axis_sum(am, with_data(am, x, nan.astype(xp.float64)), axis)
    return axis_sum(am, x, axis) / n


def control_genes(
    means: pd.Series,
    gene_list: pd.Index,
    *,
    ctrl_as_ref: bool,
    ctrl_size: int,
    n_bins: int,
    seed: int,
) -> tuple[pd.Index, list[str]]:
    """Control genes for ``gene_list`` from the pool's ``means`` (host, scanpy's binning);
    also the warnings scanpy logs for empty cuts."""
    rng = np.random.RandomState(seed)
    means = means[np.isfinite(means)]
    n_items = int(np.round(len(means) / (n_bins - 1)))
    cut = means.rank(method="min") // n_items
    keep_out = False if ctrl_as_ref else cut.index.isin(gene_list)
    control = pd.Index([], dtype="string")
    warnings = []
    for c in np.unique(cut.loc[gene_list]):
        genes = cut[(cut == c) & ~keep_out].index
        if len(genes) == 0:
            warnings.append(
                f"No control genes for cut={c}. You might want to increase "
                f"gene_pool size (current size: {len(means)})"
            )
        if ctrl_size < len(genes):
            genes = genes.to_series().sample(ctrl_size, random_state=rng).index
        if ctrl_as_ref:
            genes = genes.difference(gene_list)
        control = control.union(genes)
    return control, warnings


def scores(am: ArrayModule, x: Any, set_idx: Any, control_idx: Any) -> Any:
    """Per cell: mean of columns ``set_idx`` minus mean of columns ``control_idx`` (float64)."""
    xp = am.xp

    def subset_means(idx):
        sub = x if len(idx) == x.shape[1] else x[:, idx]  # scanpy's get_subset: all genes as-is
        return xp.asarray(nan_means(am, sub, axis=1, dtype=xp.float64), dtype=xp.float64).ravel()

    return subset_means(xp.asarray(set_idx)) - subset_means(xp.asarray(control_idx))
