"""A toy backend, defined here and nowhere else: the engine on NumPy under another name.

Registering an instance (``gpu_sc.backends.register(ToyBackend())``) is all it takes for the
pipeline, parity, ``gpu-sc info`` and ``--backend`` to know it (tests/test_backends.py).
"""

from __future__ import annotations

from gpu_sc.backends.numpy import NumpyBackend


class ToyBackend(NumpyBackend):
    """The numpy engine, counting how often the dispatcher asked it for its arrays."""

    name = "toy"
    aliases = ("playground",)
    description = "the numpy engine under another name (tests)"

    def __init__(self):
        self.array_module_calls = 0

    def array_module(self):
        self.array_module_calls += 1
        return super().array_module()


class UnavailableToyBackend(NumpyBackend):
    """A backend that cannot run here, and says why."""

    name = "toy-unavailable"
    description = "never usable (tests)"

    def available(self) -> tuple[bool, str]:
        return False, "the toy accelerator is not plugged in"
