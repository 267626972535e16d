"""``cupyx.scipy.sparse`` of the double: csr/csc/coo/dia matrices on SciPy, with cupyx's rules.

- values only bool/float32/float64/complex64/complex128 [S]; other dtypes raise cupyx's
  ``ValueError`` in every constructor, ``astype`` and result;
- index arrays int32 while the shape and nnz fit (cupyx's ``_get_index_dtype``), int64 above;
- only the methods cupyx's class has [C] (``lil``, ``getnnz(axis)`` on dia ... raise
  ``AttributeError``); each checked against cupyx's signature;
- a dense operand must be a device array: NumPy arrays are refused [U]; SciPy functions see
  no ``scipy.sparse`` matrix (``scipy.sparse.issparse(x)`` is False, as for cupyx);
- ``.get()`` is the explicit transfer to a SciPy matrix; no ``__array__`` (as in cupyx, so
  ``np.asarray(x)`` yields a 0-d object array).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from . import _core
from ._core import DEVICE, ndarray
from ._rules import catalogue, check_call, parse_signature

_ALLOWED = "?fdFD"  # [S]
_FORMATS = ("csr", "csc", "coo", "dia")


def _check_dtype(dtype) -> None:
    if np.dtype(dtype).char not in _ALLOWED:
        raise ValueError("Only bool, float32, float64, complex64 and complex128 are supported")


def _index_arrays(m) -> None:
    """int32 indices while they fit (cupyx stores ``'i'`` indices), in place on ``m``."""
    fits = max(m.shape + (m.nnz,)) < 2**31
    idx = np.int32 if fits else np.int64
    names = {
        "csr": ("indices", "indptr"),
        "csc": ("indices", "indptr"),
        "coo": ("row", "col"),
        "dia": ("offsets",),
    }[m.format]
    for n in names:
        arr = getattr(m, n)
        if arr.dtype != idx:
            setattr(m, n, arr.astype(idx))


def _device_nbytes(m) -> int:
    return sum(
        getattr(m, n).nbytes
        for n in ("data", "indices", "indptr", "row", "col", "offsets")
        if hasattr(m, n)
    )


def _from_scipy(m, fmt: str | None = None) -> spmatrix:
    fmt = fmt or m.format
    if fmt not in _FORMATS:
        fmt = "csr"
    m = sp.csr_matrix(m) if fmt == "csr" else getattr(sp, f"{fmt}_matrix")(m)
    _check_dtype(m.dtype)
    _index_arrays(m)
    for n in ("data", "indices", "indptr", "row", "col", "offsets"):
        if hasattr(m, n):
            _core._account(getattr(m, n))
    out = object.__new__(CLASSES[fmt])
    out._m = m
    return out


def _unwrap(x):
    if isinstance(x, spmatrix):
        return x._m
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, np.ndarray) or sp.issparse(x):
        raise TypeError(f"Unsupported type {type(x)}")  # [U]: host data is not an operand
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v) for v in x)
    return x


def _index(k):
    """Index arrays may come from host: cupyx's ``_index.py`` turns them into device arrays
    with ``cupy.array`` (a transfer, counted)."""
    if isinstance(k, np.ndarray):
        DEVICE.counters.to_device(k.nbytes)
        return k
    return _unwrap(k)


def _wrap_result(name: str, result, inputs=()):
    if sp.issparse(result):
        out = _from_scipy(result)
    elif isinstance(result, np.matrix):  # cupyx has no matrix type: plain 2-D arrays
        out = _core.wrap(np.asarray(result))
    else:
        out = _core.wrap(result)
    read = sum(
        _device_nbytes(i._m)
        if isinstance(i, spmatrix)
        else (i._a.nbytes if isinstance(i, ndarray) else 0)
        for i in inputs
    )
    written = (
        _device_nbytes(out._m)
        if isinstance(out, spmatrix)
        else (out._a.nbytes if isinstance(out, ndarray) else 0)
    )
    DEVICE.counters.op(name, read=read, written=written)
    return out


def _matmul_flops(a, b) -> int:
    if sp.issparse(a):
        k = b.shape[1] if getattr(b, "ndim", 1) > 1 else 1
        return 2 * a.nnz * k
    if sp.issparse(b):
        return 2 * b.nnz * (a.shape[0] if a.ndim > 1 else 1)
    return 0


class spmatrix:  # cupyx's name
    """Base class of the double's cupyx matrices (``cupyx.scipy.sparse.spmatrix``)."""

    format = ""
    __array_priority__ = 101

    def __init__(self, arg1, shape=None, dtype=None, copy=False):
        fmt = self.format
        if isinstance(arg1, spmatrix):
            m = arg1._m.copy() if copy else arg1._m
        elif sp.issparse(arg1):  # cupyx accepts a SciPy matrix: an explicit transfer
            DEVICE.counters.to_device(_device_nbytes(arg1))
            m = arg1.copy()
        elif isinstance(arg1, ndarray):
            m = arg1._a
        elif isinstance(arg1, tuple) and len(arg1) == 2 and all(isinstance(v, int) for v in arg1):
            m = sp.csr_matrix(arg1, dtype=dtype or np.float64)
        elif isinstance(arg1, tuple):
            m = _unwrap_tuple(arg1)
            m = getattr(sp, f"{fmt}_matrix")(m, shape=shape, dtype=dtype, copy=copy)
        else:
            raise ValueError("Unsupported initializer format")  # numpy dense included
        m = getattr(sp, f"{fmt}_matrix")(m, shape=shape, dtype=dtype)
        _check_dtype(m.dtype)
        _index_arrays(m)
        self._m = m
        for n in ("data", "indices", "indptr", "row", "col", "offsets"):
            if hasattr(m, n):
                _core._account(getattr(m, n))

    # -- attributes ------------------------------------------------------------------------
    shape = property(lambda self: self._m.shape)
    dtype = property(lambda self: self._m.dtype)
    nnz = property(lambda self: self._m.nnz)
    ndim = property(lambda self: 2)
    size = property(lambda self: self._m.nnz)

    def _field(name):
        def get(self):
            return ndarray._wrap(getattr(self._m, name), account=False)

        def put(self, value):
            setattr(self._m, name, _unwrap(value))

        return property(get, put)

    data = _field("data")

    def get(self, stream=None):
        DEVICE.counters.to_host(_device_nbytes(self._m))
        return self._m.copy()

    def __bool__(self):
        if self.shape == (1, 1):
            return self.nnz != 0
        raise ValueError("The truth value of an array with more than one element is ambiguous.")

    def __len__(self):
        raise TypeError("sparse matrix length is ambiguous; use getnnz() or shape[0]")

    def __repr__(self):
        return f"<cupyx {self.format}_matrix (double) {self.shape} nnz={self.nnz}>"

    def __getattr__(self, name):
        allowed = _methods(self.format)
        if (
            name.startswith("_")
            or name not in allowed
            or not hasattr(self.__dict__.get("_m", sp.csr_matrix((1, 1))), name)
        ):
            raise AttributeError(f"'{self.format}_matrix' object has no attribute {name!r}")
        sig = parse_signature(allowed[name].get("sig"), drop_self=True)
        label = f"cupyx.scipy.sparse.{self.format}_matrix.{name}"
        if allowed[name].get("not_implemented"):  # cupyx's body is `raise NotImplementedError`

            def not_implemented(*args, **kwargs):
                raise NotImplementedError(f"{label} is not implemented in cupyx (CuPy 14.2)")

            return not_implemented

        def method(*args, **kwargs):
            check_call(label, sig, args, kwargs)
            if name == "astype":
                _check_dtype(args[0] if args else kwargs["dtype"])
            a = [_unwrap(v) for v in args]
            kw = {k: _unwrap(v) for k, v in kwargs.items()}
            if name in ("sum", "mean", "max", "min") and kw.get("out") is None:
                kw.pop("out", None)
            result = getattr(self._m, name)(*a, **kw)
            if result is None:  # in place (eliminate_zeros, sort_indices, sum_duplicates)
                _index_arrays(self._m)
                DEVICE.counters.op(label, read=_device_nbytes(self._m))
                return None
            return _wrap_result(label, result, (self, *args))

        return method

    # -- operators -------------------------------------------------------------------------
    def _binary(self, other, op: str, label: str):
        if isinstance(other, np.ndarray) or sp.issparse(other):
            raise TypeError(f"Unsupported type {type(other)}")  # [U]
        a, b = self._m, _unwrap(other)
        if op in ("__matmul__", "__rmatmul__", "__mul__", "__rmul__") and not np.isscalar(b):
            DEVICE.counters.add_flops(
                _matmul_flops(*((b, a) if op.startswith("__r") else (a, b))),
                np.result_type(a.dtype, getattr(b, "dtype", np.float64)),
            )
        result = getattr(a, op)(b)
        if result is NotImplemented:
            return NotImplemented
        return _wrap_result(
            f"cupyx.scipy.sparse.{self.format}_matrix.{label}", result, (self, other)
        )

    def __getitem__(self, key):
        if "__getitem__" not in _methods(self.format):
            raise TypeError(f"'{self.format}_matrix' object is not subscriptable")
        key = _index(key) if not isinstance(key, tuple) else tuple(_index(k) for k in key)
        return _wrap_result(f"{self.format}_matrix.__getitem__", self._m[key], (self,))

    def __setitem__(self, key, value):
        if "__setitem__" not in _methods(self.format):
            raise TypeError(f"'{self.format}_matrix' object does not support item assignment")
        key = _unwrap(key) if not isinstance(key, tuple) else tuple(_unwrap(k) for k in key)
        self._m[key] = _unwrap(value)


