"""Block-wise building blocks of the Dask path: row blocks, fixed-order tree sums, lazy maps
and row/column subsets that keep the block layout, and one compute entry point.

A matrix here is a 2-D ``dask.array.Array`` chunked along rows only (all columns in every
block); its blocks are ``scipy.sparse.csr_matrix`` / ``numpy.ndarray`` on CPU workers, or
``cupyx.scipy.sparse.csr_matrix`` / ``cupy.ndarray`` after :func:`to_array_module`. Every task
finds the array module of its block (:func:`gpu_sc.dispatch.arrays.module_of`) and runs the
array-generic kernels of :mod:`gpu_sc.kernels` on it; per-block accumulators come back to
host as float64 / int64 NumPy and are added by :func:`tree_sum` in a fixed order, so a result
does not depend on the number of workers or on which worker ran which block.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..dispatch.arrays import array_module, dask_info, device_sparse_dtype, is_dask, module_of
from .executor import add, concat_rows, to_host

__all__ = [
    "SPLIT_EVERY",
    "DaskRows",
    "compute",
    "dask_info",
    "is_dask",
    "map_rows",
    "row_blocks",
    "row_offsets",
    "subset_cols",
    "subset_rows",
    "to_array_module",
    "to_host",
    "tree_sum",
]

#: Fan-in of the tree reductions: partial results are added in groups of this many, in block
#: order, level by level (fixed, so the float64 sums are the same on any number of workers).
SPLIT_EVERY = 8

#: Called with the list of objects every :func:`compute` brings back to the client (tests
#: use it to check that only small results ever reach the client).
_fetch_hooks: list[Callable[[Sequence[Any]], None]] = []


def _one_column_block(x):
    if len(x.chunks) != 2:
        raise ValueError(f"expected a 2-D dask array, got {x.ndim} dimensions")
    if len(x.chunks[1]) != 1:
        x = x.rechunk({1: -1})
    return x


def row_offsets(x) -> np.ndarray:
    """First row of each block, and the number of rows at the end (``len(blocks) + 1``)."""
    return np.concatenate([[0], np.cumsum(x.chunks[0])]).astype(np.int64)


def row_blocks(x) -> list:
    """The row blocks of ``x`` as ``dask.delayed`` objects, in row order."""
    return list(_one_column_block(x).to_delayed()[:, 0])


def tree_sum(parts: list, split_every: int = SPLIT_EVERY, combine: Callable | None = None):
    """Delayed sum of delayed ``parts`` (arrays, or tuples / dicts of them; booleans are
    and-ed), added in groups of ``split_every`` in list order, level by level.
    ``combine(*parts)`` replaces the addition when given (it must be associative)."""
    from dask import delayed

    if not parts:
        raise ValueError("tree_sum of no parts: the matrix has no row blocks")
    add_ = delayed(add if combine is None else combine, pure=True)
    while len(parts) > 1:
        parts = [add_(*parts[i : i + split_every]) for i in range(0, len(parts), split_every)]
    return parts[0]


def compute(*objs: Any) -> tuple:
    """``dask.compute`` on the current scheduler (a ``distributed.Client`` when one is the
    default), results on host. One call shares the block reads of all ``objs``.

    Each result is moved to host by a last task on the worker that made it, so device
    (CuPy) results travel as NumPy and the client needs no GPU.
    """
    import dask
    from dask import delayed

    host = delayed(to_host, pure=True)
    out = tuple(to_host(o) for o in dask.compute(*[host(o) for o in objs]))
    for hook in _fetch_hooks:
        hook(out)
    return out


def _meta_like(x, *, sparse: bool, dtype) -> Any:
    """An empty block of the array library of ``x``'s blocks (sparse CSR or dense)."""
    am = module_of(x._meta) if x._meta is not None else array_module("numpy")
    if sparse:
        return am.sparse.csr_matrix((0, 0), dtype=dtype)
    return am.xp.empty((0, 0), dtype=dtype)


def map_rows(func: Callable, x, *args, sparse: bool, dtype, n_cols: int | None = None, **kw):
    """Lazy ``func(block, *args, **kw)`` on every row block (row counts kept; ``n_cols``
    columns, default unchanged). ``args`` are small host values, shipped with each task."""
    x = _one_column_block(x)
    chunks = (x.chunks[0], (x.shape[1] if n_cols is None else n_cols,))
    return x.map_blocks(
        func,
        *args,
        dtype=dtype,
        chunks=chunks,
        meta=_meta_like(x, sparse=sparse, dtype=dtype),
        **kw,
    )


def _take_rows(block, keep):
    idx = np.flatnonzero(np.asarray(keep))
    if module_of(block).on_device:
        idx = module_of(block).xp.asarray(idx)
    return block[idx]


def subset_rows(x, keep: np.ndarray):
    """Lazy ``x[keep]`` for a boolean row mask, block by block (block ``i`` keeps its own
    rows, so the layout follows the input's and no block grows)."""
    import dask.array as da

    x = _one_column_block(x)
    keep = np.asarray(keep, dtype=bool)
    if keep.shape != (x.shape[0],):
        raise ValueError(f"row mask of length {keep.shape} for a matrix of {x.shape[0]} rows")
    off = row_offsets(x)
    new = tuple(int(keep[a:b].sum()) for a, b in zip(off[:-1], off[1:], strict=True))
    mask = da.from_array(keep, chunks=(x.chunks[0],))
    return da.blockwise(
        _take_rows,
        "ij",
        x,
        "ij",
        mask,
        "i",
        dtype=x.dtype,
        adjust_chunks={"i": new},
        meta=x._meta,
    )


