"""Engine step: ``score_genes`` (gene-set scores), on :mod:`gpu_sc.kernels.score_genes`."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..dispatch.registry import EngineUnsupported
from ..kernels import score_genes as _k

__all__ = ["score_genes"]

logger = logging.getLogger("gpu_sc")


def score_genes(
    adata,
    ctx,
    *,
    gene_list,
    ctrl_as_ref,
    ctrl_size,
    gene_pool,
    n_bins,
    score_name,
    random_state,
    copy,
    use_raw,
    layer,
):
    am = ctx.am
    if use_raw is None:
        use_raw = layer is None and adata.raw is not None
    if use_raw and (layer is not None or adata.raw is None):
        raise EngineUnsupported("use_raw=True with a layer or without .raw (scanpy reports it)")
    if layer is not None and layer not in adata.layers:
        raise EngineUnsupported(f"layer {layer!r} not found (scanpy reports it)")
    var_names = adata.raw.var_names if use_raw else adata.var_names
    genes = pd.Index([gene_list] if isinstance(gene_list, str) else gene_list)
    ignored = genes.difference(var_names, sort=False)
    genes = genes.intersection(var_names)
    pool = (
        var_names.astype("string")
        if gene_pool is None
        else pd.Index(gene_pool, dtype="string").intersection(var_names)
    )
    if len(ignored) > 0:
        logger.warning("score_genes: genes are not in var_names and ignored: %s", list(ignored))
    if len(genes) == 0:  # scanpy's errors
        raise ValueError("No valid genes were passed for scoring.")
    if len(pool) == 0:
        raise ValueError("No valid genes were passed for reference set.")

    x = adata.raw.X if use_raw else (adata.layers[layer] if layer is not None else adata.X)
    x = am.asarray(x)
    pool_x = x if len(pool) == len(var_names) else x[:, am.xp.asarray(var_names.get_indexer(pool))]
    means = pd.Series(np.asarray(am.to_host(_k.nan_means(am, pool_x, axis=0))).ravel(), index=pool)
    control, warnings = _k.control_genes(
        means, genes, ctrl_as_ref=ctrl_as_ref, ctrl_size=ctrl_size, n_bins=n_bins, seed=random_state
    )
    for w in warnings:
        logger.warning("score_genes: %s", w)
    if len(control) == 0:  # scanpy's error
        msg = "No control genes found in any cut."
        raise RuntimeError(msg + (" Try setting `ctrl_as_ref=False`." if ctrl_as_ref else ""))
    score = _k.scores(am, x, var_names.get_indexer(genes), var_names.get_indexer(control))
    adata.obs[score_name] = pd.Series(
        np.asarray(am.to_host(score)).ravel(), index=adata.obs_names, dtype="float64"
    )
