"""``compare()``: run the pipeline on two backends and measure their agreement stage by stage.

How one run goes (backends ``(A, B)``, A the reference):

1. The pipeline (:class:`gpu_sc.pipeline.Runner`) runs on A with a recording hook. Before each stage that has an engine implementation on A or B, the runner
   copies AnnData and runs that one stage on B on the copy (**isolated**: B's stage fed with A's
   output of the previous stage), and, for the stages with random or order-sensitive results,
   runs it on B a second time (**rerun**: determinism). After each step it copies the step's
   outputs out (later steps overwrite ``X``).
2. The pipeline runs on B, also recorded (**end to end**), unless no step of the pipeline has
   an engine implementation on either backend (both sides would be scanpy).
3. Each stage's outputs are compared (:mod:`gpu_sc.parity.stages`); rows get thresholds from
   :mod:`gpu_sc.parity.thresholds`.

Which backend really ran a step is read from the provenance the dispatcher records
(``adata.uns["gpu_sc"]["provenance"]``), never assumed: a stage whose engine fell back to
scanpy is listed as "not implemented on B: ran scanpy", with the reason, and cannot fail.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from dataclasses import dataclass
from typing import Any

from .. import catalogue
from .._settings import settings
from ..backends import canonical_backend_name, delegates, find, get, resolve, resolve_precision
from ..dispatch.provenance import environment, provenance, recording
from ..dispatch.registry import engine_impl, move_to_host
from ..pipeline.config import PipelineConfig
from ..pipeline.run import Runner, StepHook
from ..pipeline.validate import validate_counts
from .report import ParityReport, Row
from .stages import Context, Stage, identical, registry_name, stage_for
from .thresholds import threshold_for

__all__ = ["compare", "default_backends"]


def default_backends() -> tuple[str, str]:
    """``("scanpy", "cupy")`` where CUDA is usable, else ``("scanpy", "numpy")``: the
    reference, and what ``"auto"`` resolves to when that is an engine backend."""
    auto, _ = resolve("auto")
    return ("scanpy", "numpy" if auto.delegates else auto.name)


def compare(
    adata,
    backends: tuple[str, str] | list[str] | None = None,
    config: PipelineConfig | dict | str | None = None,
    *,
    seed: int = 0,
    name: str = "adata",
    determinism: bool = True,
    precision: str | None = None,
) -> ParityReport:
    """Stage-by-stage agreement of backend ``B`` with reference backend ``A``.

    Parameters
    ----------
    adata
        Raw counts (not modified: each side works on a copy).
    backends
        ``(A, B)``; None = :func:`default_backends`.
    config
        Pipeline configuration (:class:`~gpu_sc.pipeline.PipelineConfig`, dict or TOML path);
        None = scanpy's PBMC3k tutorial.
    seed
        Replaces the ``random_state`` of every config section that has one (PCA, neighbors,
        Leiden, UMAP, t-SNE, ...), and seeds the trustworthiness subsample.
    name
        Data set name for the report.
    determinism
        Rerun B's engine stages with random or order-sensitive results (PCA, neighbors,
        Leiden, UMAP, t-SNE) on the same input and check bitwise equality.
    precision
        ``"exact"``, ``"fast"`` or ``"auto"`` for the engine's steps (``None``:
        ``gpu_sc.settings.precision``); resolved for backend B and stated in the report.

    Returns
    -------
    :class:`~gpu_sc.parity.ParityReport`; ``report.passed`` is False when an implemented
    metric misses its threshold.
    """
    a_name, b_name = _backend_pair(backends)
    with settings.override(precision=settings.precision if precision is None else precision):
        resolved = resolve_precision(None, b_name)
        report = _compare(adata, a_name, b_name, config, seed, name, determinism, resolved)
    report.precision = resolved
    return report


def _compare(
    adata, a_name, b_name, config, seed, name, determinism, precision="exact"
) -> ParityReport:
    cfg = _seeded(PipelineConfig.coerce(config), seed)
    validate_counts(adata)
    n_obs, n_vars = adata.n_obs, adata.n_vars

    isolated = _Isolated(b_name, (a_name, b_name), determinism, cfg)
    side_a = _run_recorded(adata.copy(), cfg, a_name, before_step=isolated)
    steps = list(side_a.ran)
    side_b = None
    if any(_has_engine(s, (a_name, b_name)) for s in steps):
        side_b = _run_recorded(adata.copy(), cfg, b_name)

    ctx_args = dict(
        backends=(a_name, b_name), seed=seed, resolution=cfg.leiden.resolution, precision=precision
    )
    rows: list[Row] = []
    upstream_engine: list[str] = []  # engine steps (on either side) so far, end to end
    for step in steps:
        if side_b is not None and (
            _is_engine(side_a.ran[step]) or _is_engine(side_b.ran.get(step))
        ):
            upstream_engine.append(step)
        stage = stage_for(step, cfg)
        if stage is None:
            continue
        rows += _isolated_rows(stage, side_a, isolated, Context(mode="isolated", **ctx_args))
        rows += _e2e_rows(stage, side_a, side_b, upstream_engine, Context(mode="e2e", **ctx_args))
        rows += _repeat_rows(stage, isolated)

    env = environment(b_name)
    return ParityReport(
        dataset=name,
        backends=(a_name, b_name),
        n_obs=n_obs,
        n_vars=n_vars,
        seed=seed,
        machine=_machine(b_name),
        versions=_versions(env["versions"]),
        rows=rows,
        steps={a_name: side_a.step_log, b_name: side_b.step_log if side_b else []},
        config=cfg.to_dict(),
        generated=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


# -- running the pipeline, recorded ------------------------------------------------------------
@dataclass
class _Ran:
    """Which backend executed one step, and why not the requested one."""

    backend: str
    fallback_reason: str | None = None


class _Recorder(StepHook):
    """The runner's hook that records: a callback before each stage, the backend each step
    ran on (from provenance), and the stage outputs extracted right after each step."""

    def __init__(self, cfg, before_step=None):
        self.cfg = cfg
        self.before = before_step
        self.ran: dict[str, _Ran] = {}
        self.outputs: dict[str, dict[str, Any]] = {}
        self._n_before = 0

    def before_step(self, runner, name, func, args, kwargs):
        stage = stage_for(name, self.cfg)
        if stage is not None:
            _c_order(runner.adata)
            if self.before is not None:
                self.before(stage, func, args, kwargs, runner.adata)
        self._n_before = len(provenance(runner.adata))

    def after_step(self, runner, name, out):
        self.ran[name] = _ran_since(runner.adata, self._n_before)
        stage = stage_for(name, self.cfg)
        if stage is not None:
            self.outputs[name] = _extract(stage, runner.adata, self.ran[name])

    @property
    def step_log(self) -> list[dict[str, Any]]:
        return [
            {"step": s, "backend": r.backend, "fallback_reason": r.fallback_reason}
            for s, r in self.ran.items()
        ]


def _extract(stage: Stage, adata, ran: _Ran) -> dict[str, Any]:
    """The stage's outputs, tagged with the backend that produced them; an output missing
    where scanpy puts it is recorded (and fails the comparison) instead of raising."""
    try:
        return {**stage.extract(adata), "ran": ran.backend}
    except KeyError as exc:
        return {
            "missing": f"{exc} not in AnnData after {stage.step} on {ran.backend}",
            "ran": ran.backend,
        }


def _c_order(adata) -> None:
    """Make AnnData's dense arrays C-contiguous, as :meth:`AnnData.copy` does.

    Results must not depend on memory order, but some do: scanpy's PCA (arpack) leaves
    ``X_pca`` in Fortran order, and scikit-learn's t-SNE of the same values in C order gives
    another embedding. The isolated runs work on copies (C order), so every recorded run puts
    its arrays in C order before each stage: a copy then computes what the original would.
    """
    import numpy as np

    if isinstance(adata.X, np.ndarray) and not adata.X.flags["C_CONTIGUOUS"]:
        adata.X = np.ascontiguousarray(adata.X)
    for mapping in (adata.obsm, adata.varm, adata.layers):
        for key in list(mapping.keys()):
            value = mapping[key]
            if isinstance(value, np.ndarray) and not value.flags["C_CONTIGUOUS"]:
                mapping[key] = np.ascontiguousarray(value)


def _ran_since(adata, n_before: int) -> _Ran:
    new = provenance(adata)[n_before:]
    if not new:
        return _Ran("anndata")
    last = new[-1]
    return _Ran(last["backend"], last.get("fallback_reason"))


def _run_recorded(adata, cfg: PipelineConfig, backend: str, before_step=None) -> _Recorder:
    """Run the pipeline's steps on ``backend`` with results on the host after every step (the
    device-resident mode of :func:`gpu_sc.pipeline` moves the same values, only later)."""
    recorder = _Recorder(cfg, before_step)
    runner = Runner(adata, cfg, backend=backend, hooks=[recorder])
    try:
        with settings.override(output="host"):
            runner.run()
    finally:
        move_to_host(runner.adata)
    return recorder


class _Isolated:
    """The hook that runs one stage on backend B on a copy of A's input to that stage."""

    def __init__(self, backend: str, pair: tuple[str, str], determinism: bool, cfg):
        self.backend = backend
        self.pair = pair
        self.determinism = determinism
        self.cfg = cfg
        self.outputs: dict[str, dict[str, Any]] = {}
        self.repeats: dict[str, dict[str, Any]] = {}
        self.ran: dict[str, _Ran] = {}

    def __call__(self, stage: Stage, func, args, kwargs, adata_a) -> None:
        if not _has_engine(stage.step, self.pair):
            return  # both sides would run scanpy on the same input
        self.ran[stage.step], self.outputs[stage.step] = self._run(
            stage, func, args, kwargs, adata_a
        )
        if (
            self.determinism
            and stage.repeat_keys
            and engine_impl(registry_name(stage.step), self.backend) is not None
            and _is_engine(self.ran[stage.step])
        ):
            _, self.repeats[stage.step] = self._run(stage, func, args, kwargs, adata_a)

    def _run(self, stage, func, args, kwargs, adata_a):
        adata = adata_a.copy()
        n_before = len(provenance(adata))
        try:
            with settings.override(output="host"), recording():
                func(adata, *args, backend=self.backend, **kwargs)
        finally:
            move_to_host(adata)
        ran = _ran_since(adata, n_before)
        return ran, _extract(stage, adata, ran)