def _take_cols(block, idx):
    am = module_of(block)
    return block[:, am.xp.asarray(idx) if am.on_device else idx]


def subset_cols(x, keep: np.ndarray):
    """Lazy ``x[:, keep]`` for a boolean column mask (row blocks unchanged)."""
    x = _one_column_block(x)
    keep = np.asarray(keep, dtype=bool)
    if keep.shape != (x.shape[1],):
        raise ValueError(f"column mask of length {keep.shape} for a matrix of {x.shape[1]} columns")
    idx = np.flatnonzero(keep)
    sparse = sp.issparse(x._meta) or hasattr(x._meta, "indptr")
    return map_rows(_take_cols, x, idx, sparse=sparse, dtype=x.dtype, n_cols=idx.size)


def _to_module(block, name: str):
    return array_module(name).asarray(block)  # host integer CSR -> float64 on the device


def to_array_module(x, name: str):
    """Lazy copy of ``x`` whose blocks live in array module ``name`` (``"numpy"``: host;
    ``"cupy"``: the worker's GPU; integer sparse counts become float64 there, as in the
    in-memory engine)."""
    x = _one_column_block(x)
    current = module_of(x._meta).name if x._meta is not None else "numpy"
    if current == name:
        return x
    sparse = sp.issparse(x._meta) or hasattr(x._meta, "indptr")
    am = array_module(name)
    dtype = device_sparse_dtype(x.dtype) if (am.on_device and sparse) else x.dtype
    meta = am.sparse.csr_matrix((0, 0), dtype=dtype) if sparse else am.xp.empty((0, 0), dtype)
    return x.map_blocks(_to_module, name, dtype=dtype, meta=meta)


def _first(t):
    return t[0]


def _second(t):
    return t[1]


def _apply(fn: Callable, block, rows: tuple, args: tuple):
    return fn(module_of(block), block, *rows, *args)


def _apply_rows(block, *rows_and_args, fn: Callable, n_rows: int):
    rows, args = rows_and_args[:n_rows], rows_and_args[n_rows:]
    return fn(module_of(block), block, *rows, *args)


class DaskRows:
    """The :class:`gpu_sc.engine.executor.RowExecutor` of a Dask matrix: block functions
    run as tasks on the workers (on blocks moved to array module ``name``), reductions are
    fixed-order :func:`tree_sum` additions, per-row results come back block by block, matrix results stay lazy.
    Client-side computations on the reduced results run in NumPy (``am``)."""

    lazy = True

    def __init__(self, x, name: str | None = None):
        x = _one_column_block(x)
        if name is not None:
            x = to_array_module(x, name)
        self.x = x
        self.am = array_module("numpy")
        self.shape = x.shape
        self.dtype = np.dtype(x.dtype)
        self.sparse = sp.issparse(x._meta) or hasattr(x._meta, "indptr")

    def _tasks(self, fn, args, rows) -> list:
        from dask import delayed

        off = row_offsets(self.x)
        args = delayed(tuple(args)) if args else ()  # one copy in the graph, not one a block
        task = delayed(_apply, pure=True)
        return [
            task(fn, b, tuple(None if r is None else r[off[i] : off[i + 1]] for r in rows), args)
            for i, b in enumerate(row_blocks(self.x))
        ]

    def map_reduce(self, fn, *args, rows=(), combine=None):
        (out,) = compute(tree_sum(self._tasks(fn, args, rows), combine=combine))
        return out

    def map_rows(self, fn, *args, rows=()):
        return concat_rows(compute(*self._tasks(fn, args, rows)))

    def map_rows_reduce(self, fn, *args, rows=(), combine=None):
        from dask import delayed

        parts = self._tasks(fn, args, rows)
        per_row = [delayed(_first, pure=True)(p) for p in parts]
        total = tree_sum([delayed(_second, pure=True)(p) for p in parts], combine=combine)
        *per_row, total = compute(*per_row, total)
        return concat_rows(per_row), total

    def map_matrix(self, fn, *args, rows=(), dtype, sparse: bool):
        import dask.array as da

        x = self.x
        meta = _meta_like(x, sparse=sparse, dtype=dtype)
        if not rows:
            return x.map_blocks(_apply_rows, *args, fn=fn, n_rows=0, dtype=dtype, meta=meta)
        pairs: list = [x, "ij"]
        for r in rows:
            if r is None:
                pairs += [None, None]
                continue
            r = np.asarray(r)
            if r.ndim == 1:
                pairs += [da.from_array(r, chunks=(x.chunks[0],)), "i"]
            else:
                pairs += [da.from_array(r, chunks=(x.chunks[0], r.shape[1])), "ik"]
        for a in args:
            pairs += [a, None]
        return da.blockwise(
            _apply_rows,
            "ij",
            *pairs,
            fn=fn,
            n_rows=len(rows),
            concatenate=True,
            dtype=dtype,
            meta=meta,
        )
