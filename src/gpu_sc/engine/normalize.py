"""Engine steps: ``normalize_total`` and ``log1p``.

Each function has scanpy's parameter names, computes with the array-generic kernels of
:mod:`gpu_sc.kernels` on ``ctx.am`` and writes into ``adata`` only after everything is computed;
matrix access and row-block streaming are shared in :mod:`gpu_sc.engine._matrix`.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ..dispatch.registry import EngineContext
from ..kernels import normalize as norm_k
from ._matrix import _Blocks, _get_x, _host, _is_sparse, _set_x

__all__ = ["normalize_total", "log1p"]


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
    counts_parts: list[Any] = []
    hi: Any = None  # or'ed over the blocks
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
    if chunked and (layer is not None or obsm is not None):  # scanpy's error
        raise NotImplementedError(
            "Currently cannot perform chunked operations on arrays not stored in X."
        )
    am = ctx.am
    x = _get_x(adata, layer, obsm)
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float64)  # as scanpy
    blocks = _Blocks(ctx, x, csr=False)
    out = blocks.map(lambda start, stop, b: norm_k.log1p(am, b, base))
    _set_x(adata, out, layer, obsm)
    adata.uns["log1p"] = {"base": base}
    return None


# ---------------------------------------------------------------------------------------------
# highly variable genes
