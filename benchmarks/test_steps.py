"""One pytest-benchmark per pipeline step and backend, on a synthetic atlas of fixed seed.

Each benchmark replays one step of the tutorial pipeline on a fresh copy of that step's
input (recorded from a scanpy run), with the step's recorded parameters. ``extra_info``
says which backend actually ran (a step the engine lacks runs on scanpy: a fallback).
Size: ``GPU_SC_BENCH_CELLS`` (default 2000). See README.md here.
"""

from __future__ import annotations

import pytest

from gpu_sc import catalogue
from gpu_sc.pipeline import PipelineConfig

#: Dispatched steps of the default pipeline, in order (labels as the pipeline names them),
#: from the catalogue: rank_genes_groups once per method of the default config.
STEPS = [
    label
    for st in catalogue.STEPS
    if st.public and st.run is not None and getattr(PipelineConfig(), st.section).enabled
    for label in (
        [f"{st.name}[{m}]" for m in PipelineConfig().rank_genes_groups.methods]
        if st.name == "rank_genes_groups"
        else [st.name]
    )
]
BACKENDS = ["scanpy", "numpy", pytest.param("cupy", marks=pytest.mark.gpu)]
ROUNDS = 3


def test_suite_covers_every_dispatched_pipeline_step(step_inputs):
    assert list(step_inputs) == STEPS


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("step", STEPS)
def test_step(benchmark, step_inputs, atlas, step, backend):
    from gpu_sc.dispatch.provenance import provenance

    func, args, kwargs, before = step_inputs[step]
    last = {}

    def setup():
        return (before.copy(),), {}

    def target(adata):
        func(adata, *args, backend=backend, **kwargs)
        last["adata"] = adata

    benchmark.group = step
    benchmark.pedantic(target, setup=setup, rounds=ROUNDS, iterations=1)
    record = provenance(last["adata"])[-1]
    assert record["step"] == step.split("[")[0]
    benchmark.extra_info.update(
        **atlas,
        requested=backend,
        ran_on=record["backend"],
        fallback_reason=record["fallback_reason"],
    )
