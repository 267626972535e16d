"""CuPy 14.2's names and signatures (from the committed list) and the counters of the double.

Sources cited by the rules (``[D]`` etc. in comments across this package):

- [D] CuPy docs, "Differences between CuPy and NumPy"
  (https://docs.cupy.dev/en/v14.2.0/user_guide/difference.html).
- [I] CuPy docs, "Interoperability" / ``cupy.ndarray.__array__``: implicit conversion to NumPy
  raises ``TypeError`` (``cupy/_core/core.pyx``, ``_ndarray_base.__array__``).
- [U] ``cupy/_core/_kernel.pyx`` ``_preprocess_arg``: a ufunc operand that is neither a CuPy
  array nor a scalar raises ``TypeError('Unsupported type ...')``; ``__array_ufunc__`` doc:
  "If binary, only allow if second argument is another cupy ndarray or a number".
- [S] ``cupyx/scipy/sparse/_compressed.py`` / ``_coo.py`` / ``_dia.py`` constructors:
  ``ValueError('Only bool, float32, float64, complex64 and complex128 are supported')``.
- [C] ``cupy_signatures.json`` in this folder: every public name of ``cupy``, ``cupy.linalg``,
  ``cupy.random``, ``cupy.fft``, ``cupyx.scipy.sparse``, ``cupyx.scipy.special`` and the methods
  of ``cupy.ndarray``, ``RandomState`` and the cupyx matrices, with their Python signatures,
  generated from the real ``cupy-cuda12x==14.2.0`` wheel by ``scripts/gen_cupy_signatures.py``.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import inspect
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SIGNATURES_FILE = Path(__file__).with_name("cupy_signatures.json")
_NO_DEFAULT = inspect.Parameter.empty


@functools.cache
def catalogue() -> dict:
    """The committed list of CuPy 14.2 names and signatures [C]."""
    return json.loads(SIGNATURES_FILE.read_text())


def cupy_version() -> str:
    return catalogue()["cupy_version"]


class _Default:
    def __repr__(self) -> str:
        return "<cupy default>"


DEFAULT = _Default()


@functools.cache
def parse_signature(text: str | None, drop_self: bool = False) -> inspect.Signature | None:
    """An ``inspect.Signature`` with CuPy's parameter names and kinds (defaults opaque)."""
    if text is None:
        return None
    cleaned = re.sub(r"<[^<>]*>", "None", text)
    try:
        fn = ast.parse(f"def f{cleaned}: pass").body[0]
    except SyntaxError:
        return None
    a = fn.args
    params: list[inspect.Parameter] = []
    P = inspect.Parameter
    positional = [(x, P.POSITIONAL_ONLY) for x in a.posonlyargs] + [
        (x, P.POSITIONAL_OR_KEYWORD) for x in a.args
    ]
    n_def = len(a.defaults)
    for i, (arg, kind) in enumerate(positional):
        has_default = i >= len(positional) - n_def
        params.append(P(arg.arg, kind, default=DEFAULT if has_default else _NO_DEFAULT))
    if a.vararg:
        params.append(P(a.vararg.arg, P.VAR_POSITIONAL))
    for arg, d in zip(a.kwonlyargs, a.kw_defaults, strict=True):
        params.append(P(arg.arg, P.KEYWORD_ONLY, default=_NO_DEFAULT if d is None else DEFAULT))
    if a.kwarg:
        params.append(P(a.kwarg.arg, P.VAR_KEYWORD))
    if drop_self and params and params[0].name == "self":
        params = params[1:]
    return inspect.Signature(params)


def check_call(qualname: str, sig: inspect.Signature | None, args, kwargs) -> None:
    """Raise CuPy's ``TypeError`` for a keyword or arity CuPy's function does not accept [C]."""
    if sig is None:
        return
    try:
        sig.bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"{qualname}() {exc} (CuPy 14.2 signature {sig})") from None


