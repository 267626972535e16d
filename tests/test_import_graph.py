"""The package's import graph at import time: no cycles, and no module importing upward.

Only module-level imports count (imports inside functions run later, on use; imports under
``if TYPE_CHECKING:`` never run). Layers, lowest first; a module may import its own layer
and the layers below it, never a layer above.
"""

from __future__ import annotations

import ast
from pathlib import Path

import gpu_sc

ROOT = Path(gpu_sc.__file__).parent

#: Lowest first. ``gpu_sc.catalogue`` is pure data (functions named as strings, resolved on
#: use), so every layer may read it.
LAYERS = [
    ("gpu_sc._settings", "gpu_sc._progress", "gpu_sc._scanpy_compat", "gpu_sc.catalogue"),
    ("gpu_sc.backends",),  # the registry of backends: names, availability, resolution
    ("gpu_sc.dispatch",),
    ("gpu_sc.kernels",),
    ("gpu_sc.engine",),
    ("gpu_sc.dask",),  # the engine's kernels mapped over Dask blocks
    ("gpu_sc.steps", "gpu_sc.pp", "gpu_sc.tl"),
    ("gpu_sc.datasets", "gpu_sc.io", "gpu_sc.pipeline", "gpu_sc.scverse_backend"),
    ("gpu_sc.parity", "gpu_sc.bench", "gpu_sc.report"),
    ("gpu_sc.cli",),
    ("gpu_sc",),  # the package's facade
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(module: str) -> int:
    best, depth = None, -1
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and p.count(".") > depth:
                best, depth = i, p.count(".")
    assert best is not None, f"{module} is in no layer"
    return best


def _top_level_imports(tree: ast.Module):
    """Import nodes executed at import time (module body, if/try blocks; not functions, not
    ``if TYPE_CHECKING``)."""
    todo = list(tree.body)
    while todo:
        node = todo.pop(0)
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            test = ast.unparse(node.test)
            if "TYPE_CHECKING" not in test:
                todo += node.body + node.orelse
        elif isinstance(node, ast.Try):
            todo += node.body + node.orelse + node.finalbody
            for h in node.handlers:
                todo += h.body
        elif isinstance(node, ast.With):
            todo += node.body


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in _top_level_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    base = ".".join(base + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                    for a in node.names
                ]
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t.startswith("gpu_sc") and t != mod:
                    graph[mod].add(t)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _is_package_parent(importer: str, imported: str) -> bool:
    """A subpackage's module importing its own package's ``__init__`` (``from . import x``
    resolves to the package when ``x`` is not a module)."""
    return importer.startswith(imported + ".")


def test_no_import_cycles():
    graph = import_graph()
    # A package __init__ importing its own submodules and those importing siblings through
    # the package is how Python packages work; only cycles between distinct modules count.
    pruned = {m: {t for t in ts if not _is_package_parent(m, t)} for m, ts in graph.items()}
    assert _cycles(pruned) == []


def test_no_module_imports_upward():
    upward = sorted(
        f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
        for m, ts in import_graph().items()
        for t in ts
        if _layer(t) > _layer(m)
    )
    assert upward == []


def _every_import(path: Path):
    """``(line, module, name)`` for every import in ``path``, at any depth (functions too),
    relative imports resolved; ``name`` is None for ``import module``."""
    mod = _module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:
                yield node.lineno, target, a.name


def _package(module: str) -> str:
    """``gpu_sc.engine.pca`` -> ``gpu_sc.engine``; a top-level module is its own package."""
    return ".".join(module.split(".")[:2])


#: gpu_sc-wide internals: private to the distribution, shared by all its packages.
_SHARED_PRIVATE = ("gpu_sc._settings", "gpu_sc._progress", "gpu_sc._scanpy_compat")


def test_no_private_name_crosses_a_package():
    """A leading underscore means "this package's own": another gpu_sc package reaches only
    public names (a private helper it needs gets a public name in its home module)."""
    crossings = []
    for path in sorted(ROOT.rglob("*.py")):
        mod = _module_name(path)
        for line, target, name in _every_import(path):
            if not target.startswith("gpu_sc") or target.startswith(_SHARED_PRIVATE):
                continue
            full = f"{target}.{name}" if name else target
            if _package(full) == _package(mod):
                continue
            parts = full.split(".")[1:]
            if any(p.startswith("_") and not p.startswith("__") for p in parts):
                crossings.append(f"{mod}:{line} imports {full}")
    assert crossings == []


#: The one production module that reaches gpu_sc.testing: ``gpu-sc bench --model`` runs the
#: cost model's counting run on the CuPy double (bench tooling, imported only in that mode).
_TOOLING_ENTRY = {("gpu_sc.cli.bench", "gpu_sc.testing.cost_counts")}


def test_production_code_never_imports_the_cupy_double():
    """The CuPy double (gpu_sc.testing) is test tooling: no module outside gpu_sc.testing
    imports it, at any depth (kernels read its counters off the array module instead)."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        mod = _module_name(path)
        if mod == "gpu_sc.testing" or mod.startswith("gpu_sc.testing."):
            continue
        for line, target, name in _every_import(path):
            full = f"{target}.{name}" if name else target
            if full != "gpu_sc.testing" and not full.startswith("gpu_sc.testing."):
                continue
            if (mod, target) not in _TOOLING_ENTRY:
                found.append(f"{mod}:{line} imports {full}")
    assert found == []
