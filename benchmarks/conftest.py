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
    each public step is wrapped for that run to keep its exact arguments and input."""
    import gpu_sc

    calls = {}

    def recorder(name, func):
        def wrapped(adata, *args, **kwargs):
            label = name if name != "rank_genes_groups" else f"{name}[{kwargs['method']}]"
            calls[label] = (func, args, kwargs, adata.copy())
            return func(adata, *args, **kwargs)

        return wrapped

    adata = gpu_sc.datasets.synthetic(CELLS, seed=SEED)
    with pytest.MonkeyPatch.context() as mp:
        for namespace in (gpu_sc.pp, gpu_sc.tl):
            for name in namespace.__all__:
                mp.setattr(namespace, name, recorder(name, getattr(namespace, name)))
        gpu_sc.pipeline(adata, backend="scanpy")
    return calls
