"""The benchmark's outputs: ``bench.json``, ``bench.md`` and ``bench.png``, written atomically."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..backends import delegates, is_gpu
from ..io import atomic_path

__all__ = ["TABLE_HEADER", "markdown", "plot", "write_outputs"]

TABLE_HEADER = (
    "| step | backend | ran on | time s | spread | speedup | peak RSS | peak GPU | ×floor |"
)


def write_outputs(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write the three files into ``out_dir``; returns their paths by kind."""
    out = Path(out_dir)
    paths = {"json": out / "bench.json", "md": out / "bench.md", "png": out / "bench.png"}
    with atomic_path(paths["json"]) as tmp:
        tmp.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    with atomic_path(paths["md"]) as tmp:
        tmp.write_text(markdown(report))
    with atomic_path(paths["png"]) as tmp:
        plot(report, tmp)
    return paths


# -- Markdown -------------------------------------------------------------------------------------


def _s(x: float | None) -> str:
    if x is None:
        return "–"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def _bytes(x: int | None) -> str:
    if x is None:
        return "–"
    return f"{x / 2**30:.2f} GiB" if x >= 2**30 else f"{x / 2**20:.0f} MiB"


def _ratio(x: float | None, suffix: str = "×") -> str:
    if x is None:
        return "–"
    return f"{x:.0f}{suffix}" if x >= 100 else f"{x:.2g}{suffix}" if x < 10 else f"{x:.1f}{suffix}"


def _time_cell(r: dict) -> str:
    if r["status"] == "skipped_budget":
        return "> budget"
    if r["status"] in ("skipped_dependency", "skipped_error", "time_limit"):
        return "not run"
    if r["status"] == "error":
        return "error"
    flag = " ⚠" if r["status"] == "over_budget" else ""
    return _s(r["median_s"]) + flag


def _spread_cell(r: dict) -> str:
    if r["median_s"] is None:
        return r["note"] or ""
    if r["repeats"] < 2:
        return "1 run"
    return f"{_s(r['min_s'])}–{_s(r['max_s'])}"


def _ran_on(r: dict) -> str:
    if not r["ran_on"]:
        return "–"
    ran = "+".join(r["ran_on"])
    engine = not delegates(r["backend"])
    if engine and r["step"] != "total" and r["fallback_reason"]:
        return f"{ran} (fallback)"
    return ran


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: context, then per size a step × backend table."""
    lines = _context_lines(report)
    for size in report["sizes"]:
        lines += _size_lines(report["rows"], size)
        lines.append("")
    return "\n".join(lines)


def _context_lines(report: dict[str, Any]) -> list[str]:
    """The report's opening: command, machine, data, stops, floors and the table legend."""
    p, m = report["parameters"], report["machine"]
    lines = [
        "**gpu_sc benchmark** (`" + p.get("command", "gpu-sc bench") + "`)",
        "",
        f"Machine: {m['hostname']}, {m['cpu_model']} ({m['cpu_cores_usable']} usable of "
        f"{m['cpu_cores']} cores), {_bytes(m['memory_bytes'])} RAM, GPU: {m['gpu'] or 'none'}. "
        f"Created {report['created_utc']}; load average (1 min) {_load(m)}.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + ".",
        f"Data: `gpu_sc.datasets.synthetic(n, n_genes={p['n_genes']}, n_types={p['n_types']}, "
        f"difficulty={p['difficulty']!r}, seed={p['seed']})`, generated once per size on the "
        f"host; every backend gets a fresh copy per repeat. Repeats: {p['repeats']}; budget per "
        f"step: {_budget(p['budget_s'])}; steps: {', '.join(p['steps_enabled'])}.",
    ]
    if p.get("note"):
        lines.append(f"Note: {p['note']}.")
    if p.get("stopped"):
        reached = {size["n_cells"] for size in report["sizes"]}
        missing = [f"{n:,}" for n in p["cells"] if n not in reached]
        lines.append(
            f"**Stopped early**: {p['stopped']}; repeats at that size may be fewer than asked"
            + (f"; sizes not run: {', '.join(missing)} cells." if missing else ".")
        )
    lines.append("")
    for name, d in report["devices"].items():
        lines.append(
            f"Floors on {name} ({d['name']}): copy {d['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s, "
            f"float32 matmul {d['matmul_flop_per_s'] / 1e9:.0f} GFLOP/s."
        )
    lines += [
        "",
        "Time = median of the repeats (s; device-synchronised on the GPU), spread = min–max. "
        "*Ran on* is what actually executed: a step the engine lacks runs on scanpy and is "
        "shown as a fallback. Speedup = scanpy median / this median, same run. "
        "Peak RSS = process resident set during the step (includes the input held by the "
        "benchmark); GPU = CuPy pool peak. ×floor = time / roofline floor "
        "(see `gpu_sc.bench.floors`). ⚠ = ran over the budget; > budget = not run, "
        "predicted over it.",
        "",
    ]
    return lines