def _has_engine(step: str, pair: tuple[str, str]) -> bool:
    name = registry_name(step)
    return any(not delegates(b) and engine_impl(name, b) is not None for b in pair)


def _engine_name(name: str) -> bool:
    backend = find(name)
    return backend is not None and not backend.delegates


def _is_engine(ran: _Ran | None) -> bool:
    # an engine backend ran it (not scanpy, nor the Dask path or anndata bookkeeping)
    return ran is not None and _engine_name(ran.backend)


# -- rows ------------------------------------------------------------------------------------------
def _not_implemented(stage: str, mode: str, backend: str, why: str | None) -> Row:
    note = f"not implemented on {backend}: ran scanpy"
    return Row(
        stage, "engine", mode, None, note=f"{note} ({why})" if why else note, implemented=False
    )


def _rows(stage: Stage, a, b, ctx: Context, note: str = "") -> list[Row]:
    missing = [ext["missing"] for ext in (a, b) if "missing" in ext]
    if missing:
        t = threshold_for("outputs_present", ctx.mode)
        return [
            Row(
                stage.step,
                "outputs_present",
                ctx.mode,
                0.0,
                t.describe(),
                False,
                "; ".join(missing),
            )
        ]
    out = []
    for m in stage.compare(a, b, ctx):
        t = threshold_for(m.metric, ctx.mode, ctx.precision) if m.gate else None
        passed = None if t is None else t.check(m.value)
        text = "; ".join(filter(None, [m.note, note]))
        out.append(
            Row(
                stage.step,
                m.metric,
                ctx.mode,
                _plain(m.value),
                t.describe() if t else None,
                passed,
                text,
            )
        )
    return out


