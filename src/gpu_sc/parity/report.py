"""The result of a parity run: one row per (stage, metric, mode), as JSON and Markdown."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["ParityReport", "Row"]

MODES = ("isolated", "e2e", "repeat")
_MODE_TITLES = {"isolated": "isolated", "e2e": "end to end", "repeat": "rerun"}


@dataclass
class Row:
    """One measured (or unmeasurable) metric of one stage in one mode.

    Attributes
    ----------
    stage
        Pipeline step, e.g. ``"pca"`` or ``"rank_genes_groups[wilcoxon]"``.
    metric
        Metric name (a key of :data:`gpu_sc.parity.thresholds.THRESHOLDS` when gated);
        ``"engine"`` for the row that lists a stage without an engine implementation.
    mode
        ``"isolated"``, ``"e2e"`` or ``"repeat"`` (determinism).
    value
        The measured value; None when not measured.
    threshold
        The bar as text (``">= 0.95"``), or None when the metric is informational here.
    passed
        True/False when gated and implemented; None otherwise.
    note
        Context: which backend ran, why a bar does not apply, the worst column, ...
    implemented
        Whether an engine implementation took part (see :func:`gpu_sc.parity.compare`);
        rows with ``implemented=False`` never fail a run.
    """

    stage: str
    metric: str
    mode: str
    value: float | None
    threshold: str | None = None
    passed: bool | None = None
    note: str = ""
    implemented: bool = True


@dataclass
class ParityReport:
    """Stage-by-stage agreement of backend B with reference backend A on one data set."""

    dataset: str
    backends: tuple[str, str]
    n_obs: int
    n_vars: int
    seed: int
    machine: str
    versions: dict[str, str]
    rows: list[Row] = field(default_factory=list)
    steps: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    generated: str = ""
    #: the precision backend B's engine steps ran at (``"exact"`` or ``"fast"``)
    precision: str = "exact"

    # -- verdict --------------------------------------------------------------------------------
    @property
    def failures(self) -> list[Row]:
        """Gated rows of implemented stages that miss their threshold."""
        return [r for r in self.rows if r.implemented and r.passed is False]

    @property
    def passed(self) -> bool:
        """True when no implemented metric misses its threshold."""
        return not self.failures

    @property
    def not_implemented(self) -> list[Row]:
        """The rows that list a stage without an engine implementation."""
        return [r for r in self.rows if r.metric == "engine" and not r.implemented]

    def get(self, stage: str, metric: str, mode: str) -> Row | None:
        """The row of ``(stage, metric, mode)``, or None."""
        for r in self.rows:
            if (r.stage, r.metric, r.mode) == (stage, metric, mode):
                return r
        return None

    def _stage_order(self, stage: str) -> int:
        return next(i for i, r in enumerate(self.rows) if r.stage == stage)

    # -- serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["backends"] = list(self.backends)
        d["passed"] = self.passed
        d["rows"] = [{**asdict(r), "value": _json_number(r.value)} for r in self.rows]
        return d

    def to_json(self, indent: int | None = 2) -> str:
        """The report as JSON (NaN and infinities written as null / strings)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False) + "\n"

    def header(self) -> str:
        a, b = self.backends
        versions = ", ".join(f"{k} {v}" for k, v in self.versions.items())
        return (
            f"**{self.dataset}** ({self.n_obs} cells x {self.n_vars} genes, seed {self.seed}): "
            f"{b} vs reference {a} on {self.machine}, precision {self.precision}; {versions}"
        )

    def to_markdown(self) -> str:
        """A header line (data set, backends, machine, versions) and one table row per
        (stage, metric): isolated, end-to-end and rerun values side by side."""
        lines = [
            self.header(),
            "",
            "| stage | metric | isolated | end to end | rerun | threshold | result |",
            "|---|---|---:|---:|---:|---|---|",
        ]
        keys: list[tuple[str, str]] = []
        by_key: dict[tuple[str, str], dict[str, Row]] = {}
        for r in self.rows:
            key = (r.stage, r.metric)
            if key not in by_key:
                keys.append(key)
                by_key[key] = {}
            by_key[key][r.mode] = r
        for stage, metric in keys:
            cells = by_key[(stage, metric)]
            values = [_cell(cells.get(m)) for m in MODES]
            thresholds = _thresholds(list(cells.values()))
            lines.append(
                f"| {stage} | {metric} | {' | '.join(values)} | {thresholds} | "
                f"{_verdict(list(cells.values()))} |"
            )
        verdict = "PASS" if self.passed else f"FAIL ({len(self.failures)} metric(s) below bar)"
        lines += ["", f"Result: **{verdict}** (only stages with an engine implementation count)."]
        missing = sorted({r.stage for r in self.not_implemented}, key=self._stage_order)
        if missing:
            lines += [
                "",
                f"Not implemented on {self.backends[1]} (ran scanpy, so not compared "
                f"in that mode): {', '.join(missing)}.",
            ]
        notes = _notes(self.rows)
        if notes:
            lines += ["", "Notes:", *notes]
        return "\n".join(lines) + "\n"


def _json_number(x):
    if x is None:
        return None
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def _cell(r: Row | None) -> str:
    if r is None:
        return ""
    if r.metric == "engine":
        return "ran scanpy"
    if r.value is None:
        return "n/a"
    v = r.value
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) < 1e6):
        text = str(int(v))
    elif v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e4):
        text = f"{v:.2e}"
    else:
        text = f"{v:.6g}"  # 6 digits: 0.99989 must not print as a passing-looking 0.9999
    return text + (" ✗" if r.passed is False else "")


def _thresholds(rows: list[Row]) -> str:
    """The bars of one (stage, metric), with the modes they bind in when not all of them."""
    out = []
    for bar in dict.fromkeys(r.threshold for r in rows if r.threshold):
        modes = [r.mode for r in rows if r.threshold == bar]
        measured = [r.mode for r in rows if r.value is not None]
        suffix = "" if modes == measured else " (" + ", ".join(_MODE_TITLES[m] for m in modes) + ")"
        out.append(bar + suffix)
    return ", ".join(out)


def _verdict(rows: list[Row]) -> str:
    if any(r.metric == "engine" for r in rows):
        return "not implemented"
    gated = [r for r in rows if r.passed is not None]
    if not gated:
        return "info"
    if any(r.passed is False and r.implemented for r in gated):
        failed = [_MODE_TITLES[r.mode] for r in gated if r.passed is False]
        return "**FAIL** (" + ", ".join(failed) + ")"
    return "pass"


def _notes(rows: list[Row]) -> list[str]:
    seen, out = set(), []
    for r in rows:
        if r.metric == "engine" and ("engine implementation" in r.note):
            continue  # no implementation registered: the "Not implemented" line says it
        if r.note and (r.stage, r.note) not in seen:
            seen.add((r.stage, r.note))
            out.append(f"- {r.stage} ({_MODE_TITLES[r.mode]}): {r.note}")
    return out
