"""A GPU cost model: what each step would cost on an H200, projected from counted work.

**This is a model, not a measurement.** No GPU ran anything here. The pipeline runs with
``backend="cupy"`` on the CuPy double (:mod:`gpu_sc.testing.cupy_double`), which executes
every CuPy call on NumPy/SciPy and counts, per step, what a GPU would have to do:

- ``ops``: CuPy calls (functions, ufuncs, operators, array and cupyx-sparse methods), each at
  least one kernel launch;
- ``syncs``: calls that block the host until the device is idle (``.get()``, ``bool()``,
  ``int()``, ``float()``, ``item()``, an explicit synchronize);
- ``h2d_bytes`` / ``d2h_bytes``: host<->device transfers;
- ``bytes``: device memory the ops read and wrote (their operands' and results' sizes);
- ``flops``: dense and sparse matrix products (2 per multiply-add).

Each count turns into time with the constants of :class:`GpuConstants` and the times add up
(no overlap of launches with work is assumed, so the model leans pessimistic for launch-bound
steps and optimistic for steps whose kernels are far from the memory roofline, e.g. sorts and
scattered sparse access). Counts are taken at two or more atlas sizes; each count of each
step is extrapolated to the target size with the power law through the two largest sizes
(``c(n) = c(n2) * (n / n2) ** b``, ``b = log(c2 / c1) / log(n2 / n1)``), which exposes how
the work grows: ``b ~ 1`` linear, ``b ~ 2`` quadratic (all-pairs work), ``b ~ 0`` constant.

Limits, stated where the numbers appear: the double runs CuPy's calls, not its kernels, so
a call that CuPy implements with several launches (a sort, ``cupyx`` sparse products with
their index preparation) counts as one; element-wise fusion by CuPy is not modelled
(``cupy.fuse`` is not used by the engine); the power law is fitted over sizes far below the
target, so a threshold crossed between them (a kNN tile count, a chunked path above
``settings.max_device_nnz``) is not foreseen.
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from gpu_sc.dispatch.provenance import provenance

from .._version import __version__

__all__ = [
    "H200",
    "L40S",
    "OTHER_GPUS",
    "GpuConstants",
    "StepCounts",
    "collect_counts",
    "extrapolate",
    "markdown",
    "price",
    "project",
    "run_model",
    "runs_of",
]


@dataclass(frozen=True)
class GpuConstants:
    """Per-event costs of the modelled GPU (seconds, bytes/s, flop/s) and where they come from."""

    name: str
    launch_s: float
    sync_s: float
    hbm_bytes_per_s: float
    flop_per_s: float
    pcie_bytes_per_s: float
    sources: tuple[str, ...] = ()
    #: double-precision rate (``flop_per_s`` when None: FP64 as fast as FP32, as on an H200
    #: whose GEMMs run on FP64 tensor cores); a float32-class card's is 1/64 of FP32.
    fp64_flop_per_s: float | None = None

    @property
    def fp64_rate(self) -> float:
        return self.flop_per_s if self.fp64_flop_per_s is None else self.fp64_flop_per_s

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fp64_flop_per_s"] = self.fp64_rate
        return d


#: NVIDIA H200 SXM (141 GB HBM3e), the GPU this project is lent when one is lent.
H200 = GpuConstants(
    name="NVIDIA H200 (model)",
    # A CUDA kernel launch costs ~5 us on the host; CuPy's Python-side dispatch of one call
    # (argument checks, kernel cache lookup, output allocation from the pool) adds ~5 us.
    launch_s=10e-6,
    # cudaStreamSynchronize / a device->host copy of a scalar: ~10-20 us round trip.
    sync_s=15e-6,
    # 4.8 TB/s is the datasheet peak of HBM3e on H200; streaming kernels reach ~75% of it.
    hbm_bytes_per_s=3.5e12,
    # 67 TFLOP/s FP32 (and FP64 tensor-core) peak on H200 SXM; cuBLAS GEMMs of the engine's
    # shapes reach ~80%.
    flop_per_s=55e12,
    # PCIe Gen5 x16 is 64 GB/s per direction; from pageable NumPy memory (cupy.asarray)
    # about 25 GB/s.
    pcie_bytes_per_s=25e9,
    # FP64: 67 TFLOP/s on tensor cores (DGEMM), 34 TFLOP/s on the vector units; the FP64
    # flops the engine counts are GEMMs (cuBLAS uses the tensor cores) and fused kernels'
    # element-wise work, so the FP32 rate is kept for both (a model simplification).
    fp64_flop_per_s=55e12,
    sources=(
        "NVIDIA H200 Tensor Core GPU datasheet (2024): 4.8 TB/s HBM3e, 67 TFLOP/s FP32, "
        "34 TFLOP/s FP64, 67 TFLOP/s FP64 tensor core",
        "NVIDIA CUDA C++ Best Practices Guide: kernel launch overhead of a few microseconds",
        "CuPy performance guide (docs.cupy.dev, 'Performance best practices'): per-call "
        "Python overhead of microseconds; the issue's ranges: launch 5-10 us + Python, "
        "sync 10-20 us, HBM 3-4 TB/s, FP32 50-60 TFLOP/s",
    ),
)

#: A float32-class workstation/inference card, the kind most labs own: NVIDIA L40S (Ada).
L40S = GpuConstants(
    name="NVIDIA L40S (model)",
    launch_s=10e-6,  # the same host-side costs as the H200 (driver and CuPy, not the card)
    sync_s=15e-6,
    # 864 GB/s GDDR6 peak; streaming kernels reach ~75% of it.
    hbm_bytes_per_s=0.65e12,
    # 91.6 TFLOP/s FP32 (non-tensor) peak; ~80% in GEMMs.
    flop_per_s=73e12,
    # Ada runs FP64 at 1/64 of FP32: 1.43 TFLOP/s peak, ~80% of it.
    fp64_flop_per_s=1.15e12,
    # PCIe Gen4 x16: 32 GB/s per direction; from pageable NumPy memory about 12 GB/s.
    pcie_bytes_per_s=12e9,
    sources=(
        "NVIDIA L40S GPU datasheet (2023): 48 GB GDDR6 at 864 GB/s, 91.6 TFLOP/s FP32, "
        "PCIe Gen4 x16",
        "NVIDIA Ada GPU architecture whitepaper (2023), table of throughputs: FP64 at 1/64 "
        "of the FP32 rate on AD10x (RTX 6000 Ada, L40S, RTX 4090 alike)",
    ),
)

#: Cards the model prices beside the first (``run_model``'s ``gpu``).
OTHER_GPUS = (L40S,)

_FIELDS = ("ops", "syncs", "h2d_bytes", "d2h_bytes", "bytes", "flops", "flops_fp64")


@dataclass
class StepCounts:
    """What one step asked of the (simulated) device."""

    ops: float = 0
    syncs: float = 0
    h2d_bytes: float = 0
    d2h_bytes: float = 0
    bytes: float = 0
    flops: float = 0
    flops_fp64: float = 0  # the part of ``flops`` computed in double precision
    top_ops: dict[str, int] = field(default_factory=dict)  # most frequent calls

    @classmethod
    def between(cls, before: dict[str, Any], after: dict[str, Any]) -> StepCounts:
        """The difference of two ``Counters.snapshot()`` dicts of the CuPy double."""
        by_name = {
            k: v - before["by_name"].get(k, 0)
            for k, v in after["by_name"].items()
            if v - before["by_name"].get(k, 0) > 0
        }
        top = dict(sorted(by_name.items(), key=lambda kv: -kv[1])[:5])
        return cls(
            ops=after["ops"] - before["ops"],
            syncs=after["syncs"] - before["syncs"],
            h2d_bytes=after["h2d_bytes"] - before["h2d_bytes"],
            d2h_bytes=after["d2h_bytes"] - before["d2h_bytes"],
            bytes=(after["bytes_read"] + after["bytes_written"])
            - (before["bytes_read"] + before["bytes_written"]),
            flops=after["flops"] - before["flops"],
            flops_fp64=after.get("flops_fp64", 0) - before.get("flops_fp64", 0),
            top_ops=top,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def project(counts: StepCounts, gpu: GpuConstants = H200) -> dict[str, float]:
    """Modelled seconds of one step, by component, and their sum (``total``)."""
    parts = {
        "launch": counts.ops * gpu.launch_s,
        "sync": counts.syncs * gpu.sync_s,
        "memory": counts.bytes / gpu.hbm_bytes_per_s,
        "compute": (counts.flops - counts.flops_fp64) / gpu.flop_per_s
        + counts.flops_fp64 / gpu.fp64_rate,
        "transfer": (counts.h2d_bytes + counts.d2h_bytes) / gpu.pcie_bytes_per_s,
    }
    parts["total"] = sum(parts.values())
    return parts


def growth_exponent(n1: float, c1: float, n2: float, c2: float) -> float:
    """``b`` of ``c ~ n**b`` through two points (0 when either count is 0: no growth known).

    Never below 0: work does not shrink with more cells; a count that drops between two
    sizes means a size-dependent default changed in between (UMAP runs 500 epochs below
    10,000 cells and 200 above), and the larger size's count is then kept constant.
    """
    if c1 <= 0 or c2 <= 0 or n1 == n2:
        return 0.0
    return max(0.0, math.log(c2 / c1) / math.log(n2 / n1))


def extrapolate(by_size: dict[int, StepCounts], n: int) -> tuple[StepCounts, dict[str, float]]:
    """Counts at ``n`` cells from the power law through the two largest measured sizes, and
    the fitted exponent of each count."""
    sizes = sorted(by_size)
    if len(sizes) < 2:
        raise ValueError("extrapolation needs counts at two sizes or more")
    n1, n2 = sizes[-2], sizes[-1]
    c1, c2 = by_size[n1], by_size[n2]
    out, exps = StepCounts(top_ops=dict(c2.top_ops)), {}
    for f in _FIELDS:
        v1, v2 = getattr(c1, f), getattr(c2, f)
        b = growth_exponent(n1, v1, n2, v2)
        exps[f] = b
        setattr(out, f, v2 * (n / n2) ** b if v2 > 0 else 0.0)
    exps["transfer_bytes"] = growth_exponent(
        n1, c1.h2d_bytes + c1.d2h_bytes, n2, c2.h2d_bytes + c2.d2h_bytes
    )
    return out, exps


# -- collecting counts on the double --------------------------------------------------------


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
    from gpu_sc.testing.cupy_double import install

    from .. import datasets
    from ..pipeline import pipeline

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


def runs_of(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The counted runs inside a model report (to price them again with other constants)."""
    by_n: dict[int, list] = {}
    for r in report["rows"]:
        if r["counted"]:
            by_n.setdefault(r["n_cells"], []).append(
                {k: r[k] for k in ("step", "ran_on", "fallback_reason", "double_seconds", "counts")}
            )
    return [{"n_cells": n, "steps": steps} for n, steps in sorted(by_n.items())]


