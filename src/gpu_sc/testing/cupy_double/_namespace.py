"""The double's ``cupy``/``cupyx`` namespaces, generated from CuPy 14.2's name list [C].

A name exists in the double only if it exists in CuPy 14.2, and is called with CuPy's
parameters (an unknown keyword raises ``TypeError`` as it would in CuPy). Each function
delegates to NumPy / SciPy after unwrapping device operands; NumPy arrays are refused as
operands [U], except by the explicit conversions (``asarray``, ``array``, ``asanyarray``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.special

from . import _core, _cuda, _sparse
from ._core import DEVICE, NAMESPACE, ndarray, unwrap_operand
from ._rules import catalogue, check_call, parse_signature

_NUMPY_HOMES = {
    "cupy": np,
    "cupy.linalg": np.linalg,
    "cupy.random": np.random,
    "cupy.fft": np.fft,
    "cupyx.scipy.special": scipy.special,
}
# conversions that take host data by design (an explicit transfer)
_HOST_OK = {"cupy.asarray", "cupy.array", "cupy.asanyarray"}
_NOT_EMULATED = {
    "RawKernel",
    "RawModule",
    "ElementwiseKernel",
    "ReductionKernel",
    "fuse",
    "memoize",
    "vectorize",
}
# reductions whose NumPy twin returns a Python scalar where CuPy returns a 0-d array
_PY_SCALAR_TO_DEVICE = {"cupy.count_nonzero", "cupy.trace", "cupy.dot", "cupy.vdot"}


def _not_emulated(name: str):
    def f(*args, **kwargs):
        raise NotImplementedError(
            f"cupy.{name} is not emulated by the CuPy double: CUDA source code cannot be run "
            "without a GPU (test it on a real device)"
        )

    return f


def _flops(name: str, args) -> tuple[int, np.dtype | None]:
    """Flops of a matrix product and the dtype it computes in (its operands' result type)."""
    if name in ("cupy.matmul", "cupy.dot") and len(args) >= 2:
        a, b = args[0], args[1]
        if isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.ndim and b.ndim:
            k = a.shape[-1]
            n = 2 * int(np.prod(a.shape[:-1])) * k * (b.shape[-1] if b.ndim > 1 else 1)
            return n, np.result_type(a.dtype, b.dtype)
    return 0, None


def _unwrap_all(qualname: str, args, kwargs, allow_host: bool, allow_lists: bool = True):
    args = [
        unwrap_operand(a, qualname, allow_host=allow_host, allow_lists=allow_lists) for a in args
    ]
    kwargs = {
        k: (
            v
            if k == "out" and v is None
            else unwrap_operand(v, qualname, allow_host=allow_host, allow_lists=allow_lists)
        )
        for k, v in kwargs.items()
    }
    return args, kwargs


def _make_function(qualname: str, target, sig_text: str | None):
    sig = parse_signature(sig_text)
    allow_host = qualname in _HOST_OK
    is_fft = qualname.startswith("cupy.fft.")

    def f(*args, **kwargs):
        check_call(qualname, sig, args, kwargs)
        kwargs.pop("blocking", None)  # CuPy-only keyword of asarray/array
        raw_in = [a for a in args if isinstance(a, (ndarray, list, tuple))]
        host_in = [x for x in args if isinstance(x, np.ndarray)]
        a, kw = _unwrap_all(qualname, args, kwargs, allow_host)
        result = target(*a, **kw)
        if is_fft:  # cuFFT keeps single precision (numpy.fft always returns 64-bit) [D]
            src = a[0] if a and isinstance(a[0], np.ndarray) else None
            if src is not None and src.dtype in (np.float32, np.complex64):
                result = result.astype(np.complex64 if result.dtype.kind == "c" else np.float32)
        if qualname in _PY_SCALAR_TO_DEVICE and isinstance(result, (int, float, complex)):
            result = np.asarray(result)
        if (
            host_in
            and isinstance(result, np.ndarray)
            and any(np.shares_memory(result, x) for x in host_in)
        ):
            result = np.array(result, copy=True)  # device memory is never the host's
        n_flops, flop_dtype = _flops(qualname, a)
        if n_flops:
            DEVICE.counters.add_flops(n_flops, flop_dtype)
        return _core._record(qualname, result, raw_in)

    f.__name__ = qualname.rsplit(".", 1)[1]
    f.__qualname__ = f.__name__
    f.__module__ = qualname.rsplit(".", 1)[0]
    f.__signature__ = sig
    return f


class ufunc:  # CuPy's name
    """A CuPy ufunc: operands must be device arrays or scalars ([D], [U])."""

    def __init__(self, qualname: str, target, entry: dict):
        self.__name__ = qualname.rsplit(".", 1)[1]
        self._qualname = qualname
        self._target = target
        self._sig = parse_signature(entry.get("sig"))
        self.nin = entry.get("nin", getattr(target, "nin", 1))
        self.nout = getattr(target, "nout", 1)
        self._methods = {
            m: parse_signature(s, drop_self=True) for m, s in entry.get("methods", {}).items()
        }

    def __repr__(self):
        return f"<ufunc 'cupy_{self.__name__}'>"

    def _run(self, label, func, sig, args, kwargs):
        check_call(label, sig, args, kwargs)
        if self._sig is None and kwargs.keys() - {"out", "dtype", "casting"}:
            raise TypeError(f"{label}() got unexpected keyword(s) {sorted(kwargs)}")
        raw_in = [a for a in args if isinstance(a, ndarray)]
        a, kw = _unwrap_all(label, args, kwargs, allow_host=False, allow_lists=False)
        out = kw.get("out")
        result = func(*a, **kw)
        if out is not None:
            DEVICE.counters.op(label, read=_core._nbytes_in(raw_in), written=out.nbytes)
            return kwargs["out"]
        return _core._record(label, result, raw_in)

    def __call__(self, *args, **kwargs):
        return self._run(f"cupy.{self.__name__}", self._target, self._sig, args, kwargs)

    def __getattr__(self, name):
        if name.startswith("_") or name not in self.__dict__.get("_methods", {}):
            raise AttributeError(f"'cupy.ufunc' object has no attribute {name!r}")
        target = getattr(self._target, name)
        sig = self._methods[name]
        return lambda *a, **k: self._run(f"cupy.{self.__name__}.{name}", target, sig, a, k)


ufunc.__module__ = "cupy"


def _conversion_asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
    if isinstance(a, ndarray):
        return a.get(order=order, out=out)
    return np.asarray(a, order=order)


def _random_state_class():
    sigs = catalogue()["classes"]["cupy.random.RandomState"]

    class RandomState:
        """``cupy.random.RandomState`` on NumPy's generator: the same *rules* (methods,
        keywords, device results, ``dtype=``), not cuRAND's numbers."""

        def __init__(self, seed=None, method=None):
            self._rs = np.random.RandomState(None if seed is None else int(seed) % 2**32)

    for name, entry in sigs.items():
        if (
            name.startswith("_")
            or entry["kind"] != "method"
            or not hasattr(np.random.RandomState, name)
        ):
            continue
        sig = parse_signature(entry.get("sig"), drop_self=True)

        def method(self, *args, _name=name, _sig=sig, **kwargs):
            check_call(f"cupy.random.RandomState.{_name}", _sig, args, kwargs)
            dtype = kwargs.pop("dtype", None)  # CuPy's extra dtype= ([D] random methods)
            a, kw = _unwrap_all(_name, args, kwargs, allow_host=False)
            result = getattr(self._rs, _name)(*a, **kw)
            if dtype is not None and isinstance(result, np.ndarray):
                result = result.astype(dtype)
            return _core._record(f"cupy.random.RandomState.{_name}", result)

        method.__name__ = name
        setattr(RandomState, name, method)
    RandomState.__module__ = "cupy.random"
    return RandomState


def build() -> dict[str, dict[str, Any]]:
    """Fill :data:`NAMESPACE` (module name -> attributes) from the CuPy 14.2 list."""
    NAMESPACE.clear()
    names = catalogue()["names"]
    for qualname, entry in names.items():
        modname, attr = qualname.rsplit(".", 1)
        if modname not in _NUMPY_HOMES:
            continue
        ns = NAMESPACE.setdefault(modname, {})
        home = _NUMPY_HOMES[modname]
        kind = entry["kind"]
        if attr in _NOT_EMULATED:
            ns[attr] = _not_emulated(attr)
        elif kind == "ufunc":
            target = getattr(home, attr, None) or getattr(np, attr, None)
            if target is not None:
                ns[attr] = ufunc(qualname, target, entry)
        elif kind == "function" and hasattr(home, attr):
            ns[attr] = _make_function(qualname, getattr(home, attr), entry.get("sig"))
        elif kind in ("class", "value") and hasattr(home, attr):
            ns[attr] = getattr(home, attr)
    cp = NAMESPACE["cupy"]
    cp.update(
        ndarray=ndarray,
        ufunc=ufunc,
        asnumpy=_conversion_asnumpy,
        get_default_memory_pool=_cuda.get_default_memory_pool,
        get_default_pinned_memory_pool=_cuda.get_default_pinned_memory_pool,
        get_array_module=lambda *args: (
            _cuda.module("cupy")
            if any(isinstance(a, (ndarray, _sparse.spmatrix)) for a in args)
            else np
        ),
        __version__=catalogue()["cupy_version"],
    )
    NAMESPACE["cupy.random"]["RandomState"] = _random_state_class()
    NAMESPACE["cupy.random"].pop("seed", None)
    NAMESPACE["cupyx.scipy.sparse"] = _sparse.namespace()
    return NAMESPACE