for _op in ("add", "sub", "mul", "matmul", "truediv", "pow"):
    for _name in (f"__{_op}__", f"__r{_op}__"):
        if _name in ("__rpow__",):
            continue

        def _method(self, other, _name=_name):
            return self._binary(other, _name, _name)

        setattr(spmatrix, _name, _method)
spmatrix.__neg__ = lambda self: _wrap_result(f"{self.format}_matrix.__neg__", -self._m, (self,))
spmatrix.__abs__ = lambda self: _wrap_result(f"{self.format}_matrix.__abs__", abs(self._m), (self,))


_core.register_sparse(spmatrix)


def _unwrap_tuple(t):
    return tuple(_unwrap_tuple(v) if isinstance(v, tuple) else _unwrap(v) for v in t)


def _methods(fmt: str) -> dict[str, Any]:
    return catalogue()["classes"][f"cupyx.scipy.sparse.{fmt}_matrix"]


class csr_matrix(spmatrix):
    format = "csr"
    indices = spmatrix._field("indices")
    indptr = spmatrix._field("indptr")
    has_canonical_format = property(lambda self: self._m.has_canonical_format)


class csc_matrix(spmatrix):
    format = "csc"
    indices = spmatrix._field("indices")
    indptr = spmatrix._field("indptr")
    has_canonical_format = property(lambda self: self._m.has_canonical_format)


