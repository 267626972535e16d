"""A GPU cost MODEL (not a measurement) from the CuPy double's counters.

The pipeline runs with ``backend="cupy"`` on the double (NumPy underneath) at a few sizes; for
every step the double counts array operations (each one or more kernel launches on a GPU),
host<->device synchronisations and transfers, device bytes read and written, and matrix-product
flops. A roofline-style sum turns the counts into a projected time on an H100/H200-class GPU::

    t = ops * (launch + python) + syncs * sync + (read + written) / HBM
        + flops / FP32 + transfer bytes / PCIe

and each count is extrapolated to 10^6 cells by a power law fitted to the two largest sizes.
Constants (:data:`CONSTANTS`) and their sources are stored with every result. What the model
ignores: kernel fusion and caching effects, occupancy of small kernels, cuSPARSE/cuBLAS
efficiency below peak, CPU work that stays on the host (scanpy's and igraph's Python, UMAP's
numba layout optimisation when it runs on host, t-SNE on host), memory-pool allocation costs.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

#: H100/H200-class constants. Sources: NVIDIA H100 SXM datasheet (HBM3 3.35 TB/s, FP32
#: 67 TFLOP/s peak; H200 HBM3e 4.8 TB/s) derated to what streaming kernels and cuBLAS SGEMM
#: reach; kernel-launch latency of ~5 us (CUDA C++ Best Practices Guide) plus CuPy's Python
#: dispatch, measured at ~5-10 us per call in CuPy's own benchmarks; a device->host
#: synchronisation round trip ~10-20 us; PCIe Gen5 x16 ~ 50 GB/s peak, ~25 GB/s pageable.
CONSTANTS: dict[str, float] = {
    "launch_s": 7.5e-6,  # one kernel launch incl. CuPy's Python overhead (5-10 us)
    "sync_s": 15e-6,  # one host<->device synchronisation (10-20 us)
    "hbm_bytes_per_s": 3.5e12,  # HBM bandwidth reached by streaming kernels (3-4 TB/s)
    "fp32_flops_per_s": 55e12,  # FP32 matrix-product throughput (50-60 TFLOP/s)
    "pcie_bytes_per_s": 25e9,  # host<->device copies (pageable memory)
}
COUNTERS = ("ops", "syncs", "h2d", "d2h", "h2d_bytes", "d2h_bytes", "bytes_read",
            "bytes_written", "flops")  # fmt: skip
LABEL = "MODEL (projected from CuPy-double operation counts; not a measurement)"


def projected_seconds(c: dict[str, float], k: dict[str, float] = CONSTANTS) -> dict[str, float]:
    """Projected seconds of one step's counts, by term, and their sum ``total``."""
    terms = {
        "launch": c["ops"] * k["launch_s"],
        "sync": c["syncs"] * k["sync_s"],
        "memory": (c["bytes_read"] + c["bytes_written"]) / k["hbm_bytes_per_s"],
        "compute": c["flops"] / k["fp32_flops_per_s"],
        "transfer": (c["h2d_bytes"] + c["d2h_bytes"]) / k["pcie_bytes_per_s"],
    }
    terms["total"] = sum(terms.values())
    return terms


@contextlib.contextmanager
def _step_counts(handle, out: list):
    """Record the double's counters at every provenance entry: per-step deltas."""
    from ..dispatch import registry

    original = registry.record_step
    last = handle.counters.snapshot()

    def record(target, **kw):
        nonlocal last
        now = handle.counters.snapshot()
        delta = {k: now[k] - last[k] for k in COUNTERS}
        out.append({"step": kw["step"], "backend": kw["backend"], **delta})
        last = handle.counters.snapshot()
        return original(target, **kw)

    registry.record_step = record
    try:
        yield
    finally:
        registry.record_step = original


def count(n_cells: int, *, n_genes: int = 2000, seed: int = 0, config=None) -> dict[str, Any]:
    """Run the pipeline on the double at ``n_cells``; per-step counts and projections."""
    import gpu_sc

    from ..testing.cupy_double import install

    adata = gpu_sc.datasets.synthetic(n_cells, n_genes=n_genes, seed=seed)
    steps: list[dict[str, Any]] = []
    config = config if config is not None else {"tsne": {"enabled": False}}
    t0 = time.perf_counter()
    with install(device_bytes=141 << 30) as double, _step_counts(double, steps):
        gpu_sc.pipeline(adata, config, backend="cupy")
    for s in steps:
        s["projected_s"] = projected_seconds(s)["total"] if s["backend"] == "cupy" else None
    return {"n_cells": n_cells, "n_genes": n_genes, "steps": steps,
            "double_wall_s": time.perf_counter() - t0}  # fmt: skip


