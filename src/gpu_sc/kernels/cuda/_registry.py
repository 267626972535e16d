"""The registry of fused kernels and whether numba-cuda can run them here."""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import pkgutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ...dispatch.arrays import array_module_for
from ._spec import KernelSpec

__all__ = [
    "NumbaCudaStatus",
    "jitted",
    "launch_stream",
    "load_kernels",
    "numba_cuda_status",
    "registry",
    "simulate",
    "simulating",
]

_PACKAGE = __name__.rpartition(".")[0]


# -- the registry -------------------------------------------------------------------------------


@functools.cache
def registry() -> dict[str, KernelSpec]:
    """Every kernel of this package: the ``SPEC`` of each public module, by name."""
    specs: dict[str, KernelSpec] = {}
    for info in pkgutil.iter_modules(importlib.import_module(_PACKAGE).__path__):
        if info.name.startswith("_") or info.name in ("compile", "timing"):
            continue
        spec = getattr(importlib.import_module(f"{_PACKAGE}.{info.name}"), "SPEC", None)
        if isinstance(spec, KernelSpec):
            if spec.name in specs:
                raise RuntimeError(f"two kernels named {spec.name!r}")
            specs[spec.name] = spec
    return specs


# -- is the fused path usable? ----------------------------------------------------------------


@dataclass(frozen=True)
class NumbaCudaStatus:
    importable: bool  # numba.cuda imports (simulator or not)
    simulator: bool  # NUMBA_ENABLE_CUDASIM is on: kernels run on the CPU, on NumPy arrays
    device: bool  # a real CUDA device answered numba-cuda
    reason: str = ""

    @property
    def fused(self) -> bool:
        """Whether kernels can run on CuPy arrays (real device, not the simulator)."""
        return self.importable and self.device and not self.simulator


@functools.cache
def numba_cuda_status() -> NumbaCudaStatus:
    """Whether numba-cuda is importable, in simulator mode, and sees a device (cached)."""
    try:
        from numba import cuda
    except Exception as exc:  # numba-cuda absent or broken
        return NumbaCudaStatus(False, False, False, f"numba.cuda not importable: {exc}")
    sim = bool(getattr(getattr(cuda, "config", None), "ENABLE_CUDASIM", False)) or (
        os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")
    )
    if sim:
        return NumbaCudaStatus(True, True, False, "numba-cuda's simulator is on")
    try:
        ok = bool(cuda.is_available())
    except Exception as exc:
        return NumbaCudaStatus(True, False, False, f"numba-cuda sees no device: {exc}")
    return NumbaCudaStatus(True, False, ok, "" if ok else "numba-cuda sees no CUDA device")


@functools.cache
def jitted(name: str) -> dict[str, Any]:
    return registry()[name].kernels()


def load_kernels() -> dict[str, dict[str, Any]]:
    """Every registered kernel's jitted functions (imports numba.cuda)."""
    return {name: jitted(name) for name in registry()}


def launch_stream(xp):
    """numba-cuda's view of CuPy's current stream (so kernels queue behind CuPy's work), or
    None for NumPy arrays (the simulator)."""
    if not array_module_for(xp).on_device:
        return None
    from numba import cuda

    return cuda.external_stream(xp.cuda.get_current_stream().ptr)


def grid(n: int, block: int) -> int:
    """Blocks of ``block`` threads covering ``n`` items (at least one)."""
    return max(1, -(-int(n) // block))


_SIMULATE: list[bool] = [False]


@contextlib.contextmanager
def simulate() -> Iterator[None]:
    """Within the block, :func:`run_kernel` with the numpy module runs the fused kernels on
    numba-cuda's simulator (NumPy arrays, thread by thread): what the ``cudasim`` tests use
    to run a whole engine function (e.g. :func:`gpu_sc.kernels.knn.knn`) through its kernels.
    Requires ``NUMBA_ENABLE_CUDASIM=1`` before numba was imported."""
    if not numba_cuda_status().simulator:
        raise RuntimeError("simulate() needs NUMBA_ENABLE_CUDASIM=1 set before numba's import")
    _SIMULATE[0] = True
    try:
        yield
    finally:
        _SIMULATE[0] = False


def simulating() -> bool:
    """Whether a :func:`simulate` block is active."""
    return _SIMULATE[0]
