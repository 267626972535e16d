"""Shared by the preprocessing engine steps: matrix access and row-block streaming.

Chunking: a step streams its matrix from host in row blocks of ``ctx.chunk_rows`` when
``ctx.chunked`` is set (the dispatcher's retry after an out-of-memory error) or when the host
matrix is too big for the device (:func:`gpu_sc.kernels.chunks.needs_chunking`). Otherwise the
matrix moves to the device once and is processed as a single block by the same code.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..dispatch.arrays import module_of
from ..dispatch.registry import EngineContext, EngineUnsupported
from ..kernels.chunks import RowBlocks, is_device, needs_chunking, stack_rows
from ..kernels.reductions import as_csr

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
    ``adata.layers[layer]`` or ``adata.X`` (two of them: scanpy's ValueError)."""
    if use_raw:
        from scanpy.preprocessing._qc import _choose_mtx_rep

        x = _choose_mtx_rep(adata, use_raw=True, layer=layer)  # scanpy's errors
    elif obsm is not None:
        if layer is not None:
            from scanpy.get import _get_obs_rep

            _get_obs_rep(adata, layer=layer, obsm=obsm)  # raises scanpy's error
        x = adata.obsm[obsm]
    elif layer is not None:
        if layer not in adata.layers:
            raise EngineUnsupported(f"layer {layer!r} not found in adata")
        x = adata.layers[layer]
    else:
        x = adata.X
    if x is None:
        raise EngineUnsupported("adata has no matrix to work on")
    if not (sp.issparse(x) or isinstance(x, np.ndarray) or is_device(x)):
        raise EngineUnsupported(f"matrix type {type(x).__name__} is not supported")
    if sp.issparse(x) and x.format not in ("csr", "csc"):
        raise EngineUnsupported(f"sparse format {x.format!r} is not supported (CSR/CSC are)")
    return _plain(x)


def _actual(adata) -> None:
    """Turn a view into an actual AnnData before writing (scanpy's ``view_to_actual``)."""
    if adata.is_view:
        adata._init_as_actual(adata.copy())


def _set_x(adata, x: Any, layer: str | None, obsm: str | None = None) -> None:
    _actual(adata)
    if obsm is not None:
        adata.obsm[obsm] = x
    elif layer is not None:
        adata.layers[layer] = x
    else:
        adata.X = x


class _Blocks:
    """The matrix as row blocks on the device: several blocks streamed from host in chunked
    mode, else one block (the whole matrix, moved to the device once and reused by every pass).
    """

    def __init__(self, ctx: EngineContext, x: Any, *, csr: bool = True, dense_result=False):
        self.am = ctx.am
        self.shape = x.shape
        self.chunked = bool(
            ctx.chunked
            or needs_chunking(ctx.am, x, max_nnz=ctx.max_device_nnz, dense_result=dense_result)
        )
        # cupyx sparse matrices hold floats only: integer counts travel as float64 (exact);
        # steps derive their output dtypes from the host matrix, not from the blocks.
        dtype = None
        if ctx.am.name == "cupy" and np.issubdtype(x.dtype, np.integer) and _is_sparse(x):
            dtype = np.float64
        if self.chunked:
            self._source: Iterable = RowBlocks(ctx.am, x, ctx.chunk_rows, dtype=dtype)
        else:
            xd = ctx.am.asarray(x, dtype=dtype)
            self._source = [(0, x.shape[0], as_csr(ctx.am, xd) if csr else xd)]

    def __iter__(self):
        return iter(self._source)

    def map(self, func) -> Any:
        """``func(start, stop, block)`` for every block, as one matrix: in chunked mode each
        block's result moves to host as soon as it is computed and the results are stacked
        there (the whole result never sits on the device); otherwise the single device result.
        """
        if not self.chunked:
            ((start, stop, b),) = self._source
            return func(start, stop, b)
        return stack_rows([self.am.to_host(func(*item)) for item in self])


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
