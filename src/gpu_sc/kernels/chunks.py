"""Row-block streaming of matrices that should not (or cannot) sit whole on the device.

A step in chunked mode reads its matrix from host in blocks of ``chunk_rows`` rows, moves each
block to the device with :meth:`ArrayModule.asarray`, runs the same kernels it runs on the
whole matrix, and brings per-block results back to host, where they are concatenated (per-row
results) or added up (per-column accumulators, in float64).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..dispatch.arrays import ArrayModule
from ..dispatch.arrays import is_device_array as is_device  # AnnData's device views included

__all__ = ["RowBlocks", "is_device", "needs_chunking", "stack_rows"]


def _nbytes(x: Any) -> int:
    if sp.issparse(x):
        return int(x.data.nbytes + x.indices.nbytes + x.indptr.nbytes)
    return int(np.asarray(x).nbytes) if not hasattr(x, "nbytes") else int(x.nbytes)


def needs_chunking(
    am: ArrayModule,
    x: Any,
    *,
    max_nnz: int = 2**31 - 1,
    working_copies: int = 3,
    dense_result: bool = False,
) -> bool:
    """Whether host matrix ``x`` must be streamed rather than moved whole to the device.

    True when it has more nonzeros than ``max_nnz`` (the engine context's
    ``max_device_nnz``, from :attr:`gpu_sc.settings.max_device_nnz`) or the array library's
    limit (CuPy's int32 index) or when ``working_copies`` times its size (plus a float64 dense copy when
    the step densifies, ``dense_result``) exceeds the device's free memory. A matrix already
    on the device is never chunked.
    """
    if is_device(x):
        return False
    if sp.issparse(x) and x.nnz > min(max_nnz, am.max_nnz):
        return True
    free = am.free_memory()
    if free is None:
        return False
    need = working_copies * _nbytes(x)
    if dense_result:
        need += 8 * x.shape[0] * x.shape[1]
    return need > free


class RowBlocks:
    """Host matrix ``x`` as consecutive row blocks of at most ``chunk_rows`` rows.

    CSC input is converted to CSR once (row slices of CSC are expensive), so blocks are CSR
    or dense. Iterating yields ``(start, stop, block)`` with ``block`` on the device of ``am``
    (cast to ``dtype`` when given).
    """

    def __init__(self, am: ArrayModule, x: Any, chunk_rows: int, dtype=None):
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be a positive number of rows, got {chunk_rows}")
        if is_device(x):
            x = am.to_host(x)
        if sp.issparse(x) and x.format != "csr":
            x = x.tocsr()
        self.am = am
        self.x = x
        self.chunk_rows = int(chunk_rows)
        self.shape = x.shape
        self.dtype = dtype

    def __iter__(self) -> Iterator[tuple[int, int, Any]]:
        n = self.shape[0]
        for start in range(0, n, self.chunk_rows):
            stop = min(start + self.chunk_rows, n)
            yield start, stop, self.am.asarray(self.x[start:stop], dtype=self.dtype)


def stack_rows(blocks: list[Any]) -> Any:
    """Concatenate host row blocks (all sparse CSR or all dense) into one matrix."""
    if not blocks:
        raise ValueError("no row blocks to stack")
    if sp.issparse(blocks[0]):
        return sp.vstack(blocks, format="csr")
    return np.concatenate(blocks, axis=0)
