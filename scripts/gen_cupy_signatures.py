"""Regenerate src/gpu_sc/testing/cupy_double/cupy_signatures.json from an installed CuPy.

Needs the CuPy wheel only (no GPU, no CUDA libraries for the modules listed):

    python3 -m venv /tmp/cupyvenv && /tmp/cupyvenv/bin/pip install cupy-cuda12x==14.2.*
    /tmp/cupyvenv/bin/python scripts/gen_cupy_signatures.py > \
        src/gpu_sc/testing/cupy_double/cupy_signatures.json

Signatures come from ``inspect.signature`` (Python functions) or, for Cython functions,
methods and ufuncs (no ``__signature__``), from the first line of their docstring, which
CuPy's Cython build writes as ``name(params)`` (``embedsignature``). ``null`` = unknown.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import sys
import textwrap
from pathlib import Path

import cupy
import cupyx.scipy.sparse
import cupyx.scipy.special

MODULES = {
    "cupy": cupy,
    "cupy.linalg": cupy.linalg,
    "cupy.random": cupy.random,
    "cupy.fft": cupy.fft,
    "cupyx": cupyx,
    "cupyx.scipy.sparse": cupyx.scipy.sparse,
    "cupyx.scipy.special": cupyx.scipy.special,
}
CLASSES = {
    "cupy.ndarray": cupy.ndarray,
    "cupy.random.RandomState": cupy.random.RandomState,
    "cupyx.scipy.sparse.csr_matrix": cupyx.scipy.sparse.csr_matrix,
    "cupyx.scipy.sparse.csc_matrix": cupyx.scipy.sparse.csc_matrix,
    "cupyx.scipy.sparse.coo_matrix": cupyx.scipy.sparse.coo_matrix,
    "cupyx.scipy.sparse.dia_matrix": cupyx.scipy.sparse.dia_matrix,
}
UFUNC_METHODS = ("reduce", "accumulate", "reduceat", "outer", "at")
_DOC_SIG = re.compile(r"^\s*[\w.]*?(\w+)\((.*)\)(\s*->.*)?$")


def _sig(obj) -> str | None:
    try:
        return str(inspect.signature(obj)).split(" -> ")[0]
    except (TypeError, ValueError):
        pass
    doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
    if doc:
        m = _DOC_SIG.match(doc[0])
        if m:
            params = m.group(2).replace("\\*", "*")
            params = re.sub(
                r"\b(int|bint|str|object|tuple|Py_ssize_t|_ndarray_base)\s+(?=\w)", "", params
            )
            return f"({params})"
    return None


def _raises_not_implemented(func) -> bool:
    """A Python method whose body (docstring aside) is ``raise NotImplementedError``
    (cupyx's ``todia``, ``todok``, ``tolil``, ``tobsr`` ...)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    except (OSError, TypeError, SyntaxError):
        return False
    body = tree.body[0].body if tree.body and hasattr(tree.body[0], "body") else []
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return (
        len(body) == 1
        and isinstance(body[0], ast.Raise)
        and body[0].exc is not None
        and "NotImplementedError" in ast.unparse(body[0].exc)
    )


def _kind(obj) -> str:
    if isinstance(obj, cupy.ufunc):
        return "ufunc"
    if inspect.ismodule(obj):
        return "module"
    if inspect.isclass(obj):
        return "class"
    if callable(obj):
        return "function"
    return "value"


def main() -> None:
    out = {"cupy_version": cupy.__version__, "names": {}, "classes": {}}
    for prefix, mod in MODULES.items():
        for name in sorted(dir(mod)):
            if name.startswith("_"):
                continue
            try:
                obj = getattr(mod, name)
            except Exception:  # a lazily imported CUDA library
                continue
            kind = _kind(obj)
            entry = {"kind": kind}
            if kind in ("function", "ufunc", "class"):
                entry["sig"] = _sig(obj)
            if kind == "ufunc":
                entry["nin"] = obj.nin
                entry["methods"] = {
                    m: _sig(getattr(obj, m)) for m in UFUNC_METHODS if hasattr(obj, m)
                }
            out["names"][f"{prefix}.{name}"] = entry
    for cname, cls in CLASSES.items():
        members = {}
        for name in sorted(dir(cls)):
            if name.startswith("_") and name not in ("__init__", "__getitem__", "__setitem__"):
                continue
            try:
                obj = inspect.getattr_static(cls, name)
            except AttributeError:
                continue
            if isinstance(obj, (property,)) or type(obj).__name__ in (
                "getset_descriptor",
                "member_descriptor",
            ):
                members[name] = {"kind": "attribute"}
            else:
                members[name] = {"kind": "method", "sig": _sig(getattr(cls, name))}
                if _raises_not_implemented(getattr(cls, name)):
                    members[name]["not_implemented"] = True
        out["classes"][cname] = members
    # cupyx.scipy.sparse.linalg imports cuBLAS at import time (no CUDA libraries here):
    # its names and signatures are read from the source instead.
    pkg = Path(cupyx.__file__).parent / "scipy" / "sparse" / "linalg"
    init = ast.parse((pkg / "__init__.py").read_text())
    for node in init.body:
        if isinstance(node, ast.ImportFrom) and node.module.startswith(
            pkg_mod := "cupyx.scipy.sparse.linalg."
        ):
            src = ast.parse((pkg / (node.module[len(pkg_mod) :] + ".py")).read_text())
            defs = {d.name: d for d in src.body if isinstance(d, (ast.FunctionDef, ast.ClassDef))}
            for alias in node.names:
                d = defs.get(alias.name)
                entry = {"kind": "class" if isinstance(d, ast.ClassDef) else "function"}
                if isinstance(d, ast.FunctionDef):
                    entry["sig"] = "(" + ast.unparse(d.args) + ")"
                out["names"][f"cupyx.scipy.sparse.linalg.{alias.asname or alias.name}"] = entry
    json.dump(out, sys.stdout, indent=0, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
