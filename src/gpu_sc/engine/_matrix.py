"""Shared by the preprocessing engine steps: matrix access and row-block execution.

The steps run their block functions through :func:`executor` (:mod:`gpu_sc.engine.executor`):
a Dask matrix gets the Dask executor, any other the in-memory one. Chunking (in memory): a
step streams its matrix from host in row blocks of ``ctx.chunk_rows`` when
``ctx.chunked`` is set (the dispatcher's retry after an out-of-memory error) or when the host
matrix is too big for the device (:func:`gpu_sc.kernels.chunks.needs_chunking`). Otherwise the
matrix moves to the device once and is processed as a single block by the same code.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._scanpy_compat import choose_mtx_rep, get_obs_rep
from ..dispatch.arrays import is_dask, module_of
from ..dispatch.registry import EngineContext, EngineUnsupported
from ..kernels.chunks import is_device
from .dask_rows import DaskRows, subset_cols, subset_rows
from .executor import InMemoryRows, RowExecutor

__all__ = ["executor"]

# ---------------------------------------------------------------------------------------------
# helpers shared by the steps


def _plain(x: Any) -> Any:
    """Drop AnnData's view wrapper classes (no copy of the values), on host or device.

    The device views (``CupyArrayView``, ``CupySparseCS[RC]View``) subclass CuPy's classes as
    the host views subclass NumPy's and SciPy's, so one rewrap through their array module
    serves both (``np.asarray`` would raise on the device ones).
    """
    if not type(x).__module__.startswith("anndata"):
        return x
    am = module_of(x)
    if hasattr(x, "indptr"):
        cls = am.sparse.csr_matrix if x.format == "csr" else am.sparse.csc_matrix
        return cls((x.data, x.indices, x.indptr), shape=x.shape)
    return x.view(type=am.xp.ndarray)


def _get_x(adata, layer: str | None, obsm: str | None = None, *, use_raw: bool = False) -> Any:
    """The matrix a step reads: ``adata.obsm[obsm]``, ``adata.raw.X`` (``use_raw``),
    ``adata.layers[layer]`` or ``adata.X`` (two of them: scanpy's ValueError); a Dask
    array of CSR or dense row blocks is returned as it is (for :func:`executor`)."""
    if use_raw:
        x = choose_mtx_rep(adata, use_raw=True, layer=layer)  # scanpy's errors
    elif obsm is not None:
        if layer is not None:
            get_obs_rep(adata, layer=layer, obsm=obsm)  # raises scanpy's error
        x = adata.obsm[obsm]
    elif layer is not None:
        if layer not in adata.layers:
            raise EngineUnsupported(f"layer {layer!r} not found in adata")
        x = adata.layers[layer]
    else:
        x = adata.X
    if x is None:
        raise EngineUnsupported("adata has no matrix to work on")
    if is_dask(x):
        meta = x._meta
        if (sp.issparse(meta) or hasattr(meta, "indptr")) and getattr(
            meta, "format", "csr"
        ) != "csr":
            raise EngineUnsupported("sparse blocks must be CSR; rechunk the matrix by rows")
        return x
    if not (sp.issparse(x) or isinstance(x, np.ndarray) or is_device(x)):
        raise EngineUnsupported(f"matrix type {type(x).__name__} is not supported")
    if sp.issparse(x) and x.format not in ("csr", "csc"):
        raise EngineUnsupported(f"sparse format {x.format!r} is not supported (CSR/CSC are)")
    return _plain(x)


def _actual(adata) -> None:
    """Turn a view into an actual AnnData before writing (scanpy's ``view_to_actual``)."""
    if adata.is_view:
        adata._init_as_actual(adata.copy())


def executor(ctx: EngineContext, x: Any, **kw: Any) -> RowExecutor:
    """The executor of matrix ``x``: :class:`~gpu_sc.engine.dask_rows.DaskRows` for a Dask
    array (its blocks moved to ``ctx.am``'s module), else
    :class:`~gpu_sc.engine.executor.InMemoryRows` (``kw``: its options)."""
    if is_dask(x):
        return DaskRows(x, ctx.am.name)
    return InMemoryRows(ctx, x, **kw)


def _dask_matrices(adata) -> dict[str | None, Any]:
    out: dict[str | None, Any] = {None: adata.X} if is_dask(adata.X) else {}
    out.update({k: v for k, v in adata.layers.items() if is_dask(v)})
    return out


def subset_dask(adata, keep: np.ndarray, axis: int) -> None:
    """``adata`` subset in place along ``axis`` (0: cells, 1: genes); Dask matrices are
    subset block by block (:func:`~gpu_sc.engine.dask_rows.subset_rows` / ``subset_cols``),
    the rest by anndata."""
    _actual(adata)
    keep = np.asarray(keep, dtype=bool)
    mats = _dask_matrices(adata)
    for key in mats:
        if key is None:
            adata.X = None
        else:
            del adata.layers[key]
    if axis == 0:
        adata._inplace_subset_obs(keep)
    else:
        adata._inplace_subset_var(keep)
    for key, x in mats.items():
        x = subset_rows(x, keep) if axis == 0 else subset_cols(x, keep)
        if key is None:
            adata.X = x
        else:
            adata.layers[key] = x


def _subset(adata, keep: np.ndarray, axis: int) -> None:
    """``adata`` subset in place along ``axis`` (0: cells, 1: genes); Dask matrices lazily,
    block by block (:func:`subset_dask`)."""
    if is_dask(adata.X) or any(is_dask(v) for v in adata.layers.values()):
        subset_dask(adata, keep, axis)
    elif axis == 0:
        adata._inplace_subset_obs(keep)
    else:
        adata._inplace_subset_var(keep)


def _set_x(adata, x: Any, layer: str | None, obsm: str | None = None) -> None:
    _actual(adata)
    if obsm is not None:
        adata.obsm[obsm] = x
    elif layer is not None:
        adata.layers[layer] = x
    else:
        adata.X = x


def _is_sparse(x: Any) -> bool:
    return sp.issparse(x) or (is_device(x) and hasattr(x, "indptr"))


def _host(am, x) -> np.ndarray:
    return np.asarray(am.to_host(x))


def _sum_dtype(dtype) -> np.dtype:
    """dtype of numpy's ``sum`` of an array of ``dtype`` (int32 -> int64, float32 kept)."""
    return np.zeros(1, dtype=dtype).sum().dtype


def _major_nnz_dtype(x: Any, axis: int) -> np.dtype:
    """dtype of scipy's ``getnnz(axis)`` (indptr's dtype along the compressed axis, else int64)
    or numpy's ``count_nonzero`` (int64)."""
    if not hasattr(x, "indptr"):  # dense, host or device
        return np.dtype(np.int64)
    compressed = 1 if x.format == "csr" else 0
    return np.dtype(x.indptr.dtype) if axis == compressed else np.dtype(np.int64)


# ---------------------------------------------------------------------------------------------
# QC and filtering


def _sanitized_obs(adata) -> pd.DataFrame:
    """``adata.obs`` as scanpy's ``sanitize_anndata`` would leave it (string columns with
    repeated values become categoricals), without touching ``adata``."""
    obs = adata.obs.copy()
    adata.strings_to_categoricals(obs)
    return obs
