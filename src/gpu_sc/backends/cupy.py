"""The ``cupy`` backend: gpu_sc's engine on CuPy and cupyx.scipy.sparse (a CUDA GPU).

With it, the cached CUDA probe that says whether it can run here.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from .base import Backend

__all__ = ["CudaStatus", "CupyBackend", "cuda_status"]


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


class CupyBackend(Backend):
    """gpu_sc's engine on CuPy; usable where :func:`cuda_status` says so."""

    name = "cupy"
    aliases = ("gpu", "cuda")
    description = "gpu_sc's engine on CuPy/cupyx (a CUDA GPU)"
    array_module_name = "cupy"
    is_gpu = True
    device_resident = True
    default_precision = "fast"
    auto_preferred = True
    hardware = "CUDA"

    def available(self) -> tuple[bool, str]:
        """Answer from the cached CUDA probe."""
        status = cuda_status()
        return status.available, status.reason

    def device_name(self) -> str | None:
        """Name the CUDA device."""
        return cuda_status().device_name
