"""The counting run behind the GPU cost model (:mod:`gpu_sc.bench.model`): the pipeline with
``backend="cupy"`` on the CuPy double, which counts per step what a GPU would have to do.

Test tooling, like the double it drives: production code never imports it; ``gpu-sc bench
--model`` and the tests call it, and :mod:`gpu_sc.bench.model` prices what it counted.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

from .. import datasets
from .._version import __version__
from ..bench.model import H200, GpuConstants, StepCounts, price
from ..dispatch.provenance import provenance
from ..pipeline import pipeline
from .cupy_double import install

__all__ = ["collect_counts", "run_model"]


def collect_counts(
    n_cells: int,
    *,
    n_genes: int = 2000,
    seed: int = 0,
    config: dict | None = None,
    device_bytes: int = 4 << 30,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the pipeline with ``backend="cupy"`` on the CuPy double on a synthetic atlas of
    ``n_cells`` and return per-step counts, the backend that ran each step and its wall time
    on the double (a NumPy time, not a GPU time).

    ``device_bytes`` is the simulated device's memory. Arrays are real NumPy arrays
    underneath, so host memory must hold what the device would: the default 4 GiB keeps the
    kNN and t-SNE distance tiles at 2**26 elements (an H200 would use 2**28: a quarter of the
    row tiles, so fewer launches in those steps; bytes and flop are the same).
    """
    adata = datasets.synthetic(n_cells, n_genes, seed=seed)
    steps: list[dict[str, Any]] = []
    with install(device_bytes=device_bytes) as double:
        counters = double.counters
        last = [counters.snapshot(), time.perf_counter(), 0]

        def progress(label: str, _seconds: float) -> None:
            now = counters.snapshot()
            prov = provenance(adata)
            new, last[2] = prov[last[2] :], len(prov)
            steps.append(
                {
                    "step": label,
                    "ran_on": sorted({p["backend"] for p in new}),
                    "fallback_reason": "; ".join(
                        p["fallback_reason"] for p in new if p.get("fallback_reason")
                    )
                    or None,
                    "double_seconds": time.perf_counter() - last[1],
                    "counts": StepCounts.between(last[0], now).to_dict(),
                }
            )
            if log is not None:
                c = steps[-1]["counts"]
                log(f"{n_cells} cells, {label}: {c['ops']:.0f} ops, {c['syncs']:.0f} syncs")
            counters_after = counters.snapshot()  # the provenance read above is host-side
            last[0], last[1] = counters_after, time.perf_counter()

        # atomic=False: the progress hook reads the provenance as it grows on `adata` itself
        pipeline(adata, config, backend="cupy", progress=progress, atomic=False)
    return {"n_cells": n_cells, "n_genes": n_genes, "steps": steps}


def run_model(
    cells: Sequence[int] = (10_000, 50_000),
    *,
    target: int = 1_000_000,
    gpu: GpuConstants = H200,
    n_genes: int = 2000,
    seed: int = 0,
    config: dict | None = None,
    goal_s: float = 20.0,
    device_bytes: int = 4 << 30,
    log: Callable[[str], None] | None = None,
    extra_targets: Sequence[int] = (),
    other_gpus: Sequence[GpuConstants] | None = None,
) -> dict[str, Any]:
    """Counts at each size in ``cells``, their projection on ``gpu`` and the extrapolation to
    ``target`` cells (and ``extra_targets``), also priced on ``other_gpus`` (default
    :data:`OTHER_GPUS`); the returned dict is what ``bench_model.json`` holds."""
    runs = [
        collect_counts(
            n, n_genes=n_genes, seed=seed, config=config, device_bytes=device_bytes, log=log
        )
        for n in sorted(cells)
    ]
    meta = {
        "n_genes": n_genes,
        "seed": seed,
        "double_device_bytes": device_bytes,
        "versions": {"gpu_sc": __version__, "python": platform.python_version()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if config is not None:
        meta["config"] = config
    return price(
        runs,
        meta,
        target=target,
        gpu=gpu,
        goal_s=goal_s,
        extra_targets=extra_targets,
        other_gpus=other_gpus,
    )
