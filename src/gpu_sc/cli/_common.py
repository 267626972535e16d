"""Helpers shared by sub-commands: progress lines and the per-step table."""

from __future__ import annotations

import os
import sys
import time

from ..backends import names

__all__ = ["backend_help", "print_progress", "provenance_table"]


def backend_help() -> str:
    """``--backend``'s help: ``auto`` and every registered backend (:mod:`gpu_sc.backends`)."""

    return f"auto | {' | '.join(names())} (default auto)"


def print_progress(step: str, seconds: float) -> None:
    # on a terminal, replace the running step's line (gpu_sc._progress.StepLine) with this one
    clear = "\r\x1b[K" if sys.stderr.isatty() else ""
    print(f"{clear}  {step:<30s} {seconds:8.2f} s", file=sys.stderr, flush=True)
    delay = os.environ.get("GPU_SC_TEST_STEP_DELAY")  # test hook: a signal lands mid-run
    if delay:
        time.sleep(float(delay))


def provenance_table(adata) -> str:
    """Markdown table of executed steps: step, backend, requested, seconds, fallback."""
    from ..dispatch.provenance import provenance

    rows = ["| step | backend | requested | seconds | fallback reason |", "|---|---|---|---:|---|"]
    total = 0.0
    for p in provenance(adata):
        total += p["seconds"]
        rows.append(
            f"| {p['step']} | {p['backend']} | {p['requested']} | {p['seconds']:.2f} | "
            f"{p['fallback_reason'] or ''} |"
        )
    rows.append(f"| **total** | | | {total:.2f} | |")
    return "\n".join(rows)
