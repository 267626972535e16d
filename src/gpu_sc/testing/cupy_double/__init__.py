"""A CuPy-faithful test double: CuPy 14.2's rules on NumPy/SciPy, for CI without a GPU.

Use only through :func:`install` (a context manager); production code never imports it::

    from gpu_sc.testing.cupy_double import install

    with install(device_bytes=2 << 30) as double:
        gpu_sc.pipeline(adata, backend="cupy")  # every engine step on "cupy" (the double)
        double.counters.snapshot()  # ops, syncs, transfers, bytes, flops

What it enforces (each rule pinned by ``tests/test_cupy_double.py``; sources in ``_rules.py``):
a device ``ndarray`` that is not a ``numpy.ndarray`` and refuses implicit conversion
(``__array__`` raises CuPy's ``TypeError``); ``.get()``/``cupy.asnumpy``/``cupy.asarray`` as the
only transfers; reductions returning 0-d device arrays without ``__index__``; ``bool/int/float``
allowed but counted as synchronisations; NumPy arrays (and lists, for ufuncs) refused as
operands; only the names and keywords of CuPy 14.2; ``cupyx.scipy.sparse`` csr/csc/coo/dia with
cupyx's dtypes, int32 indices and methods; out-of-bounds integer-array indices wrapping around;
``cupy.fft`` keeping float32; ``cupy.cuda`` with one device of configurable size whose
allocations raise ``OutOfMemoryError`` beyond it.

Not emulated: ``RawKernel``, ``RawModule``, ``ElementwiseKernel``, ``ReductionKernel``,
``cupy.fuse`` (they raise ``NotImplementedError``); cuRAND's random streams (``RandomState``
draws NumPy's numbers); asynchronous execution (every op completes at once, so races cannot
show); atomics' non-deterministic summation order.
"""

from __future__ import annotations

import contextlib
import functools
import operator
import sys
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass

from ...backends.cupy import cuda_status
from ...dispatch import arrays
from . import _cuda, _namespace
from ._core import DEVICE, DEVICE_NAME, OutOfMemoryError, ndarray
from ._rules import Counters, cupy_version
from ._sparse import csc_matrix, csr_matrix, linalg_namespace, spmatrix

__all__ = ["DEVICE_NAME", "DoubleHandle", "OutOfMemoryError", "install", "installed", "ndarray"]

_MODULE_NAMES = (
    "cupy",
    "cupy.linalg",
    "cupy.random",
    "cupy.fft",
    "cupy.cuda",
    "cupy.cuda.runtime",
    "cupy.cuda.memory",
    "cupyx",
    "cupyx.scipy",
    "cupyx.scipy.sparse",
    "cupyx.scipy.sparse.linalg",
    "cupyx.scipy.special",
)
_ACTIVE: list[DoubleHandle] = []


@dataclass
class DoubleHandle:
    counters: Counters
    device_bytes: int

    @property
    def used_bytes(self) -> int:
        return DEVICE.used_bytes

    @property
    def peak_bytes(self) -> int:
        return DEVICE.peak_bytes

    def set_device_bytes(self, n: int) -> None:
        DEVICE.total_bytes = self.device_bytes = int(n)


def installed() -> bool:
    """Whether the double currently stands in for ``cupy``."""
    return bool(_ACTIVE)


def _build_modules() -> dict[str, types.ModuleType]:
    ns = _namespace.build()
    mods: dict[str, types.ModuleType] = {}
    for name in (
        "cupy",
        "cupy.linalg",
        "cupy.random",
        "cupy.fft",
        "cupyx.scipy.sparse",
        "cupyx.scipy.special",
    ):
        m = types.ModuleType(name, f"CuPy double: {name} (NumPy underneath, not a GPU)")
        m.__dict__.update(ns.get(name, {}))
        m.__is_cupy_double__ = True
        # what production code (gpu_sc.kernels.cuda's PRICED mode) reads, never importing this
        m.__cupy_double_counters__ = DEVICE.counters
        mods[name] = m
    mods.update(_cuda.build_modules())
    mods["cupyx"] = types.ModuleType("cupyx", "CuPy double: cupyx")
    mods["cupyx.scipy"] = types.ModuleType("cupyx.scipy", "CuPy double: cupyx.scipy")
    mods["cupyx"].scipy = mods["cupyx.scipy"]
    mods["cupyx"].__is_cupy_double__ = True
    mods["cupyx.scipy"].sparse = mods["cupyx.scipy.sparse"]
    mods["cupyx.scipy"].special = mods["cupyx.scipy.special"]
    linalg = types.ModuleType("cupyx.scipy.sparse.linalg", "CuPy double: sparse linalg")
    linalg.__dict__.update(linalg_namespace())
    mods["cupyx.scipy.sparse.linalg"] = linalg
    mods["cupyx.scipy.sparse"].linalg = linalg
    for pkg in ("cupy", "cupyx", "cupyx.scipy", "cupyx.scipy.sparse", "cupy.cuda"):
        mods[pkg].__path__ = []  # packages, so submodule imports resolve from sys.modules
    cp = mods["cupy"]
    cp.__version__ = cupy_version()
    for sub in ("linalg", "random", "fft", "cuda"):
        setattr(cp, sub, mods[f"cupy.{sub}"])
    cp.get_default_memory_pool = _cuda.get_default_memory_pool
    cp.get_default_pinned_memory_pool = _cuda.get_default_pinned_memory_pool
    _cuda._MODULES.update(mods)
    return mods