class coo_matrix(spmatrix):
    format = "coo"
    row = spmatrix._field("row")
    col = spmatrix._field("col")


class dia_matrix(spmatrix):
    format = "dia"
    offsets = spmatrix._field("offsets")


for _c in (spmatrix, csr_matrix, csc_matrix, coo_matrix, dia_matrix):
    _c.__module__ = "cupyx.scipy.sparse"
for _c in (csr_matrix, csc_matrix, coo_matrix, dia_matrix):
    for _n in ("T", "A", "H"):  # attributes in cupyx's list that SciPy's matrices have
        if _n in _methods(_c.format):
            setattr(
                _c,
                _n,
                property(
                    lambda self, _n=_n: _wrap_result(
                        f"{self.format}_matrix.{_n}",
                        getattr(self._m, _n) if _n != "A" else self._m.toarray(),
                        (self,),
                    )
                ),
            )
CLASSES = {"csr": csr_matrix, "csc": csc_matrix, "coo": coo_matrix, "dia": dia_matrix}


def _function(name: str, sig_text: str | None):
    sig = parse_signature(sig_text)
    target = getattr(sp, name)
    fmt_default = {
        "diags": "dia",
        "spdiags": "dia",
        "eye": "dia",
        "identity": "dia",
        "kron": "bsr",
        "block_diag": "coo",
        "bmat": "coo",
    }.get(name)

    def f(*args, **kwargs):
        check_call(f"cupyx.scipy.sparse.{name}", sig, args, kwargs)
        a = [_unwrap(v) for v in args]
        kw = {k: _unwrap(v) for k, v in kwargs.items()}
        result = target(*a, **kw)
        if sp.issparse(result):
            fmt = kwargs.get("format") or fmt_default or result.format
            result = result.asformat(fmt if fmt in _FORMATS else "csr")
        return _wrap_result(f"cupyx.scipy.sparse.{name}", result, args)

    f.__name__ = name
    return f


