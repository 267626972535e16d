"""gpu_sc._scanpy_compat: what differs between the scanpy releases pyproject.toml admits.

Runs with every scanpy (1.11.5 in CI, 1.12.x in scripts/test_newest.sh); what depends on the
installed release is asserted against :data:`SCANPY_VERSION`.
"""

from __future__ import annotations

import functools
import inspect

import numpy as np
import scanpy as sc

from gpu_sc._scanpy_compat import (
    SCANPY_VERSION,
    engine_gap,
    engine_params,
    host_function,
    qc_var_mean,
)


def test_installed_version_is_in_the_tested_range():
    assert (1, 11) <= SCANPY_VERSION < (1, 13)


def test_newer_default_spellings_reach_the_engine_as_it_knows_them():
    assert engine_params("neighbors", {"metric": None, "distances": None})["metric"] == "euclidean"
    assert engine_params("neighbors", {"metric": "cosine"})["metric"] == "cosine"
    given = np.zeros((2, 2))  # precomputed distances: scanpy keeps metric=None, so do we
    assert engine_params("neighbors", {"metric": None, "distances": given})["metric"] is None
    assert engine_params("leiden", {"flavor": None})["flavor"] == "leidenalg"
    assert engine_params("leiden", {"flavor": "igraph"})["flavor"] == "igraph"
    params = {"target_sum": 1e4}
    assert engine_params("normalize_total", params) == params
    assert engine_params("normalize_total", params) is not params  # a copy: never mutated


def test_qc_var_mean_has_the_installed_scanpys_dtype():
    sums = np.array([3.0, 1.0, 2.0])
    mean = qc_var_mean(sums, np.float32, 3)
    assert mean.dtype == (np.float32 if SCANPY_VERSION >= (1, 12) else np.float64)
    np.testing.assert_allclose(mean, [1.0, 1 / 3, 2 / 3], rtol=1e-7)
    assert qc_var_mean(sums, np.int64, 3).dtype == np.float64


def test_batched_seurat_v3_is_a_gap_from_scanpy_1_12_only():
    batched = {"flavor": "seurat_v3", "batch_key": "batch"}
    assert (engine_gap("highly_variable_genes", batched) is not None) == (SCANPY_VERSION >= (1, 12))
    assert engine_gap("highly_variable_genes", {**batched, "batch_key": None}) is None
    assert engine_gap("highly_variable_genes", {**batched, "flavor": "seurat"}) is None
    assert engine_gap("pca", {}) is None


def test_host_function_reads_below_a_backend_dispatcher():
    """A dispatched scanpy function (scverse-backends' wrapper: scanpy's signature plus
    ``backend``) is read and called through the function it wraps."""
    func = sc.pp.normalize_total

    @functools.wraps(func)
    def dispatched(*args, backend=None, **kwargs):
        raise AssertionError("gpu_sc must not call back into the dispatcher")

    sig = inspect.signature(func)
    backend = inspect.Parameter("backend", inspect.Parameter.KEYWORD_ONLY, default=None)
    dispatched.__signature__ = sig.replace(parameters=[*sig.parameters.values(), backend])

    assert host_function(dispatched) is func
    assert host_function(func) is func

    @functools.wraps(func)
    def plain(*args, **kwargs):  # a wrapper without backend= is scanpy's own
        return func(*args, **kwargs)

    assert host_function(plain) is plain


# Modules that still import scanpy's private names directly (each to move behind
# gpu_sc._scanpy_compat): none left.
_NOT_YET: set[str] = set()


def _private_scanpy_names(path) -> list[str]:
    """``scanpy.x._y`` imports, ``from scanpy.x import _y`` and ``sc.settings._y`` uses."""
    import ast

    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "scanpy":
            names = [node.module or "", *(a.name for a in node.names)]
            if any(part.startswith("_") for n in names for part in n.split(".")):
                found.append(f"{path.name}:{node.lineno}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "scanpy" and any(p.startswith("_") for p in parts):
                    found.append(f"{path.name}:{node.lineno}")
        elif (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "settings"
            and isinstance(node.value.value, ast.Name)
            and node.value.value.id in ("sc", "scanpy")
        ):
            found.append(f"{path.name}:{node.lineno}")
    return found


def test_scanpy_private_names_are_reached_through_the_compat_module_only():
    from pathlib import Path

    import gpu_sc

    root = Path(gpu_sc.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel == "_scanpy_compat.py" or rel in _NOT_YET:
            continue
        offenders += [f"{rel}: {hit}" for hit in _private_scanpy_names(path)]
    assert not offenders, offenders
    # the exceptions still need theirs (else drop them from _NOT_YET)
    assert all(_private_scanpy_names(root / rel) for rel in _NOT_YET)