@dataclass
class Counters:
    """What the double saw: the raw material of the GPU cost model (item 3 of issue 13).

    ``ops``: calls of CuPy functions, ufuncs, array methods and operators, and cupyx sparse
    methods (each would be one or more kernel launches on a GPU); ``syncs``: operations that
    block the host until the device is done (``.get()``, ``asnumpy``, ``bool/int/float``,
    ``item``, ``tolist``, ``synchronize``); ``h2d``/``d2h``: transfers with their bytes;
    ``bytes_read``/``bytes_written``: device bytes the ops read and wrote; ``flops``: dense
    and sparse matrix products (2 per multiply-add), of which ``flops_fp64`` in double
    precision (float64/complex128 operands: priced at the card's FP64 rate).

    Fused kernels (:mod:`gpu_sc.kernels.cuda`) run their array-generic reference on the double;
    :meth:`priced_as` makes the counters show the kernel's declared cost instead of the
    reference's calls (``by_name`` gets ``kernel:<name>``; ``kernels`` counts the calls).
    """

    ops: int = 0
    syncs: int = 0
    h2d: int = 0
    d2h: int = 0
    h2d_bytes: int = 0
    d2h_bytes: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    flops: int = 0
    flops_fp64: int = 0
    kernels: int = 0
    by_name: dict[str, int] = field(default_factory=dict)

    def add_flops(self, n: int, dtype) -> None:
        """Count ``n`` flops computed in ``dtype`` (float64/complex128: also ``flops_fp64``)."""
        self.flops += int(n)
        if n and np.dtype(dtype) in (np.float64, np.complex128):
            self.flops_fp64 += int(n)

    def kernel(
        self, name: str, *, read=0, written=0, flops=0, flop_dtype="float64", launches=1, syncs=0
    ) -> None:
        """Count one fused kernel call by its declared cost (launches count as ops)."""
        self.kernels += 1
        self.ops += int(launches)
        self.syncs += int(syncs)
        self.bytes_read += int(read)
        self.bytes_written += int(written)
        self.add_flops(int(flops), flop_dtype)
        self.by_name[f"kernel:{name}"] = self.by_name.get(f"kernel:{name}", 0) + int(launches)

    @contextlib.contextmanager
    def priced_as(self, name: str, cost):
        """Run a block (a kernel's reference) whose counts are replaced by ``cost``, a
        :class:`gpu_sc.kernels.cuda.KernelCost`: the block's own ops, syncs, transfers, bytes
        and flops are dropped, the declared ones recorded."""
        saved = {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.__dict__.items()}
        try:
            yield self
        finally:
            self.__dict__.update(saved)
            self.kernel(
                name,
                read=cost.read,
                written=cost.written,
                flops=cost.flops,
                flop_dtype=cost.flop_dtype,
                launches=cost.launches,
                syncs=cost.syncs,
            )

    def op(self, name: str, read: int = 0, written: int = 0) -> None:
        self.ops += 1
        self.bytes_read += read
        self.bytes_written += written
        self.by_name[name] = self.by_name.get(name, 0) + 1

    def sync(self) -> None:
        self.syncs += 1

    def to_host(self, nbytes: int) -> None:
        self.syncs += 1
        self.d2h += 1
        self.d2h_bytes += int(nbytes)

    def to_device(self, nbytes: int) -> None:
        self.h2d += 1
        self.h2d_bytes += int(nbytes)

    def snapshot(self) -> dict[str, Any]:
        d = {
            k: getattr(self, k)
            for k in (
                "ops",
                "syncs",
                "h2d",
                "d2h",
                "h2d_bytes",
                "d2h_bytes",
                "bytes_read",
                "bytes_written",
                "flops",
                "flops_fp64",
                "kernels",
            )
        }
        d["by_name"] = dict(self.by_name)
        return d

    def reset(self) -> None:
        for k, v in Counters().__dict__.items():
            setattr(self, k, v)