def namespace() -> dict[str, Any]:
    ns: dict[str, Any] = {
        "spmatrix": spmatrix,
        "issparse": lambda x: isinstance(x, spmatrix),
        "isspmatrix": lambda x: isinstance(x, spmatrix),
        **{f"isspmatrix_{f}": (lambda x, f=f: isinstance(x, CLASSES[f])) for f in _FORMATS},
        **{f"{f}_matrix": CLASSES[f] for f in _FORMATS},
    }
    for qualname, entry in catalogue()["names"].items():
        mod, name = qualname.rsplit(".", 1)
        if mod != "cupyx.scipy.sparse" or name in ns:
            continue
        if entry["kind"] == "function" and hasattr(sp, name):
            ns[name] = _function(name, entry.get("sig"))
        elif entry["kind"] == "class" and hasattr(sp, name) and name.endswith("Warning"):
            ns[name] = getattr(sp, name)
    return ns


def linalg_namespace() -> dict[str, Any]:
    """``cupyx.scipy.sparse.linalg``: ``eigsh`` with cupyx's rules; other names delegate."""
    import scipy.sparse.linalg as spla

    sigs = {
        q.rsplit(".", 1)[1]: e
        for q, e in catalogue()["names"].items()
        if q.startswith("cupyx.scipy.sparse.linalg.")
    }
    eigsh_sig = parse_signature(sigs["eigsh"]["sig"])

    def eigsh(*args, **kwargs):
        """cupyx's thick-restart Lanczos: ``which`` only 'LM'/'LA'/'SA', and it never raises
        for lack of convergence (it returns its last iterate): SciPy's
        ``ArpackNoConvergence`` is turned into that (``cupyx/scipy/sparse/linalg/_eigen.py``)."""
        check_call("cupyx.scipy.sparse.linalg.eigsh", eigsh_sig, args, kwargs)
        bound = eigsh_sig.bind(*args, **kwargs)
        p = {k: v for k, v in bound.arguments.items()}
        a, k = p["a"], p.get("k", 6)
        which = p.get("which", "LM")
        if which not in ("LM", "LA", "SA"):
            raise ValueError(f"which must be 'LM','LA'or'SA' (actual: {which})")
        if a.shape[0] != a.shape[1]:
            raise ValueError(f"expected square matrix (shape: {a.shape})")
        if not 0 < k < a.shape[0]:
            raise ValueError(f"k must be greater than 0 and smaller than n (actual: {k})")
        m = _unwrap(a)
        v0 = p.get("v0")
        kw = dict(
            k=k,
            which=which,
            ncv=p.get("ncv"),
            maxiter=p.get("maxiter"),
            tol=p.get("tol", 0),
            v0=None if v0 is None else _unwrap(v0),
        )
        try:
            vals, vecs = spla.eigsh(m, **kw)
        except spla.ArpackNoConvergence as err:
            n = a.shape[0]
            vals = np.full(k, np.nan)
            vecs = np.zeros((n, k))
            got = len(err.eigenvalues)
            vals[:got], vecs[:, :got] = err.eigenvalues, err.eigenvectors
        order = np.argsort(vals)
        vals, vecs = vals[order], vecs[:, order]
        if not p.get("return_eigenvectors", True):
            return _wrap_result("cupyx.scipy.sparse.linalg.eigsh", vals, (a,))
        return _wrap_result("cupyx.scipy.sparse.linalg.eigsh", (vals, vecs), (a,))

    ns: dict[str, Any] = {"eigsh": eigsh}
    for name, entry in sigs.items():
        if name not in ns and entry["kind"] == "function" and hasattr(spla, name):
            ns[name] = _function_from(
                spla, f"cupyx.scipy.sparse.linalg.{name}", name, entry.get("sig")
            )
    return ns


def _function_from(module, label: str, name: str, sig_text: str | None):
    sig = parse_signature(sig_text)
    target = getattr(module, name)

    def f(*args, **kwargs):
        check_call(label, sig, args, kwargs)
        result = target(*[_unwrap(v) for v in args], **{k: _unwrap(v) for k, v in kwargs.items()})
        return _wrap_result(label, result, args)

    f.__name__ = name
    return f
