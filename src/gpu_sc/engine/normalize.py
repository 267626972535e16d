"""Engine steps: ``normalize_total`` and ``log1p``.

Each function has scanpy's parameter names, computes with the array-generic kernels of
:mod:`gpu_sc.kernels` on ``ctx.am`` and writes into ``adata`` only after everything is computed;
matrix access and row-block streaming are shared in :mod:`gpu_sc.engine._matrix`.
"""

from __future__ import annotations

import functools
import operator
import warnings

import numpy as np

from ..dispatch.arrays import is_dask
from ..dispatch.registry import EngineContext
from ..kernels import normalize as norm_k
from ..kernels.reductions import as_csr
from ._matrix import _get_x, _is_sparse, _set_x, executor

__all__ = ["normalize_total", "log1p"]


def _as_float32(b):
    return b.astype(np.float32) if np.issubdtype(b.dtype, np.integer) else b  # as scanpy


def _counts_block(am, b, keep_genes):
    keep = None if keep_genes is None else am.asarray(keep_genes)
    return norm_k.counts_per_cell(am, as_csr(am, _as_float32(b)), keep)


def _hi_block(am, b, max_fraction):
    b = as_csr(am, _as_float32(b))
    return norm_k.highly_expressed(am, b, norm_k.counts_per_cell(am, b), max_fraction)


def _or(*parts):
    return functools.reduce(operator.or_, parts)


def _normalize_block(am, b, target_sum, keep_genes):
    """Row-local normalisation by the block's own row totals and ``target_sum``."""
    b = as_csr(am, _as_float32(b))
    keep = None if keep_genes is None else am.asarray(keep_genes)
    return norm_k.divide_rows(am, b, norm_k.counts_per_cell(am, b, keep) / target_sum)


def _divide_block(am, b, factor):
    return norm_k.divide_rows(am, as_csr(am, _as_float32(b)), am.asarray(factor))


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
    """scanpy's ``normalize_total``. On Dask, lazy (no pass) for a fixed ``target_sum``
    without ``key_added``: each block divides by its own row totals (cells with zero counts
    are then not warned about; they stay zero, as in scanpy)."""
    if max_fraction < 0 or max_fraction > 1:
        raise ValueError("Choose max_fraction between 0 and 1.")
    x = _get_x(adata, layer)
    sparse_input = _is_sparse(x) or is_dask(x) and _is_sparse(x._meta)
    if not is_dask(x) and np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32)  # as scanpy (on Dask: block by block)
    ex = executor(ctx, x)
    # (ex.dtype: that of the blocks the Dask executor moved to the device, if it did)
    out_dtype = np.float32 if np.issubdtype(ex.dtype, np.integer) else ex.dtype
    keep_genes = None
    if exclude_highly_expressed:
        keep_genes = ~np.asarray(ex.map_reduce(_hi_block, max_fraction, combine=_or), dtype=bool)
    if ex.lazy and target_sum is not None and key_added is None and inplace:
        out = ex.map_matrix(
            _normalize_block, target_sum, keep_genes, dtype=out_dtype, sparse=sparse_input
        )
    else:
        counts = ex.map_rows(_counts_block, keep_genes)
        if target_sum is None:
            # scanpy: median over all cells for CSR input, over cells with counts for dense
            target_sum = np.median(counts) if sparse_input else np.median(counts[counts > 0])
        factor = counts / target_sum
        if not np.all(factor > 0):
            warnings.warn("Some cells have zero counts", UserWarning, stacklevel=2)
        out = ex.map_matrix(_divide_block, rows=(factor,), dtype=out_dtype, sparse=sparse_input)
        if not inplace:
            return {"X": out if ex.lazy else ctx.am.to_host(out), "norm_factor": factor}
        if key_added is not None:
            adata.obs[key_added] = factor
    _set_x(adata, out, layer)
    return None


def _log1p_block(am, b, base):
    if np.issubdtype(b.dtype, np.integer):
        b = b.astype(np.float64)  # as scanpy
    return norm_k.log1p(am, b, base)


def log1p(adata, ctx: EngineContext, *, base, copy, chunked, chunk_size, layer, obsm):
    if chunked and (layer is not None or obsm is not None):  # scanpy's error
        raise NotImplementedError(
            "Currently cannot perform chunked operations on arrays not stored in X."
        )
    x = _get_x(adata, layer, obsm)
    if not is_dask(x) and np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float64)  # as scanpy (on Dask: block by block)
    ex = executor(ctx, x, csr=False)
    dtype = np.float64 if np.issubdtype(ex.dtype, np.integer) else ex.dtype
    out = ex.map_matrix(_log1p_block, base, dtype=dtype, sparse=ex.sparse)
    _set_x(adata, out, layer, obsm)
    adata.uns["log1p"] = {"base": base}
    return None


# ---------------------------------------------------------------------------------------------
# highly variable genes
