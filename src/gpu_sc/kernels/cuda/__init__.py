"""Fused CUDA kernels (numba-cuda), each beside the array-generic reference it must match.

The engine stays written once against an :class:`~gpu_sc.dispatch.arrays.ArrayModule`. Where
a hot loop has a fused kernel, the engine calls :func:`run_kernel` with the kernel's name and
the reference's arguments, and this one chooser decides what runs:

- **numpy**: the reference (so the numpy backend's results are unchanged);
- **the CuPy double** (``gpu_sc.testing.cupy_double``): the reference, on the double, but its
  counters record the kernel's **declared** cost (:class:`KernelCost`: bytes read and written,
  flops by dtype, launches, syncs) instead of the reference's CuPy calls, so the cost model
  prices the fused kernel;
- **real CuPy with a CUDA device and numba-cuda**: the kernel, launched on the CuPy arrays
  (zero-copy through ``__cuda_array_interface__``);
- **real CuPy without numba-cuda** (or with the simulator switched on): the reference, logged.

What ran is never silent: :func:`kernel_log` collects one entry per call (name and ``how``:
``"fused kernel"``, ``"reference"``, ``"reference priced as kernel on the double"`` or
``"reference (fused kernel unavailable: ...)"``) and the dispatcher appends a summary to the
step's provenance note.

A kernel is one module of this package (its name not starting with ``_``) defining ``SPEC``, a
:class:`KernelSpec`; its CUDA source lives in a separate module (``source``) that imports
``numba.cuda`` at its top, so ``gpu_sc`` imports where numba-cuda is absent. Kernel sources
must not call ``cuda.jit(device=True)`` functions: numba-cuda compiles those for the current
device, which ``compile_ptx`` on a machine without a driver does not have (inline instead).

Proofs without a GPU (``tests/test_cuda_kernels.py``): ``pytest -m cudasim`` runs each kernel
on numba-cuda's simulator against its reference; ``pytest -m ptx`` compiles each one for
sm_80 and sm_90 (:mod:`gpu_sc.kernels.cuda.compile`).
"""

from __future__ import annotations

import logging
from typing import Any

from ...dispatch.arrays import ArrayModule
from ...dispatch.provenance import kernel_log, note_kernel, summarize_kernels
from ._registry import (
    NumbaCudaStatus,
    jitted,
    load_kernels,
    numba_cuda_status,
    registry,
    simulate,
    simulating,
)
from ._spec import KernelCost, KernelSpec

__all__ = [
    "FUSED",
    "PRICED",
    "REFERENCE",
    "SIMULATED",
    "KernelCost",
    "KernelSpec",
    "NumbaCudaStatus",
    "how_to_run",
    "jitted",
    "kernel_log",
    "load_kernels",
    "numba_cuda_status",
    "registry",
    "run_kernel",
    "simulate",
    "summarize_kernels",
]

logger = logging.getLogger("gpu_sc")

FUSED = "fused kernel"
REFERENCE = "reference"
PRICED = "reference priced as kernel on the double"
SIMULATED = "fused kernel on numba-cuda's simulator"


# -- the chooser --------------------------------------------------------------------------------

_WARNED: set[str] = set()


def _double_counters(am) -> Any | None:
    """The double's counters when ``am`` is the CuPy double, else None (read from its
    ``cupy`` module: production code never imports the double)."""
    if not am.on_device or not getattr(am.xp, "__is_cupy_double__", False):
        return None
    return getattr(am.xp, "__cupy_double_counters__", None)


def how_to_run(am: ArrayModule) -> str:
    """What :func:`run_kernel` would do with ``am``: FUSED, REFERENCE, PRICED or a reason."""
    if not am.on_device:
        return SIMULATED if simulating() else REFERENCE
    if _double_counters(am) is not None:
        return PRICED
    status = numba_cuda_status()
    if status.fused:
        return FUSED
    return f"reference (fused kernel unavailable: {status.reason})"


def run_kernel(am: ArrayModule, name: str, *args, **kwargs):
    """Run kernel ``name`` on ``args`` the way ``am`` allows (see the module's docstring)."""
    spec = registry()[name]
    how = how_to_run(am)
    if how in (FUSED, SIMULATED) and spec.supports is not None:
        why = spec.supports(*args, **kwargs)
        if why:
            how = f"reference (fused kernel does not take these inputs: {why})"
    if how in (FUSED, SIMULATED):
        try:
            kernels = jitted(name)
        except Exception as exc:  # source failed to import/compile: say so, run the reference
            how = f"reference (fused kernel failed to load: {type(exc).__name__}: {exc})"
        else:
            try:
                result = spec.launch(am.xp, kernels, *args, **kwargs)
            except Exception as exc:
                if not type(exc).__module__.startswith("numba"):
                    raise  # a bug, not numba-cuda failing to compile/link/launch here
                how = f"reference (fused kernel failed: {type(exc).__name__}: {exc})"
                logger.warning("gpu_sc: %s: %s", name, how)
    if how == PRICED:
        counters = _double_counters(am)
        with counters.priced_as(name, spec.cost(*args, **kwargs)):
            result = spec.reference(am, *args, **kwargs)
    elif how not in (FUSED, SIMULATED):
        if how not in (REFERENCE,) and name not in _WARNED:
            _WARNED.add(name)
            logger.info("gpu_sc: %s runs its reference: %s", name, how)
        result = spec.reference(am, *args, **kwargs)
    note_kernel(name, how)
    return result
