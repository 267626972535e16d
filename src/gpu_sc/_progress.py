"""Progress for the engine's long loops (kNN row tiles, UMAP epochs, t-SNE iterations,
wilcoxon gene blocks: tqdm bars) and for the pipeline's steps (:class:`StepLine`: one line
naming the step that runs, for the steps that run on scanpy too). Both show on a terminal
only, and never when the environment sets ``GPU_SC_PROGRESS=0``; ``GPU_SC_PROGRESS=1``
shows them on any stream (a log file, a notebook's stderr)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable

__all__ = ["StepLine", "progress", "step_line"]


def _setting() -> str:
    return os.environ.get("GPU_SC_PROGRESS", "").strip()


def progress(iterable: Iterable, *, desc: str, total: int | None = None, unit: str = "it"):
    """Wrap ``iterable`` in a tqdm bar labelled ``desc``.

    The bar shows only on a terminal (tqdm's ``disable=None``) and never when the environment
    sets ``GPU_SC_PROGRESS=0``; it is cleared when the loop ends.
    """
    if _setting() == "0":
        return iterable
    from tqdm.auto import tqdm

    return tqdm(
        iterable,
        desc=f"gpu_sc {desc}",
        total=total,
        unit=unit,
        disable=False if _setting() == "1" else None,
        leave=False,
        mininterval=0.5,
    )


class StepLine:
    """A pipeline runner hook (:class:`gpu_sc.pipeline.run.StepHook`'s methods): while a step
    runs, one line on ``stream`` says which (``gpu_sc: step 14: tsne ...``), so a step that
    runs for a minute on scanpy (t-SNE) is not a minute of silence. On a terminal the line is
    rewritten in place and cleared when the step ends (what follows it, e.g. ``gpu-sc run``'s
    per-step timing, takes its place); elsewhere (``GPU_SC_PROGRESS=1``) each start is a line.
    """

    def __init__(self, stream=None, *, tty: bool | None = None):
        self.stream = sys.stderr if stream is None else stream
        self.tty = _isatty(self.stream) if tty is None else tty
        self.n = 0
        self._t0 = 0.0

    def before_step(self, runner, label, func, args, kwargs) -> None:
        self.n += 1
        self._t0 = time.perf_counter()
        text = f"gpu_sc: step {self.n}: {label} ..."
        if self.tty:
            self.stream.write(f"\r\x1b[K{text}")
        else:
            self.stream.write(f"{text}\n")
        self.stream.flush()

    def after_step(self, runner, label, out) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def step_line() -> StepLine | None:
    """The pipeline's step line: on stderr when it is a terminal (or ``GPU_SC_PROGRESS=1``),
    None when ``GPU_SC_PROGRESS=0`` or stderr is not a terminal."""
    setting = _setting()
    if setting == "0":
        return None
    if setting != "1" and not _isatty(sys.stderr):
        return None
    return StepLine()
