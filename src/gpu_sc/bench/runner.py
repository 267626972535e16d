"""The benchmark loop: each size generated once, every backend on identical fresh copies.

Per size, per repeat, per backend, the whole pipeline (its ``--steps`` subset) runs on a
fresh copy of the same synthetic atlas, in this process. Per step the time is the
provenance ``seconds`` that :func:`gpu_sc.dispatch.run_step` records (device-synchronised on
the GPU), the backend shown is the one that actually ran (a fallback to scanpy is a fallback,
with its reason), and memory peaks are taken between consecutive steps.

Budget (``budget_s`` per step and backend): a step whose time at the previous sizes predicts
more than the budget at this size is not run; it is recorded with status ``skipped_budget``
and the predicted time, and the steps that need it with ``skipped_dependency``. A step that
runs over the budget is kept with status ``over_budget`` and measured once: later repeats of
that backend at this size leave it (and the steps that need it) out, and the end-to-end
total counts only the full repeats. A run that raises (out of memory,
an engine bug) is recorded as an ``error`` total with the message; that backend is then
not run at this or larger sizes. The prediction is
``t_prev * (n / n_prev) ** k`` with ``k`` from the last two measured sizes, clamped to
``[1, 3]`` (``k = 1`` from a single size).
"""

from __future__ import annotations

import gc
import logging
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import datasets
from ..backends import canonical_backend_name, cuda_status, delegates, is_gpu
from ..dispatch.arrays import array_module
from ..dispatch.provenance import environment, provenance
from ..pipeline import PipelineConfig, pipeline
from .floors import DeviceRates, Work, floor_seconds, measure_device, step_work
from .machine import machine_info
from .memory import GpuPeak, HostPeak
from .steps import dependents, expand_steps, pipeline_config, section_of

__all__ = ["BenchConfig", "run_bench"]

logger = logging.getLogger("gpu_sc")

SCHEMA = 1
#: Cells of the warm-up run per backend (compiles numba / CUDA kernels outside the timings),
#: never more than the smallest benchmarked size. Measured: pynndescent (scanpy's kNN above
#: 4096 cells) compiles for 9 s at 5*10^3 cells, then 22 s more at its first 10^4-cell call,
#: then nothing at 2*10^4; so warm up at up to 2*10^4 cells.
WARMUP_CELLS = 20_000


@dataclass
class BenchConfig:
    """What ``gpu-sc bench`` measures (see :func:`run_bench`)."""

    cells: list[int]
    backends: list[str] = field(default_factory=lambda: ["scanpy", "cupy"])
    steps: str | list[str] = "all"
    repeats: int = 3
    budget_s: float | None = None
    seed: int = 0
    difficulty: str = "overlapping"
    n_genes: int = 2000
    n_types: int = 8
    warmup: bool = True
    time_limit_s: float | None = None

    def __post_init__(self):
        if not self.cells or any(int(n) < 1 for n in self.cells):
            raise ValueError(f"cells must be positive integers, got {self.cells}")
        self.cells = sorted({int(n) for n in self.cells})
        backends = [canonical_backend_name(b, allow_auto=False) for b in self.backends]
        if not backends:
            raise ValueError("no backend to benchmark")
        # scanpy first: speedups are ratios to it, and its history drives the budget.
        self.backends = sorted(dict.fromkeys(backends), key=lambda b: not delegates(b))
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")
        if self.budget_s is not None and self.budget_s <= 0:
            raise ValueError(f"budget must be > 0 seconds, got {self.budget_s}")
        if self.time_limit_s is not None and self.time_limit_s <= 0:
            raise ValueError(f"time limit must be > 0 seconds, got {self.time_limit_s}")


