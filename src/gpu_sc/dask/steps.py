"""Preprocessing steps on an AnnData whose ``X`` is a Dask array of row blocks: wiring.

Each step is the in-memory engine's function (:mod:`gpu_sc.engine`), whose block functions
run on the Dask executor (:class:`gpu_sc.engine.dask_rows.DaskRows`, chosen by
:func:`gpu_sc.engine.executor.executor` for a Dask matrix): row-local results (normalised,
log-transformed, scaled, regressed matrices, every row or column subset) only extend the
graph; statistics over all cells are per-block float64 accumulators added by a fixed-order
tree (:func:`gpu_sc.engine.dask_rows.tree_sum`), and only they (per-cell or per-gene vectors, a
genes x genes Gram matrix, the PCA coordinates) come back to the client. The functions here
give scanpy's defaults and refuse what the Dask path does not implement, before any change.
"""

from __future__ import annotations

import numpy as np

from ..dispatch.registry import EngineContext, EngineUnsupported
from ..engine import hvg as _hvg
from ..engine import normalize as _norm
from ..engine import pca as _pca
from ..engine import qc as _qc
from ..engine import regress_scale as _rs
from ..engine import subset_dask
from ..engine.dask_rows import DaskRows, is_dask
from ..kernels import qc as qc_k

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


def _dask_x(adata, layer: str | None, params: dict) -> dict:
    """``params`` (a step's ``locals()``) without ``adata`` and ``ctx``, after checking that
    the matrix the step reads is a Dask array."""
    x = adata.layers.get(layer) if layer is not None else adata.X
    if layer is not None and layer not in adata.layers:
        raise EngineUnsupported(f"layer {layer!r} not found in adata")
    if not is_dask(x):
        raise EngineUnsupported(
            f"matrix is a {type(x).__name__}, not a dask array; run the in-memory engine, "
            "or open the file with gpu_sc.datasets.read_lazy"
        )
    return {k: v for k, v in params.items() if k not in ("adata", "ctx")}


def _subset(adata, keep: np.ndarray, axis: int) -> None:
    """``adata`` subset in place along ``axis`` (:func:`gpu_sc.engine.subset_dask`)."""
    subset_dask(adata, keep, axis)


def subset_obs(adata, mask, **_params) -> None:
    """Keep the cells where ``mask`` is True (lazy for the Dask matrices)."""
    _subset(adata, mask, 0)


def subset_var(adata, mask, **_params) -> None:
    """Keep the genes where ``mask`` is True (lazy for the Dask matrices)."""
    _subset(adata, mask, 1)


# ---------------------------------------------------------------------------------------------
# the input's values, checked in one pass


def _summary_block(am, b):
    return qc_k.value_summary(am, b)


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
    return DaskRows(x).map_reduce(_summary_block, combine=_summary_combine)


# ---------------------------------------------------------------------------------------------
# the steps: scanpy's defaults, the Dask path's refusals, the engine's functions


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
    return _qc.calculate_qc_metrics(adata, ctx, **_dask_x(adata, layer, locals()))


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
    return _qc.filter_cells(adata, ctx, **_dask_x(adata, None, locals()))


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
    return _qc.filter_genes(adata, ctx, **_dask_x(adata, None, locals()))


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
    """scanpy's ``normalize_total``: lazy (no pass) for a fixed ``target_sum`` without
    ``key_added``; a pass for the median of ``target_sum=None``, for ``key_added`` and for
    the flags of ``exclude_highly_expressed``."""
    return _norm.normalize_total(adata, ctx, **_dask_x(adata, layer, locals()))


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
    return _norm.log1p(adata, ctx, **_dask_x(adata, layer, locals()))


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
    ``seurat_v3``: two; with or without ``batch_key``)."""
    if flavor not in ("seurat", "cell_ranger", "seurat_v3", "seurat_v3_paper"):
        raise EngineUnsupported(f"flavor={flavor!r} is not implemented")
    if batch_key is not None and batch_key not in adata.obs:
        raise EngineUnsupported(f"batch_key {batch_key!r} is not a column of adata.obs")
    return _hvg.highly_variable_genes(adata, ctx, **_dask_x(adata, layer, locals()))


def regress_out(adata, ctx: EngineContext, *, keys, layer=None, n_jobs=None, copy=False):
    """scanpy's ``regress_out``: one pass for the fit, the dense residuals lazily."""
    return _rs.regress_out(adata, ctx, **_dask_x(adata, layer, locals()))


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
    return _rs.scale(adata, ctx, **_dask_x(adata, layer, locals()))


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
    return _pca.pca(adata, ctx, **_dask_x(adata, layer, locals()))
