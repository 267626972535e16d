"""The ``numpy`` backend: gpu_sc's engine on NumPy and scipy.sparse (CPU)."""

from __future__ import annotations

from .base import Backend

__all__ = ["NumpyBackend"]


class NumpyBackend(Backend):
    """gpu_sc's engine on NumPy/SciPy; always available."""

    name = "numpy"
    description = "gpu_sc's engine on NumPy/SciPy (CPU)"
    array_module_name = "numpy"