def run_bench(
    cfg: BenchConfig,
    log: Callable[[str], None] = lambda msg: None,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark and return the report (the content of ``bench.json``).

    ``checkpoint``, when given, receives the report so far after every completed size, so a
    run killed later (a device lease ending) still leaves the sizes it finished. With
    ``cfg.time_limit_s``, no new repeat starts once that many seconds have passed since the
    start: the repeats done are reported, the sizes not reached get a ``time_limit`` row per
    backend, and ``parameters["stopped"]`` says why.

    Returns
    -------
    dict with ``schema``, ``parameters``, ``machine``, ``versions``, ``devices`` (measured
    rates per device), ``sizes`` (per size: generation time and input shape) and ``rows``:
    one per (size, backend, step label) plus a ``step="total"`` row per (size, backend).
    """
    st = _BenchState(cfg, time.perf_counter())
    st.requested, st.enabled = expand_steps(cfg.steps)
    st.load_start = _load()
    st.pcfg = pipeline_config(st.enabled)
    st.uses_gpu = any(is_gpu(b) for b in cfg.backends)
    st.devices = _measure_devices(st.uses_gpu, log)
    with HostPeak() as host, GpuPeak(st.uses_gpu) as gpu:
        st.host, st.gpu = host, gpu
        if cfg.warmup:
            _warm_up(st, log)
        for n in cfg.cells:
            if st.stopped_reason is not None:
                st.rows += [_limit_row(n, b, st.stopped_reason) for b in cfg.backends]
                continue
            log(f"generating {n} cells (host)")
            t0 = time.perf_counter()
            base = datasets.synthetic(
                n, cfg.n_genes, cfg.n_types, difficulty=cfg.difficulty, seed=cfg.seed
            )
            gen_s = time.perf_counter() - t0
            st.sizes.append(
                {"n_cells": n, "generate_s": gen_s, "generated_on": "host", "input": _state(base)}
            )
            plans = {
                b: _plan(cfg, b, n, st.enabled, st.history, st.labels_seen) for b in cfg.backends
            }
            runs = _repeat_size(st, n, base, plans, log)
            del base
            gc.collect()
            _collect_size(st, n, runs, plans)
            if checkpoint is not None:
                checkpoint(_report(st))

    return _report(st)


@dataclass
class _BenchState:
    """What :func:`run_bench` accumulates, and what its report is made of."""

    cfg: BenchConfig
    started: float
    stopped_reason: str | None = None
    requested: Any = None
    enabled: Any = None
    load_start: list[float] | None = None
    pcfg: Any = None
    uses_gpu: bool = False
    devices: dict[str, DeviceRates] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    sizes: list[dict[str, Any]] = field(default_factory=list)
    history: dict[tuple[str, str], list[tuple[int, float]]] = field(default_factory=dict)
    labels_seen: dict[str, list[str]] = field(default_factory=dict)  # section -> its labels
    warmup_s: dict[str, float] = field(default_factory=dict)
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)  # backend -> first error
    host: Any = None
    gpu: Any = None


def _measure_devices(uses_gpu: bool, log: Callable[[str], None]) -> dict[str, DeviceRates]:
    """Measure the host's (and, when a GPU backend runs and CUDA works, the GPU's) rates."""
    devices: dict[str, DeviceRates] = {}
    log("measuring host copy bandwidth and matmul rate")
    devices["host"] = measure_device("numpy")
    if uses_gpu:
        if cuda_status().available:
            log("measuring GPU copy bandwidth and matmul rate")
            devices["gpu"] = measure_device("cupy")
    return devices


def _report(st: _BenchState) -> dict[str, Any]:
    """Return the report so far (the content of ``bench.json``)."""
    cfg = st.cfg
    env = environment("cupy" if st.uses_gpu else None)
    machine = machine_info(st.uses_gpu)
    machine["load_average_start"] = st.load_start
    return {
        "schema": SCHEMA,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "parameters": {
            "cells": cfg.cells,
            "backends": cfg.backends,
            "steps_requested": st.requested,
            "steps_enabled": st.enabled,
            "repeats": cfg.repeats,
            "budget_s": cfg.budget_s,
            "seed": cfg.seed,
            "difficulty": cfg.difficulty,
            "n_genes": cfg.n_genes,
            "n_types": cfg.n_types,
            "warmup_cells": min(WARMUP_CELLS, cfg.cells[0]) if cfg.warmup else 0,
            "data_generated_on": "host (gpu_sc.datasets.synthetic)",
            "pipeline_config": st.pcfg.to_dict(),
            "stopped": st.stopped_reason,
        },
        "machine": machine,
        "versions": env["versions"],
        "devices": {k: v.to_dict() for k, v in st.devices.items()},
        "memory_method": {
            "host_rss": st.host.method,
            "gpu": "CuPy default pool, in-use bytes after every allocation"
            if st.gpu.enabled
            else None,
        },
        "warmup_s": st.warmup_s,
        "sizes": st.sizes,
        "rows": st.rows,
    }


def _warm_up(st: _BenchState, log: Callable[[str], None]) -> None:
    """Run every backend once on a small data set (JIT, caches), timing it in ``warmup_s``."""
    cfg = st.cfg
    n_warm = min(WARMUP_CELLS, cfg.cells[0])
    warm = datasets.synthetic(
        n_warm, cfg.n_genes, cfg.n_types, difficulty=cfg.difficulty, seed=cfg.seed + 1
    )
    for backend in cfg.backends:
        log(f"warm-up: {backend} on {n_warm} cells")
        t0 = time.perf_counter()
        pipeline(warm.copy(), st.pcfg, backend=backend)
        st.warmup_s[backend] = time.perf_counter() - t0
    del warm
    gc.collect()


def _repeat_size(st: _BenchState, n: int, base, plans, log) -> dict[str, list[_Run]]:
    """Run the repeats at one size; sets ``st.stopped_reason`` when the time limit hits."""
    cfg = st.cfg
    runs: dict[str, list[_Run]] = {b: [] for b in cfg.backends}
    stopped = set(st.failed)
    # Engines before scanpy within a repeat: when a time limit cuts a size short, it
    # cuts the reference (often predicted over the budget anyway), not the engine.
    run_order = sorted(cfg.backends, key=delegates)
    for rep in range(cfg.repeats):
        for backend in run_order:
            if backend in stopped:
                continue
            elapsed = time.perf_counter() - st.started
            if cfg.time_limit_s is not None and elapsed > cfg.time_limit_s:
                st.stopped_reason = (
                    f"time limit {cfg.time_limit_s:g} s reached after {elapsed:.0f} s, at {n} cells"
                )
                log(f"stopping: {st.stopped_reason}")
                break
            log(f"{n} cells, {backend}, repeat {rep + 1}/{cfg.repeats}")
            partial = bool(plans[backend].no_repeat)
            try:
                run = _run_once(base, plans[backend].config(st.pcfg), backend, st.host, st.gpu)
            except Exception as exc:  # out of memory, an engine bug: keep the rest
                st.failed[backend] = {"n_cells": n, "error": f"{type(exc).__name__}: {exc}"}
                stopped.add(backend)
                log(f"{n} cells, {backend}: failed: {st.failed[backend]['error']}")
                gc.collect()
                continue
            run.complete = not partial
            runs[backend].append(run)
            if cfg.budget_s is not None:
                plans[backend].stop_repeating(run, cfg.budget_s, st.enabled)
        if st.stopped_reason is not None:
            break
    return runs


def _collect_size(st: _BenchState, n: int, runs: dict[str, list[_Run]], plans) -> None:
    """Add one size's rows, the step-time history and the labels seen, then speed-ups."""
    rows = st.rows
    for backend in st.cfg.backends:
        if backend in st.failed:  # successful repeats before a failure are dropped too
            rows.append(_error_row(n, backend, st.failed[backend]))
            continue
        if not runs[backend]:  # the time limit came before its first repeat
            rows.append(_limit_row(n, backend, st.stopped_reason or "no repeat ran"))
            continue
        rows += _rows_for(n, backend, runs[backend], plans[backend], st.cfg, st.devices)
        for r in rows:
            if r["n_cells"] == n and r["backend"] == backend and r["median_s"] is not None:
                if r["step"] != "total":
                    st.history.setdefault((backend, r["step"]), []).append((n, r["median_s"]))
        for run in runs[backend]:
            for s in run.steps:
                sec = section_of(s["step"])
                if sec is not None and s["step"] not in st.labels_seen.setdefault(sec, []):
                    st.labels_seen[sec].append(s["step"])
    _add_speedups(rows, n)