def price(
    runs: list[dict[str, Any]],
    meta: dict[str, Any],
    *,
    target: int = 1_000_000,
    gpu: GpuConstants = H200,
    goal_s: float = 20.0,
    extra_targets: Sequence[int] = (),
    other_gpus: Sequence[GpuConstants] | None = None,
) -> dict[str, Any]:
    """Project counted ``runs`` (from :func:`collect_counts`) onto ``gpu`` and extrapolate each
    step to ``target`` cells (and to each of ``extra_targets``); ``meta`` (sizes, seed,
    versions) is copied into the report. Each of ``other_gpus`` (default :data:`OTHER_GPUS`)
    prices the same counts: ``report["other_gpus"]``, per step and in total."""
    other_gpus = OTHER_GPUS if other_gpus is None else tuple(other_gpus)
    targets = [target, *[int(t) for t in extra_targets if int(t) != target]]
    cells = sorted(run["n_cells"] for run in runs)
    runs = sorted(runs, key=lambda run: run["n_cells"])
    labels = _step_labels(runs)
    partial = {
        str(r["n_cells"]): [s["step"] for s in r["steps"]]
        for r in runs
        if len(r["steps"]) < len(labels)
    }
    rows = []
    for label in labels:
        by_size = {}
        for run in runs:
            rec = next((s for s in run["steps"] if s["step"] == label), None)
            if rec is not None:
                c = StepCounts(**rec["counts"])
                by_size[run["n_cells"]] = c
                rows.append(_row(label, run["n_cells"], c, gpu, rec, measured=True))
        if len(by_size) >= 2:
            for t in targets:
                c, exps = extrapolate(by_size, t)
                rows.append(_row(label, t, c, gpu, None, measured=False, exponents=exps))
    totals = {}
    for n in [*cells, *targets]:
        totals[n] = sum(r["model_s"]["total"] for r in rows if r["n_cells"] == n)
    others = []
    for other in other_gpus:
        per_step = [
            {
                "step": r["step"],
                "n_cells": r["n_cells"],
                "counted": r["counted"],
                "model_s": project(StepCounts(**r["counts"]), other),
            }
            for r in rows
        ]
        others.append(
            {
                "gpu": other.to_dict(),
                "rows": per_step,
                "totals_s": {
                    str(n): sum(p["model_s"]["total"] for p in per_step if p["n_cells"] == n)
                    for n in [*cells, *targets]
                },
            }
        )
    return {
        "kind": "model",
        "disclaimer": "A MODEL, not a measurement: counts from the CuPy double (NumPy), "
        f"priced with {gpu.name} constants; no GPU ran.",
        "gpu": gpu.to_dict(),
        "cells": cells,
        "target": target,
        "extra_targets": targets[1:],
        "goal_s": goal_s,
        **meta,
        "rows": rows,
        "totals_s": {str(k): v for k, v in totals.items()},
        # counted sizes whose run has only some steps (e.g. a t-SNE-only run at small sizes):
        # their totals are those steps' only
        "partial_sizes": partial,
        "offenders": offenders(rows, target, goal_s),
        "other_gpus": others,
    }


