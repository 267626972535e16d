"""Kernels receive the array module one way: ``am: ArrayModule`` first (see :mod:`gpu_sc.kernels`).

Every public function of every module of :mod:`gpu_sc.kernels` takes ``am`` as its first,
positional, required parameter, except the host-only functions the package docstring lists;
no kernel module infers the array module from its arrays (``module_of``).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import gpu_sc.kernels as kernels_pkg
from gpu_sc.dispatch.arrays import ArrayModule

#: Host-only functions (NumPy/pandas/SciPy on host data, no array module), as ``module.name``;
#: the same list as in the docstring of :mod:`gpu_sc.kernels`.
HOST_ONLY = frozenset(
    {
        "chunks.stack_rows",
        "embedding_quality.kl_divergence",
        "embedding_quality.neighbourhood_preservation",
        "embedding_quality.trustworthiness",
        "hvg.dispersion_table",
        "hvg.mean_var",
        "hvg.select_cutoffs",
        "hvg.select_top",
        "hvg.seurat_table",
        "hvg.seurat_v3_fits",
        "hvg.seurat_v3_table",
        "hvg.seurat_v3_norm_var",
        "ivf.default_nlist",
        "ivf.default_nprobe",
        "markers.gene_blocks",
        "qc.qc_tables",
        "regress.categorical_fit",
        "score_genes.control_genes",
        "umap.find_ab_params",
    }
)


def _modules():
    return [
        importlib.import_module(f"{kernels_pkg.__name__}.{info.name}")
        for info in pkgutil.iter_modules(kernels_pkg.__path__)
    ]


def _public_functions() -> dict[str, object]:
    """``module.name`` -> function, for the public functions each kernel module defines
    (re-exports of other modules' functions belong to those modules)."""
    out = {}
    for mod in _modules():
        short = mod.__name__.rpartition(".")[2]
        for name, obj in vars(mod).items():
            if name.startswith("_") or not inspect.isfunction(obj):
                continue
            if obj.__module__ != mod.__name__:
                continue
            out[f"{short}.{name}"] = obj
    return out


def _takes_am_first(func) -> str | None:
    """None when ``func``'s first parameter is a required positional ``am: ArrayModule``,
    else what is wrong."""
    params = list(inspect.signature(func).parameters.values())
    if not params:
        return "takes no parameters"
    first = params[0]
    if first.name != "am":
        return f"first parameter is {first.name!r}, not 'am'"
    if first.kind not in (first.POSITIONAL_ONLY, first.POSITIONAL_OR_KEYWORD):
        return f"'am' is {first.kind.description}, not positional"
    if first.default is not first.empty:
        return f"'am' has a default ({first.default!r})"
    if first.annotation not in ("ArrayModule", ArrayModule):
        return f"'am' is annotated {first.annotation!r}, not ArrayModule"
    return None


def test_public_kernels_take_am_first():
    functions = _public_functions()
    checked = {name: f for name, f in functions.items() if name not in HOST_ONLY}
    assert len(checked) > 40  # the discovery found the kernels (not a vacuous pass)
    bad = sorted(f"{name}: {why}" for name, f in checked.items() if (why := _takes_am_first(f)))
    assert bad == []


def test_host_only_list_is_current_and_documented():
    functions = _public_functions()
    missing = sorted(HOST_ONLY - functions.keys())
    assert missing == [], "listed as host-only but not a public kernel function"
    # A host-only entry that takes ``am`` first no longer needs the exemption.
    takes_am = sorted(name for name in HOST_ONLY if _takes_am_first(functions[name]) is None)
    assert takes_am == []
    modules = {name.partition(".")[0] for name in functions}
    documented = {
        m.group(1)
        for m in re.finditer(r"``(\w+\.\w+)``", kernels_pkg.__doc__ or "")
        if m.group(1).partition(".")[0] in modules
    }
    assert documented == HOST_ONLY


def test_kernel_modules_do_not_infer_the_array_module():
    root = Path(kernels_pkg.__file__).parent
    offenders = []
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            name = (
                node.name
                if isinstance(node, ast.alias)
                else node.id
                if isinstance(node, ast.Name)
                else node.attr
                if isinstance(node, ast.Attribute)
                else None
            )
            if name == "module_of":
                offenders.append(f"{path.name}:{getattr(node, 'lineno', '?')}")
    assert offenders == []
