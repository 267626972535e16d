"""Preprocessing steps (``gpu_sc.pp``): scanpy's ``pp`` names, parameters and outputs.

Generated from :mod:`gpu_sc.catalogue` (the steps whose namespaces include ``"pp"``).
"""

from . import catalogue as _catalogue
from .steps import make_step as _make

__all__ = [*sorted(s.name for s in _catalogue.public_steps("pp"))]  # derived from the catalogue
globals().update(
    {s.name: _make(s.name, s.scanpy_func(), "pp") for s in _catalogue.public_steps("pp")}
)