def _step_labels(runs: list[dict[str, Any]]) -> list[str]:
    """Every step of the runs, in pipeline order: the largest run's, then the others' missing
    ones inserted after the step they follow in their own run."""
    ordered = sorted(runs, key=lambda run: -run["n_cells"])
    labels = [s["step"] for s in ordered[0]["steps"]]
    for run in ordered[1:]:
        prev = None
        for s in run["steps"]:
            if s["step"] not in labels:
                at = labels.index(prev) + 1 if prev in labels else len(labels)
                labels.insert(at, s["step"])
            prev = s["step"]
    return labels


def _row(label, n, counts: StepCounts, gpu, rec, *, measured: bool, exponents=None) -> dict:
    return {
        "step": label,
        "n_cells": n,
        "counted": measured,  # False: extrapolated
        "ran_on": rec["ran_on"] if rec else None,
        "fallback_reason": rec["fallback_reason"] if rec else None,
        "double_seconds": rec["double_seconds"] if rec else None,
        "counts": counts.to_dict(),
        "exponents": exponents,
        "model_s": project(counts, gpu),
    }


_WHY = {
    "launch": "launch-bound: {ops:.3g} CuPy calls (~{per:.0f} per 1000 cells); fuse them into "
    "fewer kernels (RawKernel / cupy.fuse) or batch the loop",
    "sync": "sync-bound: {syncs:.3g} host<->device round trips; keep loop conditions on the "
    "device or check them every few iterations",
    "memory": "memory-bound: {bytes:.3g} B through HBM; fewer passes / fused element-wise ops",
    "compute": "compute-bound: {flops:.3g} flop",
    "transfer": "transfer-bound: {xfer:.3g} B over PCIe; keep the data on the device",
}


