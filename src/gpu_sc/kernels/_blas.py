"""Host BLAS on one thread inside block kernels, so a block's matrix products give the same
bits whatever runs the block.

OpenBLAS splits a ``gemm`` (and LAPACK's ``syevd``) differently with the number of threads,
and the split changes the rounding of some products: for ``(X - mean) @ V`` on a 3000 x 1000
block, ~4% of the entries differ by ~1e-13 between 1 and 2 threads. A Dask worker (1 thread),
the client under the sync scheduler (every core) and the in-memory engine would each compute
the same block a little differently (issue 19: 7 PCA values moved by 1e-8).

Inside :func:`one_thread` host BLAS runs on one thread, for the calling thread only:

* OpenBLAS >= 0.3.27 (NumPy's and SciPy's wheels) has a thread-local setting,
  ``openblas_set_num_threads_local``; it is set to 1 and restored for the calling thread, so
  Dask's threads never race on it. (The process-wide setting that threadpoolctl changes is
  ignored there when called off the thread that first set it: threadpoolctl's documented
  behaviour for OpenBLAS's pthreads layer.)
* Any other BLAS (MKL, BLIS, an older OpenBLAS) gets threadpoolctl's process-wide limit,
  reference-counted: set by the first block to enter, restored when the last one leaves.

On CuPy the context does nothing (the device products are deterministic).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator

from ..dispatch.arrays import ArrayModule

__all__ = ["one_thread"]

_lock = threading.Lock()
_depth = 0
_limiter = None  # threadpoolctl's limit while any block is inside one_thread (fallback)
_state: tuple[int, list, bool] | None = None  # (modules seen, local setters, needs fallback)


def _libraries() -> tuple[list, bool]:
    """The thread-local setters of the loaded BLAS libraries, and whether one has none.

    Rebuilt when modules were imported since the last call (5 ms; an import is what loads
    another BLAS, e.g. SciPy's own OpenBLAS)."""
    global _state
    if _state is None or _state[0] != len(sys.modules):
        from threadpoolctl import ThreadpoolController

        setters, fallback = [], False
        for lib in ThreadpoolController().select(user_api="blas").lib_controllers:
            fn = None
            dynlib = getattr(lib, "dynlib", None) or getattr(lib, "_dynlib", None)
            if lib.internal_api == "openblas" and dynlib is not None:
                for name in ("openblas_set_num_threads_local",
                             "scipy_openblas_set_num_threads_local"):  # fmt: skip
                    fn = fn or getattr(dynlib, name, None)
            if fn is None:
                fallback = True
            else:
                setters.append(fn)
        _state = (len(sys.modules), setters, fallback)
    return _state[1], _state[2]


def _enter_global() -> None:
    global _depth, _limiter
    from threadpoolctl import ThreadpoolController

    with _lock:
        if _depth == 0:
            _limiter = ThreadpoolController().limit(limits=1, user_api="blas")
        _depth += 1


def _leave_global() -> None:
    global _depth, _limiter
    with _lock:
        _depth -= 1
        if _depth == 0 and _limiter is not None:
            _limiter.restore_original_limits()
            _limiter = None


@contextlib.contextmanager
def one_thread(am: ArrayModule) -> Iterator[None]:
    """Host BLAS limited to one thread for the calling thread, for the duration (a no-op off
    NumPy)."""
    if am.name != "numpy":
        yield
        return
    setters, fallback = _libraries()
    previous = [fn(1) for fn in setters]  # each returns the thread's previous setting
    if fallback:
        _enter_global()
    try:
        yield
    finally:
        if fallback:
            _leave_global()
        for fn, prev in zip(setters, previous, strict=True):
            fn(prev)