def _load() -> list[float] | None:
    """1/5/15-minute load averages: other processes on the machine skew timings."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


# -- one pipeline run ---------------------------------------------------------------------------


@dataclass
class _Run:
    total_s: float
    steps: list[dict[str, Any]]
    peak_rss: int | None
    peak_gpu: int | None
    complete: bool = True  # False: sections over the budget were left out of this repeat


def _state(adata) -> dict[str, Any]:
    """Shape facts the floor models need: n_obs, n_vars, nnz (+ raw, + graph)."""
    x = adata.X
    n, g = adata.shape
    st: dict[str, Any] = {
        "n_obs": int(n),
        "n_vars": int(g),
        "nnz": int(x.nnz) if hasattr(x, "nnz") else int(n) * int(g),
    }
    if adata.raw is not None:
        rx = adata.raw.X
        st["raw_n_obs"], st["raw_n_vars"] = map(int, rx.shape)
        st["raw_nnz"] = int(rx.nnz) if hasattr(rx, "nnz") else int(rx.shape[0] * rx.shape[1])
    if "connectivities" in adata.obsp:
        st["graph_nnz"] = int(adata.obsp["connectivities"].nnz)
    return st


def _run_once(base, pcfg, backend: str, host: HostPeak, gpu: GpuPeak) -> _Run:
    """One pipeline run on a fresh copy of ``base``; per-step records from its provenance."""

    adata = base.copy()
    gc.collect()
    steps: list[dict[str, Any]] = []
    state = [_state(adata)]
    seen = [0]

    def progress(label: str, _seconds: float) -> None:
        prov = provenance(adata)  # noqa: F821  (`del adata` below runs after the pipeline)
        new, seen[0] = prov[seen[0] :], len(prov)
        main = next((p for p in new if p["step"] == section_base(label)), new[0] if new else None)
        steps.append(
            {
                "step": label,
                "seconds": sum(p["seconds"] for p in new),
                "ran_on": sorted({p["backend"] for p in new}),
                "fallback_reason": "; ".join(
                    p["fallback_reason"] for p in new if p["fallback_reason"]
                )
                or None,
                "work": _work_dict(main, state[0]),
                "peak_rss": host.peak(),
                "peak_gpu": gpu.peak(),
            }
        )
        state[0] = _state(adata)  # noqa: F821  (as above)
        host.reset()
        gpu.reset()

    host.reset()
    gpu.reset()
    t0 = time.perf_counter()
    # In place (atomic=False): the run already has its own copy, progress() reads its
    # provenance as it grows, and the peaks stay those of the steps themselves.
    pipeline(adata, pcfg, backend=backend, progress=progress, atomic=False)
    total = time.perf_counter() - t0
    peaks_rss = [s["peak_rss"] for s in steps if s["peak_rss"] is not None]
    peaks_gpu = [s["peak_gpu"] for s in steps if s["peak_gpu"] is not None]
    del adata
    if gpu.enabled:  # return the pool's cached blocks: the next run starts from empty
        array_module("cupy").release_memory()
    return _Run(total, steps, max(peaks_rss, default=None), max(peaks_gpu, default=None))


def section_base(label: str) -> str:
    """``rank_genes_groups[wilcoxon]`` -> ``rank_genes_groups`` (the dispatched step)."""
    return label.split("[", 1)[0]


def _work_dict(record: dict | None, state: dict) -> dict | None:
    if record is None or record["backend"] == "anndata":
        return None
    work = step_work(record["step"], record["params"], state)
    return None if work is None else {"bytes": work.bytes, "ops": work.ops, "model": work.model}


# -- budget -------------------------------------------------------------------------------------


@dataclass
class _Plan:
    """Sections a backend skips at one size, and why; and those it stops repeating."""

    skipped: dict[str, dict[str, Any]] = field(default_factory=dict)  # section -> reason
    no_repeat: set[str] = field(default_factory=set)  # ran over the budget: measured once

    def config(self, pcfg):
        off = set(self.skipped) | self.no_repeat
        if not off:
            return pcfg
        cfg = PipelineConfig.coerce(pcfg)
        for section in off:
            getattr(cfg, section).enabled = False
        return cfg

    def stop_repeating(self, run: _Run, budget_s: float, enabled: list[str]) -> None:
        """Leave the sections that ran over the budget (and those needing them) out of the
        next repeats; the other steps keep their repeats."""
        for s in run.steps:
            section = section_of(s["step"])
            if section is not None and s["seconds"] > budget_s:
                self.no_repeat |= {section, *dependents(section, enabled)}


def predict_seconds(points: list[tuple[int, float]], n: int) -> float | None:
    """Predicted time at ``n`` cells from ``(cells, seconds)`` at smaller sizes (see above)."""
    pts = sorted(p for p in points if p[0] < n and p[1] > 0)
    if not pts:
        return None
    n1, t1 = pts[-1]
    k = 1.0
    if len(pts) >= 2:
        n0, t0 = pts[-2]
        k = min(3.0, max(1.0, math.log(t1 / t0) / math.log(n1 / n0)))
    return t1 * (n / n1) ** k


def _plan(cfg, backend, n, enabled, history, labels_seen) -> _Plan:
    plan = _Plan()
    if cfg.budget_s is None:
        return plan
    for section in enabled:
        if section in plan.skipped:
            continue
        preds = {}
        for label in labels_seen.get(section, []):
            p = predict_seconds(history.get((backend, label), []), n)
            if p is not None:
                preds[label] = p
        over = {lab: p for lab, p in preds.items() if p > cfg.budget_s}
        if over:
            plan.skipped[section] = {
                "status": "skipped_budget",
                "predicted": preds,
                "labels": list(preds),
            }
            for dep in dependents(section, enabled):
                plan.skipped.setdefault(
                    dep,
                    {
                        "status": "skipped_dependency",
                        "needs": section,
                        "labels": list(labels_seen.get(dep, [])),
                    },
                )
    return plan


# -- rows ---------------------------------------------------------------------------------------


def _spread(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"median_s": None, "min_s": None, "max_s": None}
    return {"median_s": statistics.median(values), "min_s": min(values), "max_s": max(values)}


def _rows_for(n, backend, runs: list[_Run], plan: _Plan, cfg, devices) -> list[dict[str, Any]]:
    rows = []
    labels: list[str] = []
    for run in runs:
        for s in run.steps:
            if s["step"] not in labels:
                labels.append(s["step"])
    for label in labels:
        per = [s for run in runs for s in run.steps if s["step"] == label]
        times = [s["seconds"] for s in per]
        ran_on = sorted({b for s in per for b in s["ran_on"]})
        reasons = sorted({s["fallback_reason"] for s in per if s["fallback_reason"]})
        work = per[0]["work"]
        row = _row(n, backend, label, times, ran_on)
        row["fallback_reason"] = "; ".join(reasons) or None
        row["peak_rss_bytes"] = _max(s["peak_rss"] for s in per)
        row["peak_gpu_bytes"] = _max(s["peak_gpu"] for s in per)
        over = cfg.budget_s is not None and row["max_s"] > cfg.budget_s
        row["status"] = "over_budget" if over else "ok"
        device = "gpu" if any(is_gpu(b) for b in ran_on) and "gpu" in devices else "host"
        rates = devices.get(device)
        floor = None
        if work is not None and rates is not None:
            floor = floor_seconds(Work(work["bytes"], work["ops"], work["model"]), rates)
        row.update(
            work=work,
            floor_device=device if floor is not None else None,
            floor_s=floor,
            floor_ratio=row["median_s"] / floor if floor else None,
        )
        rows.append(row)
    for section, why in plan.skipped.items():
        # Labels this section produced at smaller sizes; its name when it never ran.
        for label in why["labels"] or [section]:
            row = _row(n, backend, label, [], [])
            row["status"] = why["status"]
            if why["status"] == "skipped_budget":
                row["predicted_s"] = why["predicted"].get(label)
                row["note"] = f"predicted {row['predicted_s']:.3g} s > budget {cfg.budget_s:g} s"
            else:
                row["note"] = f"not run: needs {why['needs']}, which is over the budget"
            rows.append(row)
    # A repeat that left out over-budget sections is not a full pipeline: not in the total.
    totals = [run.total_s for run in runs if run.complete]
    total = _row(n, backend, "total", totals, sorted({b for r in rows for b in r["ran_on"]}))
    total["status"] = "partial" if plan.skipped else "ok"
    total["note"] = (
        "excludes steps skipped for the budget"
        if plan.skipped
        else "pipeline wall time, data generation excluded"
    )
    total["peak_rss_bytes"] = _max(run.peak_rss for run in runs if run.complete)
    total["peak_gpu_bytes"] = _max(run.peak_gpu for run in runs if run.complete)
    rows.append(total)
    return rows


def _row(n, backend, step, times, ran_on) -> dict[str, Any]:
    return {
        "n_cells": n,
        "backend": backend,
        "step": step,
        "ran_on": ran_on,
        "fallback_reason": None,
        "status": "ok",
        "repeats": len(times),
        "seconds": times,
        **_spread(times),
        "peak_rss_bytes": None,
        "peak_gpu_bytes": None,
        "work": None,
        "floor_device": None,
        "floor_s": None,
        "floor_ratio": None,
        "speedup_vs_scanpy": None,
        "predicted_s": None,
        "note": None,
    }


def _error_row(n: int, backend: str, failure: dict[str, Any]) -> dict[str, Any]:
    row = _row(n, backend, "total", [], [])
    if failure["n_cells"] == n:
        row.update(status="error", note=failure["error"])
    else:
        row.update(
            status="skipped_error",
            note=f"not run: failed at {failure['n_cells']} cells ({failure['error']})",
        )
    return row


def _limit_row(n: int, backend: str, reason: str) -> dict[str, Any]:
    row = _row(n, backend, "total", [], [])
    row.update(status="time_limit", note=f"not run: {reason}")
    return row


def _max(values) -> int | None:
    vals = [v for v in values if v is not None]
    return max(vals) if vals else None


def _add_speedups(rows: list[dict[str, Any]], n: int) -> None:
    """Speedup = scanpy median / backend median, same size and step, same run."""
    ref = {
        r["step"]: r
        for r in rows
        if r["n_cells"] == n and delegates(r["backend"]) and r["median_s"]
    }
    for r in rows:
        if delegates(r["backend"]) or r["n_cells"] != n or not r["median_s"]:
            continue
        if r["ran_on"] == ["anndata"]:  # bookkeeping, identical on every backend
            continue
        if r["step"] not in ref:
            continue
        if r["step"] == "total" and "partial" in (r["status"], ref["total"]["status"]):
            continue
        r["speedup_vs_scanpy"] = ref[r["step"]]["median_s"] / r["median_s"]
