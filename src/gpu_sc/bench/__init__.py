"""``gpu-sc bench``: per-step and end-to-end timings, memory peaks and roofline floors of
every backend on identical synthetic atlases, with speedups over scanpy from the same run.

:func:`run_bench` measures and returns the report; :func:`write_outputs` writes
``bench.json``, ``bench.md`` and ``bench.png``.
"""

import importlib

# Loaded on first use, so that ``gpu-sc --help`` (which lists SECTIONS) imports no numerics.
_LAZY = {
    **dict.fromkeys(
        ("DeviceRates", "Work", "floor_seconds", "measure_device", "step_work"), "floors"
    ),
    **dict.fromkeys(("markdown", "plot", "write_outputs"), "report"),
    **dict.fromkeys(("BenchConfig", "predict_seconds", "run_bench"), "runner"),
    **dict.fromkeys(("SECTIONS", "expand_steps"), "steps"),
}

__all__ = [
    "SECTIONS",
    "BenchConfig",
    "DeviceRates",
    "Work",
    "expand_steps",
    "floor_seconds",
    "markdown",
    "measure_device",
    "plot",
    "predict_seconds",
    "run_bench",
    "step_work",
    "write_outputs",
]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
