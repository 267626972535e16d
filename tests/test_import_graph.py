"""The package's import graph: no cycles, and no module importing upward.

Two graphs are checked. The import-time graph (module-level imports only) between modules,
and the full graph (module-level imports and imports inside functions, which run later, on
use) between *units*: gpu_sc's subpackages (``gpu_sc.dask``, ``gpu_sc.pipeline``, ...) and
top-level modules (``gpu_sc.pp``, ``gpu_sc.catalogue``, ...), ``gpu_sc/__init__`` being the
facade. Imports under ``if TYPE_CHECKING:`` are left out of both: they never run.

Layers, lowest first; a unit may import its own layer and the layers below it, never a layer
above. Imports of gpu_sc's own modules belong at module level; the few inside functions are
counted and the count is pinned (:data:`IN_FUNCTION_CEILING`). Heavy optional dependencies
(scanpy, CuPy, Dask, ...) are imported inside functions freely and are not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import gpu_sc

ROOT = Path(gpu_sc.__file__).parent

#: Lowest first. ``gpu_sc.catalogue`` is pure data (functions named as strings, resolved on
#: use), so every layer may read it.
LAYERS = [
    ("gpu_sc._settings", "gpu_sc._progress", "gpu_sc._scanpy_compat", "gpu_sc._version"),
    ("gpu_sc.catalogue",),
    ("gpu_sc.backends",),  # the registry of backends: names, availability, resolution
    ("gpu_sc.dispatch",),
    ("gpu_sc.testing",),  # the CuPy double: a device below the kernels, as CuPy is
    ("gpu_sc.kernels",),
    ("gpu_sc.engine",),
    ("gpu_sc.dask",),  # the engine's kernels mapped over Dask blocks
    ("gpu_sc.steps", "gpu_sc.pp", "gpu_sc.tl"),
    ("gpu_sc.datasets", "gpu_sc.io", "gpu_sc.pipeline", "gpu_sc.scverse_backend"),
    ("gpu_sc.parity", "gpu_sc.bench", "gpu_sc.report"),
    ("gpu_sc.cli", "gpu_sc.testing.cost_counts"),  # cost_counts: `gpu-sc bench --model`'s run
    ("gpu_sc",),  # the package's facade
]


def _from_target(package: str, node: ast.ImportFrom) -> str:
    """The module a ``from ... import`` in ``package`` reads from, relative levels resolved."""
    if not node.level:
        return node.module or ""
    base = package.split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


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


#: Modules that are a unit of their own inside a subpackage: gpu_sc.testing holds the CuPy
#: double (a device, below the kernels) and the cost model's counting run on it (tooling that
#: runs the pipeline: above bench, beside the CLI that calls it).
_OWN_UNITS = ("gpu_sc.testing.cost_counts",)


def _unit(module: str) -> str:
    """The subpackage or top-level module ``module`` belongs to (``gpu_sc`` for the facade)."""
    for own in _OWN_UNITS:
        if module == own or module.startswith(own + "."):
            return own
    return ".".join(module.split(".")[:2])


def _all_imports(tree: ast.Module):
    """(import node, inside a function) for every import but those under ``if TYPE_CHECKING``."""
    out = []

    def visit(node, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for c in child.orelse:
                    visit_one(c, in_function)
            else:
                visit_one(child, in_function)

    def visit_one(node, in_function: bool) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            out.append((node, in_function))
        func = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        visit(node, in_function or func)

    visit(tree, False)
    return out


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


def _imports(in_functions: bool):
    """(importer, imported gpu_sc module, import node, inside a function) for each import."""
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        tree = ast.parse(path.read_text())
        if in_functions:
            nodes = _all_imports(tree)
        else:
            nodes = [(n, False) for n in _top_level_imports(tree)]
        for node, in_function in nodes:
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = _from_target(package, node)
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                    for a in node.names
                ]
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t.startswith("gpu_sc") and t != mod:
                    yield mod, t, node, in_function


def import_graph() -> dict[str, set[str]]:
    """Module -> the gpu_sc modules it imports at import time."""
    graph: dict[str, set[str]] = {_module_name(p): set() for p in ROOT.rglob("*.py")}
    for mod, t, _, _ in _imports(in_functions=False):
        graph[mod].add(t)
    return graph


def unit_graph() -> dict[str, dict[str, list[str]]]:
    """Unit -> imported unit -> where (``module:line``), over all imports that can run."""
    graph: dict[str, dict[str, list[str]]] = {}
    for mod, t, node, in_function in _imports(in_functions=True):
        u, v = _unit(mod), _unit(t)
        graph.setdefault(u, {})
        graph.setdefault(v, {})
        if u != v:
            where = f"{mod}:{node.lineno}" + (" (in a function)" if in_function else "")
            if where not in graph[u].setdefault(v, []):
                graph[u][v].append(where)
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
            target = _from_target(package, node)
            for a in node.names:
                yield node.lineno, target, a.name


def _package(module: str) -> str:
    """``gpu_sc.engine.pca`` -> ``gpu_sc.engine``; a top-level module is its own package."""
    return ".".join(module.split(".")[:2])


#: gpu_sc-wide internals: private to the distribution, shared by all its packages.
_SHARED_PRIVATE = (
    "gpu_sc._settings",
    "gpu_sc._progress",
    "gpu_sc._scanpy_compat",
    "gpu_sc._version",
)


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


def _describe(cycles, graph) -> str:
    lines = []
    for comp in cycles:
        lines.append("cycle between " + ", ".join(comp))
        for u in comp:
            for v in sorted(set(graph[u]) & set(comp)):
                lines.append(f"  {u} -> {v}: " + "; ".join(graph[u][v]))
    return "\n".join(lines)


def test_no_unit_cycles_all_imports():
    """No cycle between gpu_sc's units, imports inside functions included."""
    graph = unit_graph()
    cycles = _cycles({u: set(vs) for u, vs in graph.items()})
    assert cycles == [], _describe(cycles, graph)


