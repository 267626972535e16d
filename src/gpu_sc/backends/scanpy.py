"""The ``scanpy`` backend: every step runs scanpy's own function."""

from __future__ import annotations

from .base import Backend

__all__ = ["ScanpyBackend"]


class ScanpyBackend(Backend):
    """scanpy's own functions; always available."""

    name = "scanpy"
    aliases = ("cpu",)
    description = "scanpy's own functions (the reference)"
    delegates = True
    auto_default = True
