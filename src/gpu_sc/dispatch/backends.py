"""Backend names, aliases and the cached CUDA probe behind ``backend="auto"``."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

__all__ = ["BACKENDS", "CudaStatus", "canonical_backend_name", "cuda_status", "resolve_backend"]

#: Backends by what executes: scanpy itself; gpu_sc's engine on NumPy/SciPy; the engine on CuPy.
BACKENDS = ("scanpy", "numpy", "cupy")
ENGINE_BACKENDS = ("numpy", "cupy")
_ALIASES = {"cpu": "scanpy", "gpu": "cupy", "cuda": "cupy"}


def canonical_backend_name(name: str, *, allow_auto: bool = True) -> str:
    """Map a user-facing backend name (or alias) to one of :data:`BACKENDS` or ``"auto"``."""
    if not isinstance(name, str):
        raise TypeError(f"backend must be a string, got {type(name).__name__}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key in BACKENDS or (allow_auto and key == "auto"):
        return key
    valid = [*BACKENDS, *_ALIASES, *(["auto"] if allow_auto else [])]
    raise ValueError(f"unknown backend {name!r}; choose one of {valid}")


@dataclass(frozen=True)
class CudaStatus:
    """Outcome of the CUDA probe: is the ``cupy`` backend usable here, and if not, why."""

    available: bool
    reason: str
    device_name: str | None = None
    cupy_version: str | None = None


@functools.cache
def cuda_status() -> CudaStatus:
    """Probe once per process whether CuPy imports and a CUDA device runs a trivial kernel.

    Never raises: every failure (no CuPy, no driver, no device, a broken toolkit) becomes
    ``available=False`` with the reason. ``GPU_SC_DISABLE_CUDA=1`` forces the CPU path.
    """
    if os.environ.get("GPU_SC_DISABLE_CUDA", "").strip() not in ("", "0"):
        return CudaStatus(False, "disabled by GPU_SC_DISABLE_CUDA")
    try:
        import cupy
    except Exception as exc:  # ImportError, or a CUDA library that fails to load
        return CudaStatus(False, f"CuPy is not importable ({type(exc).__name__}: {exc})")
    try:
        n = cupy.cuda.runtime.getDeviceCount()
        if n < 1:
            return CudaStatus(False, "no CUDA device found", cupy_version=cupy.__version__)
        # A trivial kernel: compilation and launch both have to work, not only the driver.
        value = int((cupy.arange(4, dtype=cupy.int32) * 2).sum().get())
        if value != 12:
            return CudaStatus(False, f"trivial CUDA kernel returned {value}, expected 12")
        # cuBLAS and cuSPARSE load lazily, on the first product: a missing libcublasLt or
        # libcusparse (ImportError/OSError) must show here, not in the middle of a step.
        import cupyx.scipy.sparse

        ones = cupy.ones((2, 2), dtype=cupy.float32)
        blas = float((ones @ ones).sum().get())
        spmv = float((cupyx.scipy.sparse.csr_matrix(ones) @ ones[0]).sum().get())
        if (blas, spmv) != (8.0, 4.0):
            return CudaStatus(False, f"cuBLAS/cuSPARSE probe returned {(blas, spmv)}")
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        return CudaStatus(True, "CuPy and a CUDA device answered", name, cupy.__version__)
    except Exception as exc:  # ImportError/OSError: a CUDA library (libcublasLt ...) missing
        return CudaStatus(
            False, f"CUDA probe failed ({type(exc).__name__}: {exc})", cupy_version=cupy.__version__
        )


def resolve_backend(name: str | None = None) -> tuple[str, str]:
    """Resolve a requested backend (``None`` = the global setting) to a concrete one.

    Returns
    -------
    ``(backend, why)``: ``"auto"`` becomes ``"cupy"`` when :func:`cuda_status` is available,
    else ``"scanpy"``; ``why`` says which and for what reason. An explicit ``"cupy"`` is
    returned even without CUDA; the step then records a fallback (never a silent switch).
    """
    from .._settings import settings

    requested = canonical_backend_name(settings.backend if name is None else name)
    if requested != "auto":
        return requested, f"requested {requested!r}"
    status = cuda_status()
    if status.available:
        return "cupy", f"auto: CUDA device {status.device_name!r} usable"
    return "scanpy", f"auto: no usable CUDA ({status.reason}); using scanpy"
