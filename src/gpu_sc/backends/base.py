"""The protocol every backend implements: who executes a step, with which array library.

A backend answers three questions, each an attribute rather than a name to compare:

* who executes: scanpy's own function (:attr:`Backend.delegates`) or gpu_sc's engine;
* with which array library (:meth:`Backend.array_module`: NumPy/SciPy or CuPy/cupyx);
* whether it can run here (:meth:`Backend.available`, with the reason when it cannot).

Where the data lives (in memory or in a Dask array) is orthogonal: the dispatcher sees a
Dask matrix and runs the step's Dask implementation, its blocks in the backend's array
library (:attr:`Backend.data_location` is ``"memory"`` for every built-in backend).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["Backend", "wire"]

#: What the backends ask of the dispatcher, which sits above them and is never imported from
#: here: ``"array_module"``: name -> :class:`gpu_sc.dispatch.ArrayModule`;
#: ``"implementation"``: (step, backend name) -> the engine's implementation or None. Set by
#: :func:`wire`, which the package's facade (``gpu_sc/__init__.py``) calls on import, before
#: anything can ask a backend.
_WIRING: dict[str, Callable[..., Any]] = {}


def wire(*, array_module: Callable[[str], Any], implementation: Callable[[str, str], Any]) -> None:
    """Give the backends the dispatcher's array modules and engine implementations.

    Dependency injection: the facade calls it; the backends do not import the dispatcher.
    """
    _WIRING.update(array_module=array_module, implementation=implementation)


class Backend:
    """One backend.

    Subclass it (or a built-in one) and register an instance with
    :func:`gpu_sc.backends.register`; nothing else needs to learn its name.
    """

    #: The canonical name (recorded in the provenance, accepted as ``backend=``).
    name: str = ""
    #: Other names accepted for it (``"gpu"`` for ``"cupy"``).
    aliases: tuple[str, ...] = ()
    #: One line for ``gpu-sc info``.
    description: str = ""
    #: True: every step runs scanpy's own function (nothing of the engine).
    delegates: bool = False
    #: The :func:`gpu_sc.dispatch.array_module` name the engine computes with (None: delegates).
    array_module_name: str | None = None
    #: Computes on an accelerator (device memory, transfers, the CUDA probe).
    is_gpu: bool = False
    #: Keep the working matrix on the device between the pipeline's engine steps.
    device_resident: bool = False
    #: ``"memory"``: in-memory AnnData (Dask input is handled by the dispatcher, see module).
    data_location: str = "memory"
    #: What ``precision="auto"`` means here (``"exact"`` or ``"fast"``).
    default_precision: str = "exact"
    #: ``backend="auto"`` picks the first available backend with this flag...
    auto_preferred: bool = False
    #: ... and else the one with this flag.
    auto_default: bool = False
    #: What an auto-preferred backend needs, for ``auto``'s explanation ("CUDA").
    hardware: str = ""

    def available(self) -> tuple[bool, str]:
        """``(usable here, why)``; never raises."""
        return True, f"{self.name} needs nothing beyond gpu_sc's dependencies"

    def device_name(self) -> str | None:
        """Name the accelerator when :meth:`available` (None without one)."""
        return None

    def array_module(self) -> Any:
        """Return the :class:`gpu_sc.dispatch.ArrayModule` the engine computes with."""
        if self.array_module_name is None:
            raise ValueError(f"backend {self.name!r} delegates to scanpy: it has no array module")
        return _WIRING["array_module"](self.array_module_name)

    def implementation(self, step: str) -> Any:
        """Return the engine's implementation of ``step`` here, or None (then scanpy)."""
        if self.delegates:
            return None
        return _WIRING["implementation"](step, self.name)

    def __repr__(self) -> str:  # noqa: D105
        return f"<backend {self.name!r}>"
