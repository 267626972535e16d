"""One row-block executor for the steps that reduce over cells, in memory and on Dask.

A step that reads its matrix row block by row block is written once, as block functions
``fn(am, block, *rows, *args)`` (``am``: the array module of the block; ``rows``: this block's
slices of host per-row arrays; ``args``: small host values, the same for every block) and, for
reductions, an associative ``combine``. An executor runs them over the matrix's row blocks:

- :class:`InMemoryRows`: a host or device matrix, as one device block or, chunked, as row
  blocks streamed from host (:class:`gpu_sc.kernels.chunks.RowBlocks`); partial results are
  folded in block order as they come;
- :class:`gpu_sc.engine.dask_rows.DaskRows`: a Dask array of row blocks; the block functions are
  tasks, partial results are added by the fixed-order tree of
  :func:`gpu_sc.engine.dask_rows.tree_sum` (same bits on any number of workers), matrix results
  stay lazy.

Both give the same interface (:class:`RowExecutor`); :func:`executor` picks one for a matrix.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp

from ..dispatch.arrays import ArrayModule, module_of
from ..dispatch.registry import EngineContext
from ..kernels.chunks import RowBlocks, is_device, needs_chunking, stack_rows
from ..kernels.reductions import as_csr

__all__ = ["InMemoryRows", "RowExecutor", "add", "concat_rows", "to_host"]


class RowExecutor(Protocol):
    """What a step asks of its matrix's row blocks (see the module docstring)."""

    #: array module of the client-side computations on the reduced results
    am: ArrayModule
    shape: tuple[int, int]
    #: what steps derive their output dtypes from: in memory the host matrix's dtype (integer
    #: counts travel to cupyx as float64 regardless); on Dask the blocks' dtype after their
    #: move to the device (integer sparse counts become float64 there)
    dtype: np.dtype
    sparse: bool
    #: matrix results are lazy (Dask) rather than computed
    lazy: bool

    def map_reduce(
        self, fn: Callable, *args: Any, rows: Sequence = (), combine: Callable | None = None
    ) -> Any:
        """``combine`` (default :func:`add`) of ``fn`` over all blocks, on host. A ``None``
        in ``rows`` is passed as ``None`` to every block."""

    def map_rows(self, fn: Callable, *args: Any, rows: Sequence = ()) -> Any:
        """``fn``'s per-row results of all blocks, concatenated on host (:func:`concat_rows`)."""

    def map_rows_reduce(
        self, fn: Callable, *args: Any, rows: Sequence = (), combine: Callable | None = None
    ) -> tuple[Any, Any]:
        """One pass of ``fn`` returning ``(per-row results, partial)``: both, on host."""

    def map_matrix(
        self, fn: Callable, *args: Any, rows: Sequence = (), dtype: Any, sparse: bool
    ) -> Any:
        """The matrix of ``fn``'s row blocks (``dtype``, ``sparse``: its type, for Dask)."""


def to_host(obj: Any) -> Any:
    """NumPy / SciPy copy of a (nested tuple/list/dict of) block result(s)."""
    if isinstance(obj, dict):
        return {k: to_host(v) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_host(v) for v in obj)
    if obj is None or isinstance(obj, (int, float, bool, np.generic)):
        return obj
    return module_of(obj).to_host(obj)


def _add2(a: Any, b: Any) -> Any:
    if isinstance(a, dict):
        return {k: _add2(a[k], b[k]) for k in a}
    if isinstance(a, (tuple, list)):
        return type(a)(_add2(u, v) for u, v in zip(a, b, strict=True))
    if a is None:
        return None
    if isinstance(a, (bool, np.bool_)):
        return a and b
    return a + b


def add(*parts: Any) -> Any:
    """The default combine: arrays (or tuples / lists / dicts of them) added in order,
    booleans and-ed."""
    return functools.reduce(_add2, parts)


def concat_rows(parts: Sequence) -> Any:
    """Per-row block results (arrays, or tuples / lists / dicts of them) concatenated
    along rows, leaf by leaf."""
    first = parts[0]
    if first is None:
        return None
    if isinstance(first, dict):
        return {k: concat_rows([p[k] for p in parts]) for k in first}
    if isinstance(first, (tuple, list)):
        return type(first)(concat_rows([p[i] for p in parts]) for i in range(len(first)))
    if sp.issparse(first):
        return stack_rows(list(parts))
    return np.concatenate(parts, axis=0)


def _is_sparse(x: Any) -> bool:
    return sp.issparse(x) or (is_device(x) and hasattr(x, "indptr"))


class InMemoryRows:
    """The matrix as row blocks on the device: several blocks streamed from host in chunked
    mode, else one block (the whole matrix, moved to the device once and reused by every pass).

    Iterating yields ``(start, stop, block)``; :meth:`map_reduce`, :meth:`map_rows` and
    :meth:`map_matrix` are the :class:`RowExecutor` interface.
    """

    lazy = False

    def __init__(self, ctx: EngineContext, x: Any, *, csr: bool = True, dense_result=False):
        self.am = ctx.am
        self.shape = x.shape
        self.dtype = np.dtype(x.dtype)
        self.sparse = _is_sparse(x)
        self.chunked = bool(
            ctx.chunked
            or needs_chunking(ctx.am, x, max_nnz=ctx.max_device_nnz, dense_result=dense_result)
        )
        # cupyx sparse matrices hold floats only: integer counts travel as float64 (exact);
        # steps derive their output dtypes from the host matrix, not from the blocks.
        dtype = None
        if ctx.am.on_device and np.issubdtype(x.dtype, np.integer) and self.sparse:
            dtype = np.float64
        if self.chunked:
            self._source: Iterable = RowBlocks(ctx.am, x, ctx.chunk_rows, dtype=dtype)
        else:
            xd = ctx.am.asarray(x, dtype=dtype)
            self._source = [(0, x.shape[0], as_csr(ctx.am, xd) if csr else xd)]

    def __iter__(self):
        return iter(self._source)

    def _calls(self, fn, args, rows):
        for start, stop, b in self:
            yield (
                start,
                stop,
                fn(self.am, b, *(None if r is None else r[start:stop] for r in rows), *args),
            )

    def map_reduce(self, fn, *args, rows=(), combine=None):
        combine = add if combine is None else combine
        acc = None
        for _, _, part in self._calls(fn, args, rows):
            part = to_host(part)
            acc = part if acc is None else combine(acc, part)
        return acc

    def map_rows(self, fn, *args, rows=()):
        return concat_rows([to_host(part) for _, _, part in self._calls(fn, args, rows)])

    def map_rows_reduce(self, fn, *args, rows=(), combine=None):
        combine = add if combine is None else combine
        per_row, acc = [], None
        for _, _, (r, part) in self._calls(fn, args, rows):
            per_row.append(to_host(r))
            part = to_host(part)
            acc = part if acc is None else combine(acc, part)
        return concat_rows(per_row), acc

    def map_matrix(self, fn, *args, rows=(), dtype=None, sparse=None):
        """One matrix: in chunked mode each block's result moves to host as soon as it is
        computed and the results are stacked there (the whole result never sits on the
        device); otherwise the single device result."""
        if not self.chunked:
            ((_, _, out),) = self._calls(fn, args, rows)
            return out
        return stack_rows([self.am.to_host(out) for _, _, out in self._calls(fn, args, rows)])
