"""Peak memory per interval: host RSS of this process and CuPy memory-pool use on the GPU.

``resource.getrusage(...).ru_maxrss`` only ever grows, so it cannot give the peak of one step.
:class:`HostPeak` uses the kernel's own high-water mark ``VmHWM`` and resets it between steps
by writing ``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0, own process); where that is not
permitted it falls back to a thread sampling ``VmRSS`` every few milliseconds (which can miss
a peak shorter than the sampling period; the method used is reported).
"""

from __future__ import annotations

import threading
from pathlib import Path

from ..backends import cuda_status

__all__ = ["GpuPeak", "HostPeak"]

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` in KiB, or None where there is no procfs."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


class HostPeak:
    """Peak resident set size of this process between :meth:`reset` and :meth:`peak`.

    Use as a context manager (starts the sampling thread when the kernel's high-water mark
    cannot be reset).
    """

    def __init__(self, period_s: float = 0.005):
        self.period_s = period_s
        self.method = "VmHWM reset via /proc/self/clear_refs"
        self._max = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> HostPeak:
        if _status_kib("VmRSS") is None:
            self.method = "unavailable (no /proc/self/status)"
        elif not _reset_hwm():
            self.method = f"VmRSS sampled every {self.period_s * 1e3:.0f} ms"
            self._thread = threading.Thread(target=self._sample, name="rss-peak", daemon=True)
            self._thread.start()
        self.reset()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def available(self) -> bool:
        return not self.method.startswith("unavailable")

    def current(self) -> int | None:
        """Resident bytes now."""
        kib = _status_kib("VmRSS")
        return None if kib is None else kib * 1024

    def reset(self) -> None:
        """Start a new interval: the peak becomes the current RSS."""
        if self._thread is None:
            _reset_hwm()
        self._max = self.current() or 0

    def peak(self) -> int | None:
        """Peak resident bytes since the last :meth:`reset` (None without procfs)."""
        if not self.available:
            return None
        now = self.current() or 0
        if self._thread is None:
            hwm = _status_kib("VmHWM")
            return max(now, (hwm or 0) * 1024)
        return max(self._max, now)

    def _sample(self) -> None:
        while not self._stop.wait(self.period_s):
            now = self.current()
            if now is not None and now > self._max:
                self._max = now


class GpuPeak:
    """Peak bytes in use in CuPy's default memory pool between :meth:`reset` and :meth:`peak`.

    Exact for pool allocations: the pool's allocator is wrapped so the in-use total is read
    after every allocation (the peak always follows one). Memory that libraries allocate
    outside the pool (cuBLAS/cuSPARSE workspaces, the CUDA context) is not counted.
    Inactive (``peak() is None``) when ``enabled`` is False or CuPy is not usable.
    """

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._pool = None
        self._max = 0

    def __enter__(self) -> GpuPeak:
        if not self.enabled:
            return self

        if not cuda_status().available:
            self.enabled = False
            return self
        import cupy

        self._cupy = cupy
        self._pool = cupy.get_default_memory_pool()
        pool = self._pool

        def malloc(nbytes: int):
            mem = pool.malloc(nbytes)
            used = pool.used_bytes()
            if used > self._max:
                self._max = used
            return mem

        cupy.cuda.set_allocator(malloc)
        self.reset()
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._cupy.cuda.set_allocator(self._pool.malloc)

    def reset(self) -> None:
        if self._pool is not None:
            self._max = self._pool.used_bytes()

    def peak(self) -> int | None:
        if self._pool is None:
            return None
        return max(self._max, self._pool.used_bytes())
