"""Array namespaces: one object that gives kernels ``xp`` (dense) and ``sparse`` (CSR/CSC).

Every kernel in :mod:`gpu_sc.kernels` is written once against an :class:`ArrayModule`, so the
``numpy`` backend (NumPy + scipy.sparse) runs exactly the code the ``cupy`` backend
(CuPy + cupyx.scipy.sparse) runs on the GPU; only the arrays differ.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = [
    "ArrayModule",
    "array_module",
    "dask_info",
    "device_sparse_dtype",
    "is_dask",
    "is_device_array",
    "module_of",
    "to_host_array",
]


@dataclass(frozen=True)
class ArrayModule:
    """The array library a backend computes with.

    Attributes
    ----------
    name
        ``"numpy"`` or ``"cupy"``.
    xp
        Dense namespace (``numpy`` or ``cupy``).
    sparse
        Sparse namespace (``scipy.sparse`` or ``cupyx.scipy.sparse``).
    max_nnz
        Largest number of nonzeros one sparse matrix of this library can hold.
    on_device
        Arrays live in device (GPU) memory: transfers, a memory pool, asynchronous launches.
    """

    name: str
    xp: ModuleType
    sparse: ModuleType
    max_nnz: int
    on_device: bool = False

    # -- placement ---------------------------------------------------------------------------
    def asarray(self, x: Any, dtype=None) -> Any:
        """Move ``x`` (dense or sparse, host or device) into this namespace, CSR/CSC kept."""
        if not self.on_device:
            return to_host_array(x, dtype)
        return _to_cupy(self, x, dtype)

    def to_host(self, x: Any) -> Any:
        """NumPy / SciPy copy of ``x`` (no copy when it already is one)."""
        return to_host_array(x, None)

    def issparse(self, x: Any) -> bool:
        return sp.issparse(x) or (self.on_device and self.sparse.issparse(x))

    def synchronize(self) -> None:
        """Wait for queued device work, so timings measure the work and not its launch."""
        if self.on_device:
            self.xp.cuda.get_current_stream().synchronize()

    def free_memory(self) -> int | None:
        """Bytes free on the device (CuPy pool's cached blocks count as free); None on host."""
        if not self.on_device:
            return None
        free, _total = self.xp.cuda.runtime.memGetInfo()
        pool = self.xp.get_default_memory_pool()
        return int(free + pool.free_bytes())

    def release_memory(self) -> None:
        """Return cached blocks of CuPy's memory pool to the driver between steps."""
        if self.on_device:
            self.xp.get_default_memory_pool().free_all_blocks()
            self.xp.get_default_pinned_memory_pool().free_all_blocks()

    def sparse_linalg(self) -> ModuleType:
        """``scipy.sparse.linalg`` or ``cupyx.scipy.sparse.linalg`` (``eigsh``, ``svds``)."""
        return importlib.import_module(self.sparse.__name__ + ".linalg")

    def random_state(self, seed: int):
        """A seeded generator in this namespace (``xp.random.RandomState``)."""
        return self.xp.random.RandomState(seed)


def is_dask(x: Any) -> bool:
    """True for a ``dask.array.Array`` (checked by its class: importing dask is not needed)."""
    return type(x).__module__.startswith("dask.array") and hasattr(x, "chunks")


def is_device_array(x: Any) -> bool:
    """True for CuPy / cupyx arrays, subclasses included.

    The class's own module is not enough: AnnData wraps views of device arrays in
    subclasses defined in ``anndata._core.views`` (``CupyArrayView``,
    ``CupySparseCSRView``, ``CupySparseCSCView``), which must count as device arrays too.
    """
    return any(c.__module__.startswith("cupy") for c in type(x).__mro__)


def to_host_array(x: Any, dtype) -> Any:
    if hasattr(x, "get") and is_device_array(x):
        x = x.get()  # cupy dense -> numpy, cupyx sparse -> scipy sparse
    if sp.issparse(x):
        return x.astype(dtype) if dtype is not None and x.dtype != dtype else x
    return np.asarray(x, dtype=dtype)


def device_sparse_dtype(dtype) -> np.dtype:
    """The dtype a host sparse matrix of ``dtype`` gets on the device.

    cupyx.scipy.sparse stores only bool, float32, float64, complex64 and complex128 values:
    integer counts travel as float64 (exact below 2**53) and float16 as float32, instead of
    failing in cupyx's constructor with a ValueError.
    """
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        return np.dtype(np.float64)
    if dtype == np.float16:
        return np.dtype(np.float32)
    return dtype


def _to_cupy(am: ArrayModule, x: Any, dtype) -> Any:
    cp, csp = am.xp, am.sparse
    if csp.issparse(x):
        return x.astype(dtype) if dtype is not None and x.dtype != dtype else x
    if sp.issparse(x):
        if dtype is None:
            dtype = device_sparse_dtype(x.dtype)
        if x.nnz > am.max_nnz:
            raise MemoryError(
                f"sparse matrix with {x.nnz} nonzeros exceeds CuPy's limit of {am.max_nnz}; "
                "process it in row chunks (gpu_sc.settings.chunk_rows)"
            )
        fmt = x.format if x.format in ("csr", "csc") else "csr"
        x = x.asformat(fmt)
        if x.dtype != dtype:
            x = x.astype(dtype)
        return csp.csr_matrix(x) if fmt == "csr" else csp.csc_matrix(x)
    return cp.asarray(x, dtype=dtype)


def _numpy_module() -> ArrayModule:
    return ArrayModule("numpy", np, sp, max_nnz=np.iinfo(np.int64).max)


def _cupy_module() -> ArrayModule:
    import cupy
    import cupyx.scipy.sparse

    return ArrayModule("cupy", cupy, cupyx.scipy.sparse, max_nnz=2**31 - 1, on_device=True)


#: The array libraries the engine computes with, by the name of their Python module.
_LIBRARIES: dict[str, Callable[[], ArrayModule]] = {"numpy": _numpy_module, "cupy": _cupy_module}


@functools.cache
def array_module(name: str) -> ArrayModule:
    """The :class:`ArrayModule` of an array library (``"numpy"`` or ``"cupy"``)."""
    make = _LIBRARIES.get(name)
    if make is None:
        raise ValueError(f"no array module for {name!r}; array libraries: {', '.join(_LIBRARIES)}")
    return make()


def array_module_for(xp: Any) -> ArrayModule:
    """The :class:`ArrayModule` whose namespace is the module ``xp`` (``numpy``, ``cupy`` or
    the CuPy double, which calls itself ``cupy``)."""
    return array_module(xp.__name__)


def module_of(x: Any) -> ArrayModule:
    """The :class:`ArrayModule` that owns array ``x``."""
    if is_device_array(x):
        return array_module("cupy")
    return array_module("numpy")


def dask_info(x=None) -> dict[str, Any]:
    """Where the Dask work runs: ``scheduler`` (a ``distributed`` address, or the local
    scheduler's name), ``n_workers`` and, for a matrix ``x``, ``chunk_rows`` (largest block)
    and ``n_blocks``."""
    import dask

    info: dict[str, Any] = {}
    name = dask.config.get("scheduler", None)
    client = None
    if name in (None, "dask.distributed", "distributed"):  # a Client sets "dask.distributed"
        try:
            from distributed import get_client

            client = get_client()
        except (ImportError, ValueError):
            client = None
    if client is not None:
        # a connected client's scheduler is set (its stubs allow None)
        info["scheduler"] = f"distributed {client.scheduler.address}"  # type: ignore[union-attr]
        info["n_workers"] = len(client.scheduler_info().get("workers", {}))
    else:
        name = name or "threads"
        info["scheduler"] = f"local {name}"
        info["n_workers"] = 1 if name in ("sync", "single-threaded") else dask.system.CPU_COUNT
    if x is not None and is_dask(x):
        info["chunk_rows"] = int(max(x.chunks[0])) if x.chunks[0] else 0
        info["n_blocks"] = len(x.chunks[0])
    return info
