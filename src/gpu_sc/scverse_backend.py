"""gpu_sc as a backend of scanpy's backend dispatch (``scverse-backends``).

scanpy's backend dispatch (not in scanpy 1.12.x, which predates it) marks its public
functions with ``scverse_backends``' ``@backend_dispatch`` and discovers backends through the
``scanpy.backends`` entry point group; ``pyproject.toml`` registers :class:`ScanpyBackend`
there. With it installed, ``sc.pp.pca(adata, backend="gpu_sc")`` (or
``sc.settings.backend = "gpu_sc"``) runs gpu_sc's step of the same name.

Each method has the installed scanpy's signature (gpu_sc's steps read it from scanpy) without
gpu_sc's own ``backend=``, which the dispatcher reserves for choosing the backend: gpu_sc's
engine backend is then ``gpu_sc.settings.backend`` (``"auto"``: CuPy where CUDA is usable,
else scanpy's own code; ``"numpy"``: the engine on the CPU). A step the engine does not implement for the call falls back to scanpy's own
code (below the dispatcher, so never back into gpu_sc), recorded in ``adata.uns["gpu_sc"]``
as always. scanpy functions gpu_sc has no step for are absent, so the dispatcher runs
scanpy's.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["ScanpyBackend"]


def _adapter(step: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(step)
    def method(*args, **kwargs):
        return step(*args, **kwargs)

    sig = inspect.signature(step)
    method.__signature__ = sig.replace(
        parameters=[p for p in sig.parameters.values() if p.name != "backend"]
    )
    del method.__wrapped__  # the dispatcher reads the signature above, not the step's
    return method


class ScanpyBackend:
    """The ``scanpy.backends`` entry point: gpu_sc's ``pp``/``tl`` steps by scanpy's names."""

    name = "gpu_sc"
    aliases = ("gpu-sc",)

    def __init__(self) -> None:
        from . import catalogue, pp, tl

        for namespace, module in (("pp", pp), ("tl", tl)):
            for entry in catalogue.public_steps(namespace):
                if entry.name not in vars(self):
                    setattr(self, entry.name, _adapter(getattr(module, entry.name)))

    def functions(self) -> list[str]:
        """Return the scanpy function names this backend implements."""
        return sorted(k for k, v in vars(self).items() if callable(v))
