"""The pipeline runner: the tutorial's steps in order, each through the dispatcher."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import cast

from .. import catalogue
from .._progress import step_line
from .._settings import settings
from ..backends import Backend, canonical_backend_name, resolve, resolve_precision
from ..dispatch.arrays import array_module, dask_info, is_dask, is_device_array
from ..dispatch.provenance import provenance, record_step, recording, store_pipeline_record
from ..dispatch.registry import (
    FallbackError,
    move_to_host,
    quiet_unusable_cuda,
    strict_mode,
)
from ..kernels.chunks import needs_chunking
from .config import PipelineConfig
from .plan import rank_genes_key
from .validate import prepare_counts, validate_counts

__all__ = ["Runner", "StepHook", "pipeline", "rank_genes_key"]

logger = logging.getLogger("gpu_sc")


def pipeline(
    adata,
    config: PipelineConfig | dict | str | None = None,
    *,
    backend: str | None = None,
    copy: bool = False,
    progress: Callable[[str, float], None] | None = None,
    strict: bool | None = None,
    atomic: bool = True,
    persist_hvg_matrix: bool = False,
    precision: str | None = None,
):
    """Run scanpy's PBMC3k workflow on ``adata`` (raw counts), step by step.

    Parameters
    ----------
    adata
        Raw UMI counts, cells x genes.
    config
        :class:`PipelineConfig`, a dict of sections, or a TOML path; ``None`` = the tutorial.
    backend
        ``None``: ``gpu_sc.settings.backend`` (``"auto"`` unless changed, e.g. by ``with
        gpu_sc.use_backend("numpy"):``); ``"auto"`` (cupy when CUDA is usable, else scanpy),
        ``"scanpy"``, ``"numpy"``, ``"cupy"`` or an alias. Steps the engine lacks run on
        scanpy, recorded as fallbacks; an explicit ``"cupy"`` without a usable GPU logs one
        warning and runs on scanpy.
    copy
        Return a new object, ``adata`` unchanged; else the result replaces its contents.
    progress
        Called as ``progress(step, seconds)`` after each step (the CLI prints a line).
    strict
        Turn every fallback to scanpy (unusable CUDA, a step or parameter the engine lacks, a
        GPU resource error) into a :class:`~gpu_sc.dispatch.FallbackError`. ``None``:
        ``gpu_sc.settings.strict`` (default ``GPU_SC_STRICT=1`` in the environment). ``"auto"``
        choosing scanpy without CUDA is the requested behaviour, not a fallback.
    atomic
        ``True``: the steps run on a copy, which replaces ``adata``'s contents only when every
        step has succeeded; on any error, ``KeyboardInterrupt`` included, ``adata`` is as it
        was and a retry starts from the same input. Costs one copy of the input (shrinking as
        cells and genes are filtered), as ``copy=True`` does. ``False``: the steps run on
        ``adata`` itself; a failure leaves it half-processed (for benchmarks, or data too
        large to hold twice).
    persist_hvg_matrix
        Dask input only: keep the (normalised, logged) matrix after the highly-variable-gene
        subset in the workers' memory (``dask.persist``), so that regress_out, scale and PCA
        start from it, not from the file. Costs that matrix's size, spread over the workers.
    precision
        ``"exact"``, ``"fast"`` or ``"auto"`` (``None``: ``gpu_sc.settings.precision``, whose
        default ``"auto"`` is ``"exact"`` on numpy and ``"fast"`` on cupy). Recorded per step
        in the provenance's ``engine`` column and in ``pipeline["precision"]``.

    Returns
    -------
    The processed AnnData (``adata`` itself unless ``copy``). ``uns["gpu_sc"]`` holds
    ``provenance`` (a DataFrame, one row per step; as dicts with
    :func:`gpu_sc.dispatch.provenance.provenance`), ``pipeline`` (requested and resolved
    backend, the backends that ran, config as JSON, shapes), ``versions`` and, on a GPU,
    ``device``; all of it writable by ``write_h5ad`` and ``write_zarr``.

    Notes
    -----
    Dask input (``adata.X`` a Dask array, e.g. from :func:`gpu_sc.datasets.read_lazy`): the
    filters to PCA and the marker genes run block-wise on the current scheduler (a
    ``distributed.Client``, else local threads), in CuPy blocks when the backend resolves to
    a usable ``cupy``; later steps use the in-memory PCA. ``X`` and ``.raw`` stay lazy
    (written block by block); the provenance records backend ``dask`` with the scheduler,
    worker count and block size. The values are checked in one pass before the first step.
    """
    cfg = PipelineConfig.coerce(config)
    record, chosen, usable = _resolve_run(adata, cfg, backend, precision, strict)
    work = adata.copy() if copy or atomic else adata
    prepare_counts(work)  # float16 -> float32 on the working object (logged)
    n_before = len(provenance(work))
    work = _run_steps(work, cfg, chosen, usable, record, progress, persist_hvg_matrix)
    _store_record(work, record, n_before)
    if copy:
        return work
    if work is not adata:
        adata._init_as_actual(work)  # commit: the caller's object takes the result's contents
    return adata


def _run_steps(work, cfg, chosen: Backend, usable: bool, record: dict, progress, persist_hvg):
    """Run the steps on ``work`` with one :class:`Runner`; returns the result, on the host.

    Adds ``device_resident`` and ``shapes`` to ``record``.
    """
    shapes: list[dict] = [{"step": "input", "n_obs": work.n_obs, "n_vars": work.n_vars}]
    # On cupy the working matrix stays on the device between engine steps; host at the end.
    output = "device" if chosen.device_resident else "host"
    resident = False
    if chosen.device_resident and usable:
        resident = upload_matrix(work, max_nnz=settings.max_device_nnz, am=chosen.array_module())
    # The settings are read here, once, and passed down to every step as arguments.
    line = step_line()  # which step runs, on a terminal (gpu_sc._progress)
    runner = Runner(
        work,
        cfg,
        backend=chosen,
        shapes=shapes,
        progress=progress,
        # StepLine has StepHook's methods (gpu_sc._progress does not import the pipeline)
        hooks=() if line is None else (cast(StepHook, line),),
        strict=record["strict"],
        output=output,
        chunk_rows=settings.chunk_rows,
        max_device_nnz=settings.max_device_nnz,
        persist_hvg_matrix=persist_hvg,
        precision=record["precision"],
    )
    try:
        with quiet_unusable_cuda():
            runner.run()
    finally:
        move_to_host(runner.adata)
    record.update(device_resident=resident, config=cfg.to_dict(), shapes=shapes)
    return runner.adata


def _resolve_run(adata, cfg: PipelineConfig, backend, precision, strict):
    """Resolve the run's backend, precision and strictness once; validate the counts.

    Returns ``(record, chosen, usable)``, ``record`` the pipeline record's first keys. An
    unusable backend raises :class:`FallbackError` under ``strict``, else logs one warning
    and extends the record's ``backend_reason``.
    """
    requested = canonical_backend_name(settings.backend if backend is None else backend)
    # resolved once for the run: every step gets this Backend
    chosen, why = resolve(backend if isinstance(backend, Backend) else requested)
    resolved = chosen.name
    precision = resolve_precision(precision, chosen)
    strict = strict_mode() if strict is None else bool(strict)
    norm_off = not cfg.normalize_total.enabled and not cfg.log1p.enabled
    qc_steps = [n for n in ("filter_cells", "filter_genes", "qc") if getattr(cfg, n).enabled]
    validate_counts(
        adata, require_integers=not norm_off, qc_on=", ".join(qc_steps) if norm_off else None
    )
    usable, reason = chosen.available()
    if not usable:
        reason = f"{resolved} backend unusable: {reason}"
        if strict:
            raise FallbackError(f"pipeline: strict mode forbids running on scanpy: {reason}")
        logger.warning("gpu_sc: %s; every step runs on scanpy (recorded per step)", reason)
        why = f"{why}, but {reason}"
    logger.info("gpu_sc pipeline: backend %s (%s)", resolved, why)
    record = {
        "requested_backend": requested,
        "resolved_backend": resolved,
        "backend_reason": why,
        "strict": strict,
        "precision": precision,
    }
    return record, chosen, usable


def _store_record(work, record: dict, n_before: int) -> None:
    """Store ``uns["gpu_sc"]["pipeline"]``: ``record`` plus the backends the new steps ran on."""
    ran = [p["backend"] for p in provenance(work)[n_before:] if p["backend"] != "anndata"]
    used = {b: ran.count(b) for b in dict.fromkeys(ran)}
    lazy = {}
    if is_dask(work.X):
        lazy = {"dask": dask_info(work.X)}
    store_pipeline_record(
        work,
        {
            "requested_backend": record["requested_backend"],
            "resolved_backend": record["resolved_backend"],
            "backend": ", ".join(used) or record["resolved_backend"],
            "backend_reason": record["backend_reason"],
            "steps_by_backend": used,
            "strict": record["strict"],
            "precision": record["precision"],
            "device_resident": record["device_resident"],
            "config": record["config"],
            "shapes": record["shapes"],
            **lazy,
        },
    )


def upload_matrix(adata, *, max_nnz: int, am=None) -> bool:
    """Move ``adata.X`` to the device once, before the first step; returns whether it did.

    The filters, QC, normalisation and everything to PCA then work on that one copy (without
    it, every step that reads the host matrix uploads it again: the filters and QC only read
    it and write back host-side subsets).

    Not moved: a Dask matrix (blocks stream), a matrix the engine would stream in row chunks
    (:func:`gpu_sc.kernels.chunks.needs_chunking`: too many nonzeros or too big for the free
    device memory), and integer matrices (cupyx sparse holds floats only: counts on the device
    would be float64, and the steps derive their outputs' dtypes from the host matrix's). A
    step that falls back to scanpy moves it back to host (:func:`gpu_sc.dispatch.run_step`);
    anndata keeps ``.raw`` on host (``Raw`` moves a device matrix to host when frozen).
    """
    import numpy as np
    import scipy.sparse as sp

    x = adata.X
    if x is None or is_dask(x) or is_device_array(x):
        return False
    if not (isinstance(x, np.ndarray) or (sp.issparse(x) and x.format in ("csr", "csc"))):
        return False
    if not np.issubdtype(x.dtype, np.floating):
        return False
    am = array_module("cupy") if am is None else am  # the device backend's array module
    if needs_chunking(am, x, max_nnz=max_nnz):
        return False
    adata.X = am.asarray(x)
    return True


class StepHook:
    """Hooks a :class:`Runner` calls around every step; override what you need.

    ``before_step`` gets the step's label, the public function and its arguments before it
    runs (parity runs the same call on another backend there); ``after_step`` gets what it
    returned (parity copies the step's outputs out there).
    """

    def before_step(
        self, runner: Runner, label: str, func: Callable, args: tuple, kwargs: dict
    ) -> None:
        """Call before step ``label`` runs ``func(adata, *args, **kwargs)``."""

    def after_step(self, runner: Runner, label: str, out) -> None:
        """Call after step ``label`` returned ``out``."""


class Runner:
    """Run the pipeline: the catalogue's steps in order.

    Each step of :data:`gpu_sc.catalogue.PIPELINE` whose config section is enabled runs through
    its ``run`` function.

    Every step is recorded: dispatched steps by the dispatcher, the pipeline's own steps
    (subsetting, ``.raw``, layout) here with backend ``anndata``. ``backend`` is passed to
    every public step as its ``backend=`` argument (None: each step's default, the setting).
    ``strict``, ``output``, ``chunk_rows``, ``max_device_nnz`` and ``precision`` (see
    :func:`gpu_sc.dispatch.run_step`; None: the settings) go to every public step as
    arguments too. ``hooks`` (:class:`StepHook`) are called before
    and after each step, in order; they see the step's own arguments, without these options.
    """

    def __init__(
        self,
        adata,
        cfg: PipelineConfig,
        *,
        backend: str | Backend | None = None,
        shapes: list[dict] | None = None,
        progress: Callable[[str, float], None] | None = None,
        hooks: tuple[StepHook, ...] | list[StepHook] = (),
        strict: bool | None = None,
        output: str | None = None,
        chunk_rows: int | None = None,
        max_device_nnz: int | None = None,
        persist_hvg_matrix: bool = False,
        precision: str | None = None,
    ):
        self.adata = adata
        self.precision = precision
        self.cfg = cfg
        self.backend = backend
        self.strict = strict
        self.output = output
        self.chunk_rows = chunk_rows
        self.max_device_nnz = max_device_nnz
        self.persist_hvg_matrix = persist_hvg_matrix
        self.shapes = [] if shapes is None else shapes
        self.progress = progress
        self.hooks = tuple(hooks)

    def run(self) -> None:
        """Every enabled step of the pipeline, in the catalogue's order.

        Each step is recorded, with its timing, in ``adata.uns["gpu_sc"]``
        (:func:`~gpu_sc.provenance.recording`).
        """
        with recording():
            for name in catalogue.PIPELINE:
                entry = catalogue.get(name)
                assert entry is not None  # PIPELINE names catalogued steps
                if entry.section is not None and not getattr(self.cfg, entry.section).enabled:
                    continue
                catalogue.resolve(entry.run)(self, self.cfg, entry)

    def step(self, name: str, func: Callable, *args, **kwargs):
        """Run one step ``func(adata, *args, **kwargs)`` labelled ``name``, with the hooks."""
        for hook in self.hooks:
            hook.before_step(self, name, func, args, kwargs)
        n_before = len(self.adata.uns.get("gpu_sc", {}).get("provenance", []))
        t0 = time.perf_counter()
        entry = catalogue.get(name)
        if entry is not None and entry.public and hasattr(func, "call"):
            out = func.call(
                self.adata,
                *args,
                backend=self.backend,
                strict=self.strict,
                output=self.output,
                chunk_rows=self.chunk_rows,
                max_device_nnz=self.max_device_nnz,
                precision=self.precision,
                **kwargs,
            )
        else:
            out = func(self.adata, *args, **kwargs)
        seconds = time.perf_counter() - t0
        if len(self.adata.uns.get("gpu_sc", {}).get("provenance", [])) == n_before:
            # Not a dispatched step (subsetting, .raw): record it all the same, with the note
            # the step returned (if any) on what it did.
            record_step(
                self.adata,
                step=name,
                backend="anndata",
                requested="anndata",
                fallback_reason=None,
                params=kwargs,
                seconds=seconds,
                note=out if isinstance(out, str) else "",
            )
        self.shapes.append({"step": name, "n_obs": self.adata.n_obs, "n_vars": self.adata.n_vars})
        if self.progress is not None:
            self.progress(name, seconds)
        for hook in self.hooks:
            hook.after_step(self, name, out)
        return out
