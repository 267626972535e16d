"""The double's device array, its memory accounting and the ``cupy`` namespace functions.

NumPy computes underneath; what the double adds are CuPy 14.2's rules (see ``_rules.py`` for
the sources [D] [I] [U] [C]). ``RawKernel``/``ElementwiseKernel``/``ReductionKernel`` and
``cupy.fuse`` are NOT emulated: calling them raises ``NotImplementedError`` (the engine uses
none; a kernel written in CUDA C cannot be checked without a GPU).
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from ._rules import Counters, catalogue, check_call, parse_signature

DEVICE_NAME = "cupy-double (NumPy, not a GPU)"


class OutOfMemoryError(MemoryError):
    """``cupy.cuda.memory.OutOfMemoryError`` (a ``MemoryError`` subclass in CuPy, too)."""

    def __init__(self, size: int, total: int, limit: int = 0):
        super().__init__(
            f"Out of memory allocating {size:,} bytes (allocated so far: {total:,} bytes, "
            f"limit set to: {limit:,} bytes)."
        )
        self.size, self.total = size, total


OutOfMemoryError.__module__ = "cupy.cuda.memory"


class Device:
    """The one simulated device: a byte budget and the counters."""

    def __init__(self, total_bytes: int = 16 << 30):
        self.total_bytes = int(total_bytes)
        self.used_bytes = 0
        self.peak_bytes = 0
        self.counters = Counters()
        self.allocator = None  # cupy.cuda.set_allocator(func): func(nbytes) allocates

    def malloc(self, nbytes: int) -> None:
        (self.allocator or self.allocate)(nbytes)

    def allocate(self, nbytes: int) -> None:
        if self.used_bytes + nbytes > self.total_bytes:
            raise OutOfMemoryError(nbytes, self.used_bytes, self.total_bytes)
        self.used_bytes += nbytes
        self.peak_bytes = max(self.peak_bytes, self.used_bytes)

    def free(self, nbytes: int) -> None:
        self.used_bytes -= nbytes


DEVICE = Device()

#: The double's namespaces, module name -> attributes (``"cupy"``, ``"cupyx.scipy.sparse"``,
#: ...), filled by :func:`gpu_sc.testing.cupy_double._namespace.build`. Defined here, where
#: the arrays' operators look functions up, so that this module imports none of the modules
#: built on it (they import it).
NAMESPACE: dict[str, dict[str, Any]] = {}
#: The double's cupyx matrix base class and ``cupy.cuda.Device``, handed over by
#: ``_sparse`` and ``_cuda`` on import (the package imports both with this module).
_SPARSE: tuple[type, ...] = ()
_CUDA_DEVICE: list[type] = []


def register_sparse(cls: type) -> None:
    """``_sparse`` hands over its matrix base class (``isinstance`` checks here)."""
    global _SPARSE
    _SPARSE = (cls,)


def register_cuda_device(cls: type) -> None:
    """``_cuda`` hands over its ``Device`` class (an array's ``.device``)."""
    _CUDA_DEVICE[:] = [cls]


def _owner(a: np.ndarray) -> np.ndarray:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


_TRACKED: dict[int, Any] = {}


def _account(a: np.ndarray) -> None:
    """Charge a NumPy buffer to the device once, released when the buffer is collected."""
    owner = _owner(a)
    key = id(owner)
    if key in _TRACKED:
        return
    nbytes = owner.nbytes
    DEVICE.malloc(nbytes)
    device = DEVICE

    def release(key=key, nbytes=nbytes, device=device):
        _TRACKED.pop(key, None)
        device.free(nbytes)

    try:
        _TRACKED[key] = weakref.finalize(owner, release)
    except TypeError:  # not weak-referenceable: no accounting
        device.free(nbytes)


def _implicit_conversion_error() -> TypeError:
    # [I] the message of cupy/_core/core.pyx _ndarray_base.__array__
    return TypeError(
        "Implicit conversion to a NumPy array is not allowed. "
        "Please use `.get()` to construct a NumPy array explicitly."
    )


def _unsupported(x) -> TypeError:
    return TypeError(f"Unsupported type {type(x)}")  # [U]


class ndarray:  # CuPy's name
    """A device array of the double: a NumPy array that CuPy's rules guard."""

    __array_priority__ = 100  # as cupy.ndarray: wins NumPy's binary-operator dispatch

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        if "_a" in self.__dict__:  # a view subclass (AnnData's) re-entering __init__
            return
        self._a = np.empty(shape, dtype=dtype, order=order)
        _account(self._a)

    @classmethod
    def _wrap(cls, a: np.ndarray, account: bool = True) -> ndarray:
        if a.dtype.kind in "OUSV":  # [D] CuPy has no object/string dtypes
            raise ValueError(f"Unsupported dtype {a.dtype}")
        out = object.__new__(cls)
        out._a = a
        if account:
            _account(a)
        return out

    # -- rules of conversion ---------------------------------------------------------------
    def __array__(self, dtype=None, copy=None):
        raise _implicit_conversion_error()  # [I]

    def get(self, stream=None, order="C", out=None, blocking=True):
        DEVICE.counters.to_host(self._a.nbytes)
        host = np.array(self._a, order=order if order in "CF" else "C", copy=True)
        if out is not None:
            out[...] = host
            return out
        return host

    def set(self, arr, stream=None):
        if not isinstance(arr, np.ndarray):
            raise TypeError("Only numpy.ndarray can be set to cupy.ndarray")
        DEVICE.counters.to_device(arr.nbytes)
        self._a[...] = arr

    def _sync_scalar(self):
        DEVICE.counters.to_host(self._a.nbytes)
        return self._a

    def __bool__(self):
        return bool(self._sync_scalar())

    def __int__(self):
        return int(self._sync_scalar())

    def __float__(self):
        return float(self._sync_scalar())

    def __complex__(self):
        return complex(self._sync_scalar())

    # no __index__: cupy.ndarray has none in CuPy 14.2 (hasattr(cupy.ndarray, "__index__") is
    # False), so a 0-d device array cannot be a Python index or a range() bound.

    def item(self, *args):
        return self._sync_scalar().item(*args)

    def tolist(self):
        return self._sync_scalar().tolist()

    def __repr__(self):
        return f"array({np.array2string(self._sync_scalar(), separator=', ')})"

    __str__ = __repr__

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        for i in range(self.shape[0]):
            yield self[i]

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of unsized object")
        return len(self._a)

    def __reduce__(self):  # pickling moves to host and back in CuPy, too
        return (_from_host, (self.get(),))

    # -- attributes ------------------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    base = property(lambda self: None)
    device = property(lambda self: _current_device())
    T = property(lambda self: _record("ndarray.T", self._a.T, (self,)))
    mT = property(lambda self: _record("ndarray.mT", np.swapaxes(self._a, -1, -2), (self,)))
    real = property(lambda self: _record("ndarray.real", self._a.real, (self,)))
    imag = property(lambda self: _record("ndarray.imag", self._a.imag, (self,)))

    @shape.setter
    def shape(self, value):
        self._a.shape = value

    @property
    def __cuda_array_interface__(self):
        raise NotImplementedError("the CuPy double has no device pointer")

    def view(self, *args, **kwargs):
        dtype = kwargs.pop("dtype", args[0] if args and not isinstance(args[0], type) else None)
        cls = kwargs.pop("type", args[0] if args and isinstance(args[0], type) else None)
        a = self._a.view(dtype) if dtype is not None else self._a.view()
        cls = cls or type(self)
        if not issubclass(cls, ndarray):
            raise TypeError(f"Type must be a sub-type of ndarray type, got {cls}")
        out = object.__new__(cls)
        out._a = a
        return out

    # -- indexing --------------------------------------------------------------------------
    def __getitem__(self, key):
        key = _index_key(key, self.shape)
        result = self._a[key]
        if isinstance(result, np.ndarray) and result.ndim and _owner(result) is _owner(self._a):
            # basic indexing (slices, integers, newaxis): CuPy makes a view on the host, no
            # kernel and no device traffic, so nothing is counted; advanced indexing copies
            return ndarray._wrap(result)
        return _record("ndarray.__getitem__", result, (self,))

    def __setitem__(self, key, value):
        key = _index_key(key, self.shape)
        if isinstance(value, np.ndarray):  # CuPy copies a host value over (a transfer)
            DEVICE.counters.to_device(value.nbytes)
        elif isinstance(value, ndarray):
            value = value._a
        elif not _is_scalar(value):
            raise _unsupported(value)
        DEVICE.counters.op("ndarray.__setitem__", written=np.asarray(self._a[key]).nbytes)
        self._a[key] = value

    # -- NumPy protocols: CuPy's behaviour -------------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        # [U] CuPy applies its own ufunc of the same name; NumPy operands fail there.
        cp_ufunc = NAMESPACE["cupy"].get(ufunc.__name__)
        if cp_ufunc is None:
            return NotImplemented
        return getattr(cp_ufunc, method)(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        # cupy/_core/core.pyx __array_function__: the cupy function of the same module path
        # and name, NotImplemented where CuPy has none.
        modname = func.__module__.replace("numpy", "cupy", 1)
        target = NAMESPACE.get(modname, {}).get(func.__name__)
        if target is None or not all(issubclass(t, (ndarray, np.ndarray)) for t in types):
            return NotImplemented
        return target(*args, **kwargs)


def _current_device():
    return _CUDA_DEVICE[0](0)


def _from_host(a):
    DEVICE.counters.to_device(a.nbytes)
    return ndarray._wrap(np.array(a))


def _is_scalar(x) -> bool:
    return isinstance(x, (bool, int, float, complex, np.generic))


def _index_key(key, shape):
    """Indices for ``ndarray[key]``: device arrays unwrapped; host index arrays allowed and
    counted as transfers; integer-array indices wrap around instead of raising ([D]:
    "Out-of-bounds indices: CuPy ... wraps around them")."""
    single = not isinstance(key, tuple)
    parts = [key] if single else list(key)
    axis = 0
    out = []
    for k in parts:
        if isinstance(k, ndarray):
            k = k._a
        elif isinstance(k, np.ndarray):
            DEVICE.counters.to_device(k.nbytes)
        elif isinstance(k, list):
            k = np.asarray([x._a if isinstance(x, ndarray) else x for x in k])
        if isinstance(k, np.ndarray) and k.dtype.kind in "iu" and k.ndim > 0 and axis < len(shape):
            k = np.mod(k, shape[axis]) if shape[axis] else k
        if k is None:
            out.append(k)
            continue
        if k is Ellipsis:
            axis = len(shape) - (len(parts) - 1 - parts.index(Ellipsis)) + 1
            out.append(k)
            continue
        out.append(k)
        axis += k.ndim if isinstance(k, np.ndarray) and k.dtype == bool else 1
    return out[0] if single else tuple(out)


def _nbytes_in(args) -> int:
    total = 0
    for a in args:
        if isinstance(a, ndarray):
            total += a._a.nbytes
        elif isinstance(a, (list, tuple)):
            total += _nbytes_in(a)
    return total


def _record(name: str, result, inputs=()):
    """Count one operation and wrap its result as device arrays (0-d for NumPy scalars)."""
    wrapped = wrap(result)
    DEVICE.counters.op(
        name,
        read=_nbytes_in(inputs),
        written=_nbytes_in(wrapped if isinstance(wrapped, (list, tuple)) else (wrapped,)),
    )
    return wrapped


def wrap(x):
    """NumPy results as device arrays: arrays and NumPy scalars (reductions return 0-d
    device arrays [D] "Reduction methods return zero-dimensional arrays")."""
    if isinstance(x, np.ndarray):
        return ndarray._wrap(x)
    if isinstance(x, np.generic):
        return ndarray._wrap(np.asarray(x))
    if isinstance(x, tuple):
        return tuple(wrap(v) for v in x)
    if isinstance(x, list):
        return [wrap(v) for v in x]
    return x


def unwrap_operand(x, where: str, *, allow_host: bool = False, allow_lists: bool = True):
    """A CuPy operand as NumPy: device arrays unwrapped, scalars kept, NumPy arrays refused."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, np.ndarray):
        if allow_host:
            DEVICE.counters.to_device(x.nbytes)
            return x
        raise _unsupported(x)  # [U], and cupy functions take cupy arrays only
    if isinstance(x, _SPARSE):
        return x
    if isinstance(x, (list, tuple)):
        if not allow_lists:
            raise _unsupported(x)  # [D] "ufuncs ... do not accept ... lists"
        return type(x)(unwrap_operand(v, where, allow_host=allow_host) for v in x)
    if hasattr(x, "toarray") and hasattr(x, "format"):  # a SciPy matrix handed to CuPy
        raise _unsupported(x)
    return x


def binary_method(name: str, reflected: bool = False):
    def method(self, other):
        if isinstance(other, _SPARSE):
            return NotImplemented
        f = NAMESPACE["cupy"][name]
        return f(other, self) if reflected else f(self, other)

    return method


for _name, _cp in [
    ("add", "add"),
    ("sub", "subtract"),
    ("mul", "multiply"),
    ("truediv", "true_divide"),
    ("floordiv", "floor_divide"),
    ("mod", "remainder"),
    ("pow", "power"),
    ("and", "bitwise_and"),
    ("or", "bitwise_or"),
    ("xor", "bitwise_xor"),
    ("lshift", "left_shift"),
    ("rshift", "right_shift"),
    ("matmul", "matmul"),
]:
    setattr(ndarray, f"__{_name}__", binary_method(_cp))
    setattr(ndarray, f"__r{_name}__", binary_method(_cp, reflected=True))

    def _inplace(self, other, _cp=_cp):
        NAMESPACE["cupy"][_cp](self, other, out=self)
        return self

    setattr(ndarray, f"__i{_name}__", _inplace)

for _name, _cp in [
    ("lt", "less"),
    ("le", "less_equal"),
    ("gt", "greater"),
    ("ge", "greater_equal"),
    ("eq", "equal"),
    ("ne", "not_equal"),
]:
    setattr(ndarray, f"__{_name}__", binary_method(_cp))

for _name, _cp in [
    ("neg", "negative"),
    ("pos", "positive"),
    ("abs", "absolute"),
    ("invert", "invert"),
]:

    def _unary(self, _cp=_cp):
        return NAMESPACE["cupy"][_cp](self)

    setattr(ndarray, f"__{_name}__", _unary)

ndarray.__hash__ = None  # type: ignore[assignment]


def _make_method(name: str, sig_text: str | None):
    sig = parse_signature(sig_text, drop_self=True)

    def method(self, *args, **kwargs):
        check_call(f"cupy.ndarray.{name}", sig, args, kwargs)
        args = [unwrap_operand(a, name) for a in args]
        kwargs = {k: unwrap_operand(v, name) for k, v in kwargs.items()}
        result = getattr(self._a, name)(*args, **kwargs)
        if result is None:  # in-place (sort, fill, put)
            DEVICE.counters.op(f"ndarray.{name}", read=self._a.nbytes, written=self._a.nbytes)
            return None
        return _record(f"ndarray.{name}", result, (self, *args))

    method.__name__ = name
    return method


_SPECIAL_METHODS = {
    "get",
    "set",
    "item",
    "tolist",
    "view",
    "device",
    "T",
    "mT",
    "real",
    "imag",
    "shape",
    "dtype",
    "ndim",
    "size",
    "nbytes",
    "itemsize",
    "strides",
    "flags",
    "base",
    "__getitem__",
    "__setitem__",
    "__init__",
}


def _install_methods() -> None:
    for name, entry in catalogue()["classes"]["cupy.ndarray"].items():
        if name in _SPECIAL_METHODS or entry["kind"] != "method":
            continue
        if hasattr(np.ndarray, name):
            setattr(ndarray, name, _make_method(name, entry.get("sig")))


_install_methods()
ndarray.__module__ = "cupy"