def offenders(rows: list[dict], target: int, goal_s: float, top: int = 3) -> list[dict]:
    """The ``top`` steps by modelled time at ``target``, with what dominates and a remedy."""
    at = [r for r in rows if r["n_cells"] == target]
    at.sort(key=lambda r: -r["model_s"]["total"])
    out = []
    for r in at[:top]:
        parts = {k: v for k, v in r["model_s"].items() if k != "total"}
        main = max(parts, key=parts.get)
        c = r["counts"]
        why = _WHY[main].format(
            ops=c["ops"],
            per=1000 * c["ops"] / target,
            syncs=c["syncs"],
            bytes=c["bytes"],
            flops=c["flops"],
            xfer=c["h2d_bytes"] + c["d2h_bytes"],
        )
        growth = (r["exponents"] or {}).get(
            {
                "launch": "ops",
                "sync": "syncs",
                "memory": "bytes",
                "compute": "flops",
                "transfer": "transfer_bytes",
            }[main],
            0.0,
        )
        if growth > 1.5:
            why += f"; grows as n^{growth:.2f} (all-pairs work)"
        out.append(
            {
                "step": r["step"],
                "model_s": r["model_s"]["total"],
                "bound": main,
                "why": why,
                "growth": growth,
            }
        )
    return out


# -- output ---------------------------------------------------------------------------------------


