"""What a fused kernel declares: :class:`KernelSpec` and its cost per call, :class:`KernelCost`."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["KernelCost", "KernelSpec"]


@dataclass(frozen=True)
class KernelCost:
    """What one call of a fused kernel asks of the device (declared, not measured).

    ``flops`` are counted in ``flop_dtype`` (``"float64"`` flops are priced at the card's FP64
    rate). ``launches`` counts kernel launches *and* the CuPy calls around them (e.g. the GEMM
    the kNN kernel reads); ``syncs`` the host round trips.
    """

    read: float = 0
    written: float = 0
    flops: float = 0
    flop_dtype: str = "float64"
    launches: float = 1
    syncs: float = 0

    def __add__(self, other: KernelCost) -> KernelCost:
        if self.flop_dtype != other.flop_dtype and self.flops and other.flops:
            raise ValueError("adding costs whose flops have different dtypes")
        return KernelCost(
            self.read + other.read,
            self.written + other.written,
            self.flops + other.flops,
            self.flop_dtype if self.flops else other.flop_dtype,
            self.launches + other.launches,
            self.syncs + other.syncs,
        )


@dataclass(frozen=True)
class KernelSpec:
    """One fused kernel: where its source is, what to compile, what it costs, what it matches.

    Attributes
    ----------
    name
        Registry name (what :func:`run_kernel` is called with).
    source
        Module holding the ``numba.cuda.jit`` kernel function(s); imported lazily.
    signatures
        ``{kernel attribute name in source: [numba signature strings]}``: what the ``ptx``
        tests and :mod:`~gpu_sc.kernels.cuda.compile` compile for each architecture.
    reference
        The array-generic function (``am`` first) the kernel must match; what runs on numpy and
        on the double.
    launch
        ``launch(xp, kernels, *args, **kwargs)``: runs the kernel(s) (``kernels`` maps the names
        of ``signatures`` to the jitted functions) on arrays of ``xp`` (CuPy on a GPU, NumPy on
        the simulator) and returns what ``reference`` returns.
    cost
        ``cost(*args, **kwargs) -> KernelCost``: the declared cost of one call with the
        reference's arguments (the ``am`` left out), a function of their sizes only.
    supports
        Optional ``supports(*args, **kwargs) -> str | None``: a reason the kernel cannot take
        these arguments (the reference then runs, and the note says why), or None.
    example
        ``example(xp, scale) -> (args, kwargs)``: inputs of a given size for timing the kernel
        against its cost (``scripts/gpu_session.sh kernels``); ``scale`` 0 is tiny.
    """

    name: str
    source: str
    signatures: dict[str, list[str]]
    reference: Callable[..., Any]
    launch: Callable[..., Any]
    cost: Callable[..., KernelCost]
    example: Callable[..., tuple[tuple, dict]] | None = None
    #: ``supports(*args, **kwargs) -> str | None``: why the kernel cannot take these inputs
    #: (e.g. ``k`` above its shared-memory bound), or None; the reference then runs, noted.
    supports: Callable[..., str | None] | None = None
    doc: str = ""

    def kernels(self) -> dict[str, Any]:
        """The jitted kernels of ``source`` (imports numba.cuda; raises ImportError without)."""
        mod = importlib.import_module(self.source)
        return {name: getattr(mod, name) for name in self.signatures}
