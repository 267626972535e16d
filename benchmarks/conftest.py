"""Fixtures of the benchmark suite: one synthetic atlas, and the input of every step."""

from __future__ import annotations

import os

import matplotlib
import pytest

matplotlib.use("Agg")

#: Atlas size and seed; the defaults keep a full run to a few minutes on a laptop.
CELLS = int(float(os.environ.get("GPU_SC_BENCH_CELLS", "2000")))
SEED = int(os.environ.get("GPU_SC_BENCH_SEED", "0"))


def pytest_collection_modifyitems(config, items):
    # Benchmarks marked `gpu` need CUDA; without it they are skipped with the reason.
    from gpu_sc.dispatch import cuda_status

    status = cuda_status()
    if status.available:
        return
    skip = pytest.mark.skip(reason=f"no usable CUDA: {status.reason}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def atlas():
    """``{"cells": CELLS, "seed": SEED}``: the size and seed benchmarks run on."""
    return {"cells": CELLS, "seed": SEED}


@pytest.fixture(scope="session")
def step_inputs():
    """``{label: (function, args, kwargs, adata at the call)}`` for every dispatched step of
    the tutorial pipeline, recorded while scanpy runs it on ``synthetic(CELLS, seed=SEED)``:
    a hook of the pipeline's runner keeps each public step's exact arguments and input."""
    import gpu_sc
    from gpu_sc import catalogue
    from gpu_sc.pipeline import PipelineConfig, Runner, StepHook

    calls = {}

    class Record(StepHook):
        def before_step(self, runner, label, func, args, kwargs):
            entry = catalogue.get(label)
            if entry is not None and entry.public:
                calls[label] = (func, args, dict(kwargs), runner.adata.copy())

    adata = gpu_sc.datasets.synthetic(CELLS, seed=SEED)
    with gpu_sc.settings.override(backend="scanpy"):
        Runner(adata, PipelineConfig(), hooks=[Record()]).run()
    return calls