# -- AnnData: make it see the double as it sees CuPy when CuPy was importable at its import ----
def _patch_anndata(undo: list) -> None:
    try:
        import anndata.compat as compat
        from anndata._core import views
    except ImportError:
        return
    mocks = {
        "CupyArray": ndarray,
        "CupyCSRMatrix": csr_matrix,
        "CupyCSCMatrix": csc_matrix,
        "CupySparseMatrix": spmatrix,
    }
    by_mock = {getattr(compat, k): v for k, v in mocks.items() if getattr(compat, k) is not v}
    if not by_mock:
        return
    view_bases = {
        "CupyArrayView": ndarray,
        "CupySparseCSRView": csr_matrix,
        "CupySparseCSCView": csc_matrix,
    }
    for name, base in view_bases.items():
        old = getattr(views, name)
        body = {k: v for k, v in old.__dict__.items() if k not in ("__dict__", "__weakref__")}
        by_mock[old] = type(name, (views._ViewMixin, base), body)
    anndata_modules = [
        (n, m) for n, m in list(sys.modules.items()) if n.startswith("anndata") and m is not None
    ]
    # anndata >= 0.13 (Python >= 3.12) spells some unions as ``type X = ...`` aliases, whose
    # value is read once and kept: the unions that name such an alias get its value with the
    # double's classes (a plain union) instead.
    alias_type = getattr(typing, "TypeAliasType", None)
    if alias_type is not None:
        for _, mod in anndata_modules:
            for value in list(vars(mod).values()):
                if isinstance(value, alias_type) and value not in by_mock:
                    try:
                        members = typing.get_args(value.__value__)
                    except Exception:  # an alias naming what only type checkers import
                        continue
                    if any(a in by_mock for a in members):
                        by_mock[value] = functools.reduce(
                            operator.or_, [by_mock.get(a, a) for a in members]
                        )
    for _, mod in anndata_modules:
        for attr, value in list(vars(mod).items()):
            if alias_type is not None and isinstance(value, alias_type):
                continue  # read through the unions above
            if isinstance(value, type) and value in by_mock:
                undo.append((mod, attr, value))
                setattr(mod, attr, by_mock[value])
            elif isinstance(value, types.UnionType | typing._UnionGenericAlias) and any(
                a in by_mock for a in typing.get_args(value)
            ):
                union = functools.reduce(
                    operator.or_, [by_mock.get(a, a) for a in typing.get_args(value)]
                )
                undo.append((mod, attr, value))
                setattr(mod, attr, union)
            registry = getattr(value, "registry", None)
            if registry is not None and hasattr(value, "register"):
                for mock, double_cls in by_mock.items():
                    if mock in registry and double_cls not in registry:
                        value.register(double_cls, registry[mock])


def _clear_caches() -> None:
    cuda_status.cache_clear()
    arrays.array_module.cache_clear()


@contextlib.contextmanager
def install(device_bytes: int = 16 << 30) -> Iterator[DoubleHandle]:
    """Stand in for ``cupy``/``cupyx`` (``sys.modules``) until the block ends, then restore.

    ``device_bytes`` is the simulated device's memory. Clears the cached CUDA probe and array
    modules on entry and exit, so the probe sees the double inside and the truth outside.
    """
    if _ACTIVE:
        raise RuntimeError("the CuPy double is already installed")
    saved = {name: sys.modules.get(name) for name in _MODULE_NAMES}
    mods = _build_modules()
    DEVICE.total_bytes = int(device_bytes)
    DEVICE.counters.reset()
    DEVICE.peak_bytes = DEVICE.used_bytes  # peaks are per installation, like the counters
    DEVICE.allocator = None
    undo: list = []
    handle = DoubleHandle(DEVICE.counters, int(device_bytes))
    sys.modules.update(mods)
    _ACTIVE.append(handle)
    try:
        _patch_anndata(undo)
        _clear_caches()
        yield handle
    finally:
        for mod, attr, value in reversed(undo):
            setattr(mod, attr, value)
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old
        _ACTIVE.clear()
        DEVICE.allocator = None
        _clear_caches()