def _constants_line(gpu: dict[str, Any]) -> str:
    return (
        "{}: launch {:.0f} µs per call, sync {:.0f} µs, memory {:.2f} TB/s, FP32 {:.0f} "
        "TFLOP/s, FP64 {:.3g} TFLOP/s, PCIe {:.0f} GB/s. Sources: {}.".format(
            gpu["name"],
            gpu["launch_s"] * 1e6,
            gpu["sync_s"] * 1e6,
            gpu["hbm_bytes_per_s"] / 1e12,
            gpu["flop_per_s"] / 1e12,
            gpu.get("fp64_flop_per_s", gpu["flop_per_s"]) / 1e12,
            gpu["pcie_bytes_per_s"] / 1e9,
            "; ".join(gpu["sources"]),
        )
    )


def _partial_note(present: list[str] | None, steps: list[str]) -> str:
    if not present:
        return ""
    missing = [s for s in steps if s not in present]
    if len(missing) < len(present):
        return f" (without: {', '.join(missing)})"
    return f" (only: {', '.join(present)})"


def _fmt_s(x: float) -> str:
    return f"{x:.3g}" if x >= 0.001 else f"{x:.1e}"


def markdown(report: dict[str, Any]) -> str:
    """The model as a markdown page, labelled as a model in its title and every table."""
    gpu = report["gpu"]
    target = report["target"]
    targets = [target, *report.get("extra_targets", [])]
    others = report.get("other_gpus", [])
    lines = [
        f"# GPU cost model (a MODEL, not a measurement) — {gpu['name']}",
        "",
        f"> {report['disclaimer']}",
        "",
        f"Counted at {', '.join(f'{n:,}' for n in report['cells'])} cells × "
        f"{report['n_genes']:,} genes (synthetic atlas, seed {report['seed']}) on the CuPy "
        f"double; extrapolated to {', '.join(f'{t:,}' for t in targets)} cells by the power "
        "law through the two largest "
        f"sizes. Created {report['created']}; gpu_sc {report['versions']['gpu_sc']}. The "
        f"double simulated a {report['double_device_bytes'] / 2**30:g} GiB device (the kNN "
        "and t-SNE tiles follow free device memory; see `gpu_sc.bench.model.collect_counts`).",
        "",
        *[_constants_line(g) for g in [gpu, *[o["gpu"] for o in others]]],
        "",
        *([f"Config: `{json.dumps(report['config'])}`", ""] if report.get("config") else []),
        *([f"Command: `{report['command']}`", ""] if report.get("command") else []),
        *([f"Note: {report['note']}", ""] if report.get("note") else []),
        "Model time = calls × launch + syncs × sync + bytes / HBM + FP32 flop / FP32 rate + "
        "FP64 flop / FP64 rate + transfers / PCIe (no overlap assumed). A fused kernel "
        "(`gpu_sc.kernels.cuda`) is counted by its declared cost per launch (`kernel:<name>` "
        "in the calls), not by its reference's CuPy calls. *exp* = fitted growth exponent of "
        "the dominant count.",
        "",
    ]
    totals = report["totals_s"]
    partial = report.get("partial_sizes", {})
    steps = list(dict.fromkeys(r["step"] for r in report["rows"]))
    names = [
        gpu["name"].replace(" (model)", ""),
        *[o["gpu"]["name"].replace(" (model)", "") for o in others],
    ]
    lines += [
        "| cells | " + " | ".join(f"{n} total (s)" for n in names) + " |",
        "|---:|" + "---:|" * len(names),
        *[
            f"| {int(n):,}{' (extrapolated)' if int(n) in targets else ''}"
            f"{_partial_note(partial.get(n), steps)} | {_fmt_s(v)} | "
            + " | ".join(_fmt_s(o["totals_s"][n]) for o in others)
            + (" |" if others else "|")
            for n, v in totals.items()
        ],
        "",
    ]
    step_goal = report.get("step_goal_s", 5.0)
    slow = [
        r for r in report["rows"] if r["n_cells"] == target and r["model_s"]["total"] > step_goal
    ]
    lines += [
        f"Goal: whole pipeline ≤ {report['goal_s']:g} s at {target:,} cells on one H200, no "
        f"step above {step_goal:g} s: "
        + (
            "**met by the model**"
            if totals[str(target)] <= report["goal_s"] and not slow
            else f"**missed by the model** ({_fmt_s(totals[str(target)])} s"
            + (
                f"; above {step_goal:g} s: "
                + ", ".join(f"{r['step']} {_fmt_s(r['model_s']['total'])} s" for r in slow)
                if slow
                else ""
            )
            + ")"
        ),
        "",
    ]
    if others:
        lines += [
            "## The same counts on other cards (model)",
            "",
            "| step | cells | " + " | ".join(f"{n} s" for n in names) + " |",
            "|---|---:|" + "---:|" * len(names),
        ]
        for i, r in enumerate(report["rows"]):
            if r["counted"] or r["model_s"]["total"] == 0:
                continue
            lines.append(
                f"| {r['step']} | {r['n_cells']:,} | {_fmt_s(r['model_s']['total'])} | "
                + " | ".join(_fmt_s(o["rows"][i]["model_s"]["total"]) for o in others)
                + " |"
            )
        lines.append("")
    lines += [
        "## Steps that miss, and why",
        "",
    ]
    for o in report["offenders"]:
        lines.append(f"- **{o['step']}**: {_fmt_s(o['model_s'])} s modelled; {o['why']}.")
    lines += ["", "## Per step (model)", ""]
    head = (
        "| step | cells | ran on | CuPy calls | syncs | HBM bytes | flop | FP64 flop | "
        "H2D+D2H bytes | launch s | sync s | memory s | compute s | transfer s | **model s** "
        "| exp |"
    )
    lines += [head, "|" + "---|" * 2 + "---|" + "---:|" * 13]
    for r in report["rows"]:
        c, m = r["counts"], r["model_s"]
        if m["total"] == 0:  # bookkeeping on the host (subsetting, .raw): nothing on the GPU
            continue
        exps = r["exponents"]
        if exps:
            main = max((k for k in m if k != "total"), key=m.get)
            key = {
                "launch": "ops",
                "sync": "syncs",
                "memory": "bytes",
                "compute": "flops",
                "transfer": "transfer_bytes",
            }[main]
            exp = f"{exps[key]:.2f} ({key})"
        else:
            exp = ""
        cells = f"{r['n_cells']:,}" + ("" if r["counted"] else " (extrap.)")
        ran = ",".join(r["ran_on"]) if r["ran_on"] else "–"
        lines.append(
            f"| {r['step']} | {cells} | {ran} | {c['ops']:.3g} | {c['syncs']:.3g} | "
            f"{c['bytes']:.3g} | {c['flops']:.3g} | {c.get('flops_fp64', 0):.3g} | "
            f"{c['h2d_bytes'] + c['d2h_bytes']:.3g} | "
            f"{_fmt_s(m['launch'])} | {_fmt_s(m['sync'])} | {_fmt_s(m['memory'])} | "
            f"{_fmt_s(m['compute'])} | {_fmt_s(m['transfer'])} | **{_fmt_s(m['total'])}** | "
            f"{exp} |"
        )
    return "\n".join(lines) + "\n"
