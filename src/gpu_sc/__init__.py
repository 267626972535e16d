"""gpu_sc: the scanpy single-cell workflow on the GPU with CuPy alone, scanpy's CPU path otherwise.

>>> import gpu_sc
>>> adata = gpu_sc.datasets.pbmc3k()
>>> gpu_sc.pipeline(adata)  # backend="auto": cupy if CUDA answers, else scanpy
>>> adata.uns["gpu_sc"]["provenance"]  # per step: backend, params, seconds, fallback
>>> gpu_sc.pp.log1p(adata2)  # one step: scanpy's outputs only, nothing else in adata2
>>> gpu_sc.provenance.last()  # its record: backend, params, seconds, fallback

Submodules that import scanpy (``pp``, ``tl``, ``pipeline``, ``report``, ``datasets``) load on
first use, so ``import gpu_sc`` and ``gpu-sc --help`` stay fast.
"""

import importlib
import sys
import types

from . import backends
from ._settings import settings
from ._version import __version__  # noqa: F401  (gpu_sc.__version__)
from .backends import resolve_precision, use_backend
from .backends.base import wire as _wire


def _array_module(name: str):
    from .dispatch.arrays import array_module  # the dispatcher loads on first use

    return array_module(name)


def _implementation(step: str, backend: str):
    from .dispatch.registry import impl_for  # the dispatcher loads on first use

    return impl_for(step, backend)


# The facade, above every layer, hands the backends what they ask of the dispatcher.
_wire(array_module=_array_module, implementation=_implementation)

#: Public name -> (module, attribute or None for the module itself), imported on first use.
_LAZY = {
    "datasets": ("datasets", None),
    "dispatch": ("dispatch", None),
    "io": ("io", None),
    "pp": ("pp", None),
    "provenance": ("provenance", None),
    "tl": ("tl", None),
    "PipelineConfig": ("pipeline", "PipelineConfig"),
    "pipeline": ("pipeline", "pipeline"),
    "report": ("report", "report"),
}

__all__ = [
    "PipelineConfig",
    "backends",
    "datasets",
    "dispatch",
    "io",
    "pipeline",
    "pp",
    "provenance",
    "report",
    "resolve_precision",
    "settings",
    "tl",
    "use_backend",
]


def __getattr__(name: str):
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'gpu_sc' has no attribute {name!r}") from None
    mod = importlib.import_module(f".{module}", __name__)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    """Keeps ``gpu_sc.pipeline`` and ``gpu_sc.report`` the functions: importing the
    subpackage of the same name (``from gpu_sc.pipeline import ...``) would otherwise
    replace the attribute with the subpackage."""

    def __setattr__(self, name, value):
        if name in ("pipeline", "report") and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)

    def __reduce__(self):
        # Pickled by name, as a plain module is: cloudpickle (Dask's task serialiser) looks
        # modules up by exact type and would otherwise try to pickle this one by value.
        return importlib.import_module, (self.__name__,)


sys.modules[__name__].__class__ = _Package