def _size_lines(rows: list[dict], size: dict) -> list[str]:
    """One size's section: its input, the per-backend totals and the step × backend table."""
    lines: list[str] = []
    n = size["n_cells"]
    inp = size["input"]
    lines += [
        f"#### {n:,} cells",
        "",
        f"Input {inp['n_obs']:,} × {inp['n_vars']:,}, {inp['nnz']:,} nonzeros "
        f"(generated in {size['generate_s']:.1f} s on the {size['generated_on']}, excluded).",
        "",
    ]
    totals = [r for r in rows if r["n_cells"] == n and r["step"] == "total"]
    for t in totals:
        slow = _slowest(rows, n, t["backend"])
        lines.append(
            f"- **{t['backend']}**: end to end {_s(t['median_s'])} s"
            + (f" ({t['status']}: {t['note']})" if t["status"] != "ok" else "")
            + (
                f", {_ratio(t['speedup_vs_scanpy'])} scanpy"
                if not delegates(t["backend"]) and t["speedup_vs_scanpy"]
                else ""
            )
            + (f"; slowest: {slow}" if slow else "")
        )
        if is_gpu(t["backend"]) and n >= GOAL_CELLS and t["median_s"]:
            lines.append(_goal_line(t, rows, n))
    lines += [
        "",
        TABLE_HEADER,
        "|---|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in sorted((r for r in rows if r["n_cells"] == n), key=_order(rows, n)):
        step = "**total**" if r["step"] == "total" else r["step"]
        lines.append(
            f"| {step} | {r['backend']} | {_ran_on(r)} | {_time_cell(r)} | "
            f"{_spread_cell(r)} | {_ratio(r['speedup_vs_scanpy'])} | "
            f"{_bytes(r['peak_rss_bytes'])} | {_bytes(r['peak_gpu_bytes'])} | "
            f"{_ratio(r['floor_ratio'], '')} |"
        )
    reasons = sorted(
        {r["fallback_reason"] for r in rows if r["n_cells"] == n and r["fallback_reason"]}
    )
    if reasons:
        lines += ["", "Fallbacks: " + "; ".join(reasons) + "."]
    return lines


#: The issue's target: 10^6 cells end to end in <= 30 s and >= 100x scanpy on one GPU.
GOAL_CELLS, GOAL_S, GOAL_SPEEDUP = 1_000_000, 30.0, 100.0


def _goal_line(t: dict, rows: list[dict], n: int) -> str:
    speed = t["speedup_vs_scanpy"]
    top = _slowest(rows, n, "cupy", k=1)
    return (
        f"  - goal (≤ {GOAL_S:g} s, ≥ {GOAL_SPEEDUP:g}× scanpy): {_s(t['median_s'])} s = "
        f"{t['median_s'] / GOAL_S:.2g}× the time goal; speedup "
        + (
            f"{speed:.3g}× = {speed / GOAL_SPEEDUP:.2g}× the speedup goal"
            if speed
            else "unknown (scanpy not measured end to end)"
        )
        + (f"; held back most by {top}" if top else "")
    )


def _load(m: dict) -> str:
    start, end = m.get("load_average_start"), m.get("load_average_end")
    if not start or not end:
        return "unknown"
    return f"{start[0]:.1f} at start, {end[0]:.1f} at end"


def _budget(b: float | None) -> str:
    return "none" if b is None else f"{b:g} s"


def _slowest(rows, n, backend, k: int = 3) -> str:
    steps = [
        r
        for r in rows
        if r["n_cells"] == n
        and r["backend"] == backend
        and r["step"] != "total"
        and r["median_s"] is not None
    ]
    steps.sort(key=lambda r: -r["median_s"])
    return ", ".join(f"{r['step']} {_s(r['median_s'])} s" for r in steps[:k])


def _order(rows, n):
    """Pipeline order of steps (as first recorded), backends in report order, total last."""
    steps: list[str] = []
    backends: list[str] = []
    for r in rows:
        if r["n_cells"] == n:
            if r["step"] not in steps and r["step"] != "total":
                steps.append(r["step"])
            if r["backend"] not in backends:
                backends.append(r["backend"])
    steps.append("total")
    return lambda r: (steps.index(r["step"]), backends.index(r["backend"]))


# -- plot ----------------------------------------------------------------------------------


def plot(report: dict[str, Any], path: str | Path) -> None:
    """Log-log time vs cells: one panel per step (total first), one line per backend;
    min–max bars, x = ran over the budget, hollow = predicted over it (not run), dashed
    line = the budget (drawn where times come within 10x of it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Partial totals (steps skipped for the budget) are not comparable across sizes.
    rows = [
        r
        for r in report["rows"]
        if r["median_s"] is not None and r["median_s"] > 0 and r["status"] != "partial"
    ]
    steps: list[str] = ["total"]
    for r in report["rows"]:
        if r["step"] not in steps:
            steps.append(r["step"])
    # Steps that never take a millisecond (bookkeeping) would only plot timer noise.
    steps = [s for s in steps if any(r["median_s"] >= 1e-3 for r in rows if r["step"] == s)]
    budget = report["parameters"]["budget_s"]
    backends = report["parameters"]["backends"]
    ncols = 4
    nrows = max(1, math.ceil(len(steps) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3 * nrows), squeeze=False)
    for ax, step in zip(axes.flat, steps, strict=False):
        for backend in backends:
            _plot_backend(ax, report, rows, step, backend)
        top = max((r["max_s"] for r in rows if r["step"] == step), default=0)
        if budget is not None and step != "total" and top >= budget / 10:
            ax.axhline(budget, color="grey", linestyle="--", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(step, fontsize=9)
        ax.set_xlabel("cells", fontsize=8)
        ax.set_ylabel("seconds", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(steps) :]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper right")
    m = report["machine"]
    fig.suptitle(f"gpu_sc bench: {m['cpu_model']}, GPU: {m['gpu'] or 'none'}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.95, 0.97))
    fig.savefig(path, format="png", dpi=80)
    plt.close(fig)


def _plot_backend(ax, report: dict[str, Any], rows: list, step: str, backend: str) -> None:
    """Draw one backend's line on one step's panel.

    Min–max bars, x = ran over the budget, hollow = predicted over it (not run).
    """
    pts = sorted(
        (r["n_cells"], r["median_s"], r["min_s"], r["max_s"])
        for r in rows
        if r["step"] == step and r["backend"] == backend
    )
    if not pts:
        return
    x, y, lo, hi = map(list, zip(*pts, strict=True))
    yerr = [
        [a - b for a, b in zip(y, lo, strict=True)],
        [b - a for a, b in zip(y, hi, strict=True)],
    ]
    line = ax.errorbar(x, y, yerr=yerr, marker="o", capsize=2, label=backend)
    over = [
        (r["n_cells"], r["median_s"])
        for r in rows
        if r["step"] == step and r["backend"] == backend and r["status"] == "over_budget"
    ]
    if over:
        ax.scatter(
            *zip(*over, strict=True),
            marker="x",
            s=80,
            color=line.lines[0].get_color(),
            zorder=3,
        )
    pred = [
        (r["n_cells"], r["predicted_s"])
        for r in report["rows"]
        if r["step"] == step and r["backend"] == backend and r["predicted_s"]
    ]
    if pred:
        ax.scatter(
            *zip(*pred, strict=True),
            marker="o",
            facecolors="none",
            edgecolors=line.lines[0].get_color(),
            zorder=3,
        )
