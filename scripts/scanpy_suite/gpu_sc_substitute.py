"""pytest plugin: scanpy's public pp/tl functions that gpu_sc implements become gpu_sc's.

Loaded by ``scripts/test_scanpy_suite.sh`` with ``-p gpu_sc_substitute`` when scanpy's own test
suite runs in the ``gpu_sc`` or ``strict`` mode. Each ``scanpy.pp.X`` / ``scanpy.tl.X`` (the same
objects as ``scanpy.preprocessing.X`` / ``scanpy.tools.X``) becomes a wrapper that calls
``gpu_sc.pp.X(..., backend="numpy")`` (records as shipped); strict mode is ``GPU_SC_STRICT=1`` in
the environment, set by the runner. scanpy's internals import from private modules, so a gpu_sc
fallback still reaches scanpy's own function.

Always (all three modes, so the comparison is fair): scanpy's downloader skips the test with
the reason instead of reaching the internet (the runner rebuilt pbmc3k offline).
"""

from __future__ import annotations

import functools
import os

import pytest

MODE = os.environ.get("GPU_SC_SUITE_MODE", "scanpy")
SUBSTITUTED: dict[str, list[str]] = {}


def _wrap(gpu_func, scanpy_func):
    @functools.wraps(scanpy_func)
    def substituted(*args, **kwargs):
        return gpu_func(*args, backend="numpy", **kwargs)

    substituted.__gpu_sc_substitute__ = True
    return substituted


def _substitute() -> None:
    import scanpy
    import scanpy.preprocessing
    import scanpy.tools

    import gpu_sc
    from gpu_sc import catalogue

    for ns, public, gpu_ns in (
        ("pp", [scanpy.pp, scanpy.preprocessing], gpu_sc.pp),
        ("tl", [scanpy.tl, scanpy.tools], gpu_sc.tl),
    ):
        for step in catalogue.public_steps(ns):
            original = getattr(public[0], step.name)
            if getattr(original, "__gpu_sc_substitute__", False):
                continue
            wrapper = _wrap(getattr(gpu_ns, step.name), original)
            for module in {id(m): m for m in public}.values():
                setattr(module, step.name, wrapper)
            SUBSTITUTED.setdefault(ns, []).append(step.name)


def _offline_download(url, path):
    pytest.skip(f"offline: {url} is not available here (only pbmc3k is rebuilt, from ../shared)")


def pytest_configure(config):
    import scanpy
    import scanpy.readwrite

    scanpy.readwrite._download = _offline_download
    # scanpy's function-scoped settings fixture points datasetdir at the pytest cache, where
    # the runner rebuilt pbmc3k; a session fixture set up before it (the first test of a run
    # of ids, e.g. pbmc3ks_parametrized_session) would look in ./data and skip. Same folder.
    scanpy.settings.datasetdir = config.cache.mkdir("scanpy-data")
    if MODE in ("gpu_sc", "strict"):
        _substitute()


def pytest_report_header(config):
    subs = ", ".join(f"{ns}: {' '.join(names)}" for ns, names in SUBSTITUTED.items())
    strict = os.environ.get("GPU_SC_STRICT", "")
    return f"gpu_sc suite mode: {MODE} (GPU_SC_STRICT={strict!r}); substituted: {subs or 'none'}"


def pytest_collection_modifyitems(config, items):
    """``GPU_SC_SUITE_REVERSE=1``: run the tests last to first, so that a second process
    started beside a forward run of the same mode meets it half-way (the runner's ``--part``
    logs are merged by the report; stop both once they overlap)."""
    if os.environ.get("GPU_SC_SUITE_REVERSE", "") not in ("", "0"):
        items.reverse()