def test_no_unit_imports_upward_all_imports():
    upward = sorted(
        f"{u} (layer {_layer(u)}) imports {v} (layer {_layer(v)}): " + "; ".join(where)
        for u, vs in unit_graph().items()
        for v, where in vs.items()
        if _layer(v) > _layer(u)
    )
    assert upward == [], "\n".join(upward)


def test_no_module_cycles_all_imports():
    """No cycle between modules either, imports inside functions included (a package's
    ``__init__`` and its own submodules excepted, as in :func:`test_no_import_cycles`)."""
    graph: dict[str, set[str]] = {_module_name(p): set() for p in ROOT.rglob("*.py")}
    for mod, t, _, _ in _imports(in_functions=True):
        if not _is_package_parent(mod, t):
            graph[mod].add(t)
    assert _cycles(graph) == []


#: Imports of gpu_sc's own modules inside functions (import statements, 141 before issue 21).
#: Each has a reason: the facade and the CLI load the dispatcher, the pipeline, the report,
#: the datasets and the benchmarks (scanpy, pandas) on first use, so ``import gpu_sc`` and
#: ``gpu-sc --help`` stay fast; the Dask steps load only for Dask input; the fused CUDA
#: kernels (numba) and the CuPy double load only where used; the benchmark's memory children
#: load the pipeline when they start measuring; parity's metrics take the kernels when
#: present (``try``/``except ImportError``); ``scverse_backend`` (an entry point) and
#: ``catalogue`` resolve scanpy-facing modules on use. Lower the ceiling when one moves to
#: module level; raise it only with a reason.
IN_FUNCTION_CEILING = 50


def test_in_function_imports_of_own_modules_pinned():
    found = sorted(
        {
            f"{mod}:{node.lineno}"
            for mod, _, node, in_function in _imports(in_functions=True)
            if in_function
        }
    )
    assert len(found) <= IN_FUNCTION_CEILING, "\n".join(found)
