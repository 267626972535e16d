"""Engine steps: ``regress_out`` and ``scale``.

Each function has scanpy's parameter names, computes with the array-generic kernels of
:mod:`gpu_sc.kernels` on ``ctx.am`` and writes into ``adata`` only after everything is computed;
matrix access and row-block streaming are shared in :mod:`gpu_sc.engine._matrix`.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .._scanpy_compat import check_mask
from ..dispatch.arrays import is_dask
from ..dispatch.registry import EngineContext, EngineUnsupported
from ..kernels import regress as reg_k
from ..kernels import scale as scale_k
from ..kernels.reductions import with_data
from ._matrix import _get_x, _host, _sanitized_obs, _set_x, executor
from .executor import to_host

__all__ = ["regress_out", "scale"]


def _cat_sums_block(am, b, codes, n_groups):
    if b.shape[0] == 0:  # a block the filters emptied: nothing to add, no min / max
        return {
            "sum": np.zeros((n_groups, b.shape[1])),
            "n": np.zeros(n_groups, np.int64),
            "min": np.full(b.shape[1], np.inf),
            "max": np.full(b.shape[1], -np.inf),
        }
    return to_host(reg_k.group_sums(am, b, am.asarray(codes), n_groups))


def _cat_combine(*parts):
    out = dict(parts[0])
    for p in parts[1:]:
        out["sum"] = out["sum"] + p["sum"]
        out["n"] = out["n"] + p["n"]
        out["min"] = np.minimum(out["min"], p["min"])
        out["max"] = np.maximum(out["max"], p["max"])
    return out


def _cat_resid_block(am, b, codes, means, a, slope, constant):
    dev = [am.asarray(v) for v in (codes, means, a, slope, constant)]
    return reg_k.categorical_residuals(am, b, *dev)


def _normal_eq_block(am, b, r):
    return reg_k.normal_equations(am, b, am.asarray(r))


def _resid_block(am, b, r, coeff, out_dtype):
    return reg_k.ols_residuals(am, b, am.asarray(r), am.asarray(coeff), am.xp.dtype(out_dtype))


def regress_out(adata, ctx: EngineContext, *, keys, layer, n_jobs, copy):
    """scanpy's ``regress_out``: continuous covariates by the normal equations (one pass),
    one categorical covariate by per-category sums (one pass), then the dense residuals."""
    keys = [keys] if isinstance(keys, str) else list(keys)
    x = _get_x(adata, layer)
    ex = executor(ctx, x, dense_result=True)
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
        acc = ex.map_reduce(_cat_sums_block, n_groups, rows=(codes,), combine=_cat_combine)
        fit = reg_k.categorical_fit(acc["sum"], acc["n"], x.shape[0])
        constant = acc["min"] == acc["max"]
        out = ex.map_matrix(
            _cat_resid_block,
            fit["means"],
            fit["a"],
            fit["b"],
            constant,
            rows=(codes,),
            dtype=np.float64,
            sparse=False,
        )
    else:
        for k in keys:
            if k in obs and not pd.api.types.is_numeric_dtype(obs[k]):
                raise EngineUnsupported(f"obs[{k!r}] is neither numeric nor categorical")
        regressors = obs[keys] if keys else obs
        regressors.insert(0, "ones", 1.0)
        r_host = regressors.to_numpy().astype(np.float64)
        gram, rtx = ex.map_reduce(_normal_eq_block, rows=(r_host,))
        if np.linalg.det(gram) == 0:
            raise EngineUnsupported("singular regressors (scanpy then fits a GLM per gene)")
        coeff = np.linalg.inv(gram) @ rtx
        out_dtype: np.dtype
        if np.issubdtype(ex.dtype, np.integer):
            out_dtype = np.dtype(np.float32 if ex.dtype.itemsize <= 4 else np.float64)
        else:
            out_dtype = ex.dtype
        out = ex.map_matrix(
            _resid_block,
            coeff,
            np.dtype(out_dtype).str,
            rows=(r_host,),
            dtype=out_dtype,
            sparse=False,
        )
    _set_x(adata, out, layer)
    adata.strings_to_categoricals()  # scanpy's sanitize_anndata
    return None


def scale(adata, ctx: EngineContext, *, zero_center, max_value, copy, layer, obsm, mask_obs):
    """scanpy's ``scale``; with ``mask_obs`` the means and SDs are those of the masked cells,
    only those are scaled and they go to ``var['mean of <mask>']`` (``'mean with mask'`` for
    an array), as scanpy does."""
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
    if not is_dask(x) and np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float64)  # as scanpy (the Dask path scales the blocks as they are)
    ex = executor(ctx, x, dense_result=bool(zero_center))
    sparse = ex.sparse
    if sparse and zero_center:  # host or device sparse
        warnings.warn("zero-centering a sparse array/matrix densifies it.", UserWarning, 2)
    total, total_sq = ex.map_reduce(_col_acc_block, rows=(mask,))
    n = x.shape[0] if mask is None else int(mask.sum())
    am = ex.am
    mean, std = scale_k.mean_std(am, am.asarray(total), am.asarray(total_sq), n)
    if sparse and not zero_center:
        dtype, out_sparse = ex.dtype, True
    elif sparse:
        dtype, out_sparse = np.dtype(np.float64), False
    else:
        dtype = ex.dtype if np.issubdtype(ex.dtype, np.floating) else np.dtype(np.float64)
        out_sparse = False
    out = ex.map_matrix(
        _scale_block,
        mean,
        std,
        zero_center,
        max_value,
        rows=(mask,),
        dtype=dtype,
        sparse=out_sparse,
    )
    if mask is not None and sparse and zero_center:
        # scanpy writes the scaled rows into the sparse matrix: it stays sparse, in its dtype
        fmt = am.sparse.csr_matrix if x.format == "csr" else am.sparse.csc_matrix
        out = fmt(out.astype(x.dtype))
    _set_x(adata, out, layer, obsm)
    adata.var[names[0]] = _host(am, mean)
    adata.var[names[1]] = _host(am, std)
    return None


def _col_acc_block(am, b, rows):
    if rows is not None:  # mask_obs: this block's masked cells
        b = b[am.asarray(np.flatnonzero(rows))]
    return scale_k.col_accumulators(am, b)


def _scale_block(am, b, rows, mean, std, zero_center, max_value):
    """The block scaled; with ``mask_obs`` (``rows``), only its masked cells."""
    xp = am.xp
    mean, std = am.asarray(mean), am.asarray(std)
    out = scale_k.scale_block(am, b, mean, std, zero_center=zero_center, max_value=max_value)
    if rows is None:
        return out
    rows = am.asarray(rows)
    if am.issparse(out):  # not centred: the CSR structure of b, scaled values
        row_of = xp.searchsorted(out.indptr, xp.arange(out.nnz), side="right") - 1
        data = xp.where(rows[row_of], out.data, b.data.astype(out.dtype))
        return with_data(am, out, data)
    orig = b.toarray() if am.issparse(b) else b
    return xp.where(rows[:, None], out, orig.astype(out.dtype))


# ---------------------------------------------------------------------------------------------
# PCA
