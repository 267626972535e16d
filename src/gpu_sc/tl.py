"""Tools (``gpu_sc.tl``): scanpy's ``tl`` names, parameters and outputs.

Generated from :mod:`gpu_sc.catalogue` (the steps whose namespaces include ``"tl"``); a step
in both namespaces (pca) is one function, ``gpu_sc.pp``'s.
"""

from . import catalogue as _catalogue
from . import pp as _pp
from .steps import make_step as _make

__all__ = [*sorted(s.name for s in _catalogue.public_steps("tl"))]  # derived from the catalogue
globals().update(
    {
        s.name: getattr(_pp, s.name)
        if "pp" in s.namespaces
        else _make(s.name, s.scanpy_func(), "tl")
        for s in _catalogue.public_steps("tl")
    }
)
