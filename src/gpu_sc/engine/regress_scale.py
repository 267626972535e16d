"""Engine steps: ``regress_out`` and ``scale``.

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
from ..kernels import regress as reg_k
from ..kernels import scale as scale_k
from ..kernels.reductions import with_data
from ._matrix import _Blocks, _get_x, _host, _is_sparse, _sanitized_obs, _set_x

__all__ = ["regress_out", "scale"]


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
        acc: Any = None  # the first block's sums
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
        gram: Any = None  # summed over the blocks
        rtx: Any = None
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
    """scanpy's ``scale``; with ``mask_obs`` the means and SDs are those of the masked cells,
    only those are scaled and they go to ``var['mean of <mask>']`` (``'mean with mask'`` for
    an array), as scanpy does."""
    from .._scanpy_compat import check_mask

    am, xp = ctx.am, ctx.am.xp
    names = ("mean", "std")
    mask = None
    if mask_obs is not None:
        names = (
            (f"mean of {mask_obs}", f"std of {mask_obs}")
            if isinstance(mask_obs, str)
            else ("mean with mask", "std with mask")
        )
        mask = np.asarray(check_mask(adata, mask_obs, "obs"), dtype=bool)
    x = _get_x(adata, layer, obsm)
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float64)  # as scanpy
    sparse = _is_sparse(x)
    if sparse and zero_center:  # host or device sparse
        warnings.warn("zero-centering a sparse array/matrix densifies it.", UserWarning, 2)
    blocks = _Blocks(ctx, x, dense_result=bool(zero_center))
    total = np.zeros(x.shape[1])
    total_sq = np.zeros(x.shape[1])
    for start, stop, b in blocks:
        if mask is not None:
            b = b[am.asarray(np.flatnonzero(mask[start:stop]))]
        s, q = scale_k.col_accumulators(am, b)
        total += _host(am, s)
        total_sq += _host(am, q)
    n = x.shape[0] if mask is None else int(mask.sum())
    mean, std = scale_k.mean_std(am, am.asarray(total), am.asarray(total_sq), n)

    def apply(start, stop, b):
        out = scale_k.scale_block(am, b, mean, std, zero_center=zero_center, max_value=max_value)
        if mask is None:
            return out
        rows = am.asarray(mask[start:stop])
        if am.issparse(out):  # not centred: the CSR structure of b, scaled values
            row_of = xp.searchsorted(out.indptr, xp.arange(out.nnz), side="right") - 1
            data = xp.where(rows[row_of], out.data, b.data.astype(out.dtype))
            return with_data(am, out, data)
        orig = b.toarray() if am.issparse(b) else b
        return xp.where(rows[:, None], out, orig.astype(out.dtype))

    out = blocks.map(apply)
    if mask is not None and sparse and zero_center:
        # scanpy writes the scaled rows into the sparse matrix: it stays sparse, in its dtype
        fmt = am.sparse.csr_matrix if x.format == "csr" else am.sparse.csc_matrix
        out = fmt(out.astype(x.dtype))
    _set_x(adata, out, layer, obsm)
    adata.var[names[0]] = _host(am, mean)
    adata.var[names[1]] = _host(am, std)
    return None


# ---------------------------------------------------------------------------------------------
# PCA
