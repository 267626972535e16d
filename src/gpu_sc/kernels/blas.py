"""Host BLAS on one thread inside block kernels, so a block's matrix products give the same
bits whatever runs the block.

OpenBLAS splits a ``gemm`` (and LAPACK's ``syevd``) differently with the number of threads,
and the split changes the rounding of some products: for ``(X - mean) @ V`` on a 3000 x 1000
block, ~4% of the entries differ by ~1e-13 between 1 and 2 threads. A Dask worker (1 thread),
the client under the sync scheduler (every core) and the in-memory engine would each compute
the same block a little differently (issue 19: 7 PCA values moved by 1e-8).

Inside :func:`one_thread` host BLAS runs on one thread. The setting is, in effect, one per
process (OpenBLAS's pthreads builds, those of NumPy's and SciPy's wheels, apply even their
``openblas_set_num_threads_local`` to the whole process), so it is reference-counted: the
first block to enter sets one thread and the last one to leave restores the setting, and a
block never finds its thread count changed under it by another block that finished first.

* OpenBLAS >= 0.3.27: ``openblas_set_num_threads_local(1)``, called from whichever thread
  enters (threadpoolctl's process-wide limit is ignored when called off the thread that set it
  first, threadpoolctl's documented behaviour for OpenBLAS's pthreads layer, and Dask runs
  blocks on pool threads). Every entering thread calls it, so builds where it is truly
  thread-local (OpenMP) pin each block's thread too; there, a thread other than the last to
  leave keeps its one-thread setting.
* Any other BLAS (MKL, BLIS, an older OpenBLAS): threadpoolctl's limit.

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
_limiter = None  # threadpoolctl's limit while any block is inside one_thread (other BLAS)
_state: tuple[int, list, bool] | None = None  # (modules seen, local setters, needs fallback)


def _libraries() -> tuple[list, bool]:
    """The ``openblas_set_num_threads_local`` of the loaded BLAS libraries, and whether one
    has none (then threadpoolctl's limit is used too).

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
                for name in (
                    "openblas_set_num_threads_local",
                    "scipy_openblas_set_num_threads_local",
                ):
                    fn = fn or getattr(dynlib, name, None)
            if fn is None:
                fallback = True
            else:
                setters.append(fn)
        _state = (len(sys.modules), setters, fallback)
    return _state[1], _state[2]


_saved: list = []  # the first entrant's settings, restored by the last to leave


def _enter(setters: list, fallback: bool) -> None:
    global _depth, _limiter, _saved
    from threadpoolctl import ThreadpoolController

    with _lock:
        if _depth == 0:
            _saved = [(fn, fn(1)) for fn in setters]  # each returns the previous setting
            if fallback:
                _limiter = ThreadpoolController().limit(limits=1, user_api="blas")
        else:
            for fn in setters:  # this thread too, where the setting is per thread
                fn(1)
        _depth += 1


def _leave() -> None:
    global _depth, _limiter, _saved
    with _lock:
        _depth -= 1
        if _depth == 0:
            for fn, previous in _saved:
                fn(previous)
            _saved = []
            if _limiter is not None:
                _limiter.restore_original_limits()
                _limiter = None


@contextlib.contextmanager
def one_thread(am: ArrayModule) -> Iterator[None]:
    """Host BLAS limited to one thread while any block is inside (a no-op off NumPy)."""
    if am.on_device:
        yield
        return
    setters, fallback = _libraries()
    _enter(setters, fallback)
    try:
        yield
    finally:
        _leave()
