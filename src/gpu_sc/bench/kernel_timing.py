"""Time every registered fused kernel against its declared cost:
``python -m gpu_sc.bench.kernel_timing [--scale 1] [--repeats 5] [--json out.json]``.

On a CUDA device (CuPy + numba-cuda) each kernel's ``example`` inputs at ``--scale`` are
launched ``--repeats`` times after one warm-up (which compiles it), timed with CUDA events;
the table gives the median measured seconds, the declared bytes and flops of one call, the
implied GB/s and TFLOP/s, and the cost model's time for the declared cost on the H200
constants (:mod:`gpu_sc.bench.model`), so the first lent GPU checks the model kernel by kernel.

Under numba-cuda's simulator (``NUMBA_ENABLE_CUDASIM=1``, no GPU) the same code runs on NumPy
at scale 0: a rehearsal of this script, whose times are the CPU simulator's, not a GPU's (the
table says so).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from ..kernels.cuda import jitted, numba_cuda_status, registry
from .model import H200, StepCounts, project


def _copy(a):
    return a.copy() if hasattr(a, "copy") and not isinstance(a, (int, float, str)) else a


def time_kernels(scale: int, repeats: int, only: list[str] | None = None) -> dict:

    status = numba_cuda_status()
    if status.fused:
        import cupy as xp

        dev = xp.cuda.runtime.getDeviceProperties(0)["name"]
        where = "CUDA device: " + (dev.decode() if isinstance(dev, bytes) else str(dev))
    elif status.simulator:
        import numpy as xp

        where, scale = "numba-cuda simulator (CPU; not a GPU timing)", 0
    else:
        return {"where": None, "reason": status.reason, "kernels": []}
    rows = []
    for name, spec in registry().items():
        if (only and name not in only) or spec.example is None:
            continue
        args, kwargs = spec.example(xp, scale)
        cost = spec.cost(*args, **kwargs)
        row = {
            "kernel": name,
            "scale": scale,
            "declared": {
                "read": cost.read,
                "written": cost.written,
                "flops": cost.flops,
                "flop_dtype": cost.flop_dtype,
                "launches": cost.launches,
                "syncs": cost.syncs,
            },
        }
        counts = StepCounts(
            ops=cost.launches,
            syncs=cost.syncs,
            bytes=cost.read + cost.written,
            flops=cost.flops,
            flops_fp64=cost.flops if cost.flop_dtype == "float64" else 0,
        )
        row["model_s_h200"] = project(counts, H200)["total"]
        try:
            kernels = jitted(name)
            seconds = []
            for i in range(repeats + 1):
                a = [_copy(x) for x in args]
                if status.fused:
                    xp.cuda.get_current_stream().synchronize()
                    start, stop = xp.cuda.Event(), xp.cuda.Event()
                    start.record()
                    spec.launch(xp, kernels, *a, **kwargs)
                    stop.record()
                    stop.synchronize()
                    took = xp.cuda.get_elapsed_time(start, stop) / 1e3
                else:
                    t0 = time.perf_counter()
                    spec.launch(xp, kernels, *a, **kwargs)
                    took = time.perf_counter() - t0
                if i:  # the first call compiles
                    seconds.append(took)
            med = statistics.median(seconds)
            row.update(
                ok=True,
                measured_s=med,
                all_s=seconds,
                gb_per_s=(cost.read + cost.written) / med / 1e9,
                tflop_per_s=cost.flops / med / 1e12,
                measured_over_model=med / row["model_s_h200"],
            )
        except Exception as exc:  # report the kernel that failed and go on with the others
            row.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:1000])
        rows.append(row)
    return {"where": where, "scale": scale, "repeats": repeats, "kernels": rows}


def table(report: dict) -> str:
    if report["where"] is None:
        return f"kernels: not timed ({report['reason']})"
    lines = [
        f"kernels timed on {report['where']}, scale {report['scale']}, "
        f"median of {report['repeats']}:",
        f"{'kernel':<22} {'measured s':>11} {'read+written B':>15} {'flop':>10} "
        f"{'GB/s':>8} {'TFLOP/s':>8} {'H200 model s':>13} {'meas/model':>10}",
    ]
    for r in report["kernels"]:
        d = r["declared"]
        if not r["ok"]:
            lines.append(f"{r['kernel']:<22} FAILED: {r['error']}")
            continue
        lines.append(
            f"{r['kernel']:<22} {r['measured_s']:>11.3g} {d['read'] + d['written']:>15.3g} "
            f"{d['flops']:>10.3g} {r['gb_per_s']:>8.3g} {r['tflop_per_s']:>8.3g} "
            f"{r['model_s_h200']:>13.3g} {r['measured_over_model']:>10.3g}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=int, default=1, help="0 tiny, 1 (default), 2 larger")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--kernel", action="append", help="only this kernel (repeatable)")
    p.add_argument("--json", help="write the records here")
    args = p.parse_args(argv)
    report = time_kernels(args.scale, args.repeats, args.kernel)
    print(table(report))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
    return 0 if report["where"] and all(r["ok"] for r in report["kernels"]) else 1


if __name__ == "__main__":
    sys.exit(main())