def _isolated_rows(stage: Stage, side_a, isolated: _Isolated, ctx: Context) -> list[Row]:
    a_name, b_name = ctx.backends
    if stage.step not in isolated.outputs:
        why = f"no {b_name} engine implementation of {registry_name(stage.step)!r}"
        return [_not_implemented(stage.step, ctx.mode, b_name, why)]
    ran_b = isolated.ran[stage.step]
    if not (_is_engine(ran_b) or _is_engine(side_a.ran[stage.step])):
        return [_not_implemented(stage.step, ctx.mode, b_name, ran_b.fallback_reason)]
    return _rows(stage, side_a.outputs[stage.step], isolated.outputs[stage.step], ctx)


def _e2e_rows(stage: Stage, side_a, side_b, upstream: list[str], ctx: Context) -> list[Row]:
    a_name, b_name = ctx.backends
    if side_b is None:
        why = f"no step of the pipeline has a {b_name} engine implementation"
        return [_not_implemented(stage.step, ctx.mode, b_name, why)]
    if not upstream:
        own = side_b.ran[stage.step].fallback_reason
        why = "; ".join(filter(None, [own, "no engine step ran before it either"]))
        return [_not_implemented(stage.step, ctx.mode, b_name, why)]
    note = ""
    if stage.step not in upstream:
        shown = ("... " if len(upstream) > 3 else "") + ", ".join(upstream[-3:])
        note = (
            f"this step ran scanpy on both; differences come from engine steps before it ({shown})"
        )
    return _rows(stage, side_a.outputs[stage.step], side_b.outputs[stage.step], ctx, note)


