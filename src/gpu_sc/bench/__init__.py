"""``gpu-sc bench``: per-step and end-to-end timings, memory peaks and roofline floors of
every backend on identical synthetic atlases, with speedups over scanpy from the same run.

:func:`run_bench` measures and returns the report; :func:`write_outputs` writes
``bench.json``, ``bench.md`` and ``bench.png``.
"""

from .floors import DeviceRates, Work, floor_seconds, measure_device, step_work
from .report import markdown, plot, write_outputs
from .runner import BenchConfig, predict_seconds, run_bench
from .steps import SECTIONS, expand_steps

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