def _fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Power law ``y = a * x**b``, least squares in log-log over every size (b clamped to
    [0, 2]; counts that are zero anywhere extrapolate as their largest value)."""
    if min(ys) <= 0:
        return (max(ys), 0.0)
    lx = [math.log(x) for x in xs]
    ly = [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    var = sum((v - mx) ** 2 for v in lx)
    b = sum((u - mx) * (v - my) for u, v in zip(lx, ly, strict=True)) / var if var else 0.0
    b = min(2.0, max(0.0, b))
    return (math.exp(my - b * mx), b)


def extrapolate(runs: list[dict[str, Any]], target: int = 1_000_000) -> list[dict[str, Any]]:
    """Per step: every counter fitted as a power law of cells, projected at ``target``."""
    xs = [r["n_cells"] for r in runs]
    out = []
    for i, s in enumerate(runs[-1]["steps"]):
        if s["backend"] != "cupy":
            out.append({"step": s["step"], "backend": s["backend"], "projected_s": None})
            continue
        counts, exponents = {}, {}
        for key in COUNTERS:
            ys = [float(r["steps"][i][key]) for r in runs]
            a, b = _fit(xs, ys)
            counts[key] = a * target**b
            exponents[key] = round(b, 3)
        terms = projected_seconds(counts)
        out.append({"step": s["step"], "backend": "cupy", "counts": counts,
                    "exponents": exponents, "terms_s": terms,
                    "projected_s": terms["total"]})  # fmt: skip
    return out


def model(cells: list[int], *, n_genes: int = 2000, seed: int = 0, target: int = 1_000_000,
          log=print) -> dict[str, Any]:  # fmt: skip
    runs = []
    for n in cells:
        log(f"model: counting the pipeline on the CuPy double at {n} cells")
        runs.append(count(n, n_genes=n_genes, seed=seed))
    steps = [s["step"] for s in runs[0]["steps"]]
    for r in runs[1:]:
        if [s["step"] for s in r["steps"]] != steps:
            raise RuntimeError("the pipeline ran different steps at different sizes")
    return {"label": LABEL, "constants": CONSTANTS, "cells": cells, "n_genes": n_genes,
            "runs": runs, "target_cells": target,
            "extrapolated": extrapolate(runs, target)}  # fmt: skip


def markdown(rep: dict[str, Any]) -> str:
    cells = rep["cells"]
    lines = [f"# GPU cost {rep['label']}", "",
             "Constants: " + ", ".join(f"{k} = {v:g}" for k, v in rep["constants"].items()),
             "", "Projected seconds per step (cupy steps only; scanpy steps run on host and "
             "are not modelled). Counts come from the CuPy double (NumPy underneath).", "",
             "| step | " + " | ".join(f"{n:,} cells" for n in cells)
             + f" | {rep['target_cells']:,} cells (extrapolated) | ops @ largest | syncs @ "
             "largest | ops exp. | bytes exp. |",
             "|---|" + "---:|" * (len(cells) + 5)]  # fmt: skip
    for i, e in enumerate(rep["extrapolated"]):
        vals = []
        for r in rep["runs"]:
            p = r["steps"][i]["projected_s"]
            vals.append("host" if p is None else f"{p:.4f}")
        last = rep["runs"][-1]["steps"][i]
        ext = "host" if e["projected_s"] is None else f"{e['projected_s']:.3f}"
        exps = e.get("exponents", {})
        lines.append(f"| {e['step']} | " + " | ".join(vals) + f" | {ext} | {last['ops']} | "
                     f"{last['syncs']} | {exps.get('ops', '')} | {exps.get('bytes_read', '')} |")
    tot = [sum(s["projected_s"] or 0 for s in r["steps"]) for r in rep["runs"]]
    ext_tot = sum(e["projected_s"] or 0 for e in rep["extrapolated"])
    lines.append("| **total (cupy steps)** | " + " | ".join(f"{t:.4f}" for t in tot)
                 + f" | {ext_tot:.3f} | | | | |")  # fmt: skip
    lines += ["", "'exp.': fitted power-law exponent (vs cells) of operations and of bytes read "
              "(least squares in log-log over all sizes), used for the extrapolation; "
              "Leiden's and UMAP's operation counts follow their iteration counts, which "
              "depend on the data more than on its size. "
              "This is a model, never a measurement: see gpu_sc/bench/model.py for what it "
              "ignores."]  # fmt: skip
    return "\n".join(lines) + "\n"