def _repeat_rows(stage: Stage, isolated: _Isolated) -> list[Row]:
    if stage.step not in isolated.repeats:
        return []
    first, second = isolated.outputs[stage.step], isolated.repeats[stage.step]
    if "missing" in first or "missing" in second:
        return []  # already reported by the isolated comparison
    same, note = identical(first, second, stage.repeat_keys)
    t = threshold_for("identical_rerun", "repeat")
    value = 1.0 if same else 0.0
    return [
        Row(
            stage.step,
            "identical_rerun",
            "repeat",
            value,
            t.describe(),
            t.check(value),
            note or f"{isolated.backend} twice, same input and seed",
        )
    ]


# -- helpers ---------------------------------------------------------------------------------------
def _backend_pair(backends) -> tuple[str, str]:
    if backends is None:
        return default_backends()
    if isinstance(backends, str):
        backends = [b for b in backends.split(",") if b.strip()]
    pair = tuple(canonical_backend_name(b, allow_auto=False) for b in backends)
    if len(pair) != 2:
        raise ValueError(f"backends must name two backends (reference, other), got {backends!r}")
    return pair


def _seeded(cfg: PipelineConfig, seed: int) -> PipelineConfig:
    """Every config section with a ``random_state`` gets ``seed``."""
    for sec in catalogue.sections():
        section = getattr(cfg, sec.name)
        if hasattr(section, "random_state"):
            section.random_state = seed
    return cfg


def _plain(x):
    if x is None:
        return None
    return float(x)


def _machine(backend: str) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu
            )
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} CPUs"
    used = get(backend)
    if used.is_gpu and used.available()[0]:
        text += f", GPU {used.device_name()}"
    return text


def _versions(base: dict[str, str]) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = dict(base)
    for dist in ("scipy", "scikit-learn", "umap-learn", "leidenalg", "igraph"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out
