"""The pipeline runner: the tutorial's steps in order, each through the dispatcher."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from .. import pp, tl
from .._settings import settings
from ..dispatch.backends import canonical_backend_name, cuda_status, resolve_backend
from ..dispatch.provenance import provenance, record_step, store_pipeline_record
from ..dispatch.registry import (
    FallbackError,
    _move_to_host,
    _quiet_unusable_cuda,
    strict_mode,
)
from .config import PipelineConfig
from .validate import InputError, prepare_counts, validate_counts

__all__ = ["pipeline", "rank_genes_key"]

logger = logging.getLogger("gpu_sc")


def rank_genes_key(method: str) -> str:
    """Where the pipeline stores ``rank_genes_groups`` of ``method`` in ``adata.uns``."""
    return "rank_genes_groups_" + method.replace("-", "_")


def pipeline(
    adata,
    config: PipelineConfig | dict | str | None = None,
    *,
    backend: str = "auto",
    copy: bool = False,
    progress: Callable[[str, float], None] | None = None,
    strict: bool | None = None,
    atomic: bool = True,
):
    """Run scanpy's PBMC3k workflow on ``adata`` (raw counts), step by step.

    Parameters
    ----------
    adata
        Raw UMI counts, cells x genes.
    config
        :class:`PipelineConfig`, a dict of sections, or a TOML path; ``None`` = the tutorial.
    backend
        ``"auto"`` (cupy when CUDA is usable, else scanpy), ``"scanpy"``, ``"numpy"``,
        ``"cupy"`` or an alias. Steps the engine lacks run on scanpy, recorded as fallbacks.
        An explicit ``"cupy"`` without a usable GPU logs one warning and runs on scanpy.
    copy
        Return the result as a new object and leave ``adata`` unchanged; otherwise the
        result replaces the contents of ``adata`` (in place, like scanpy).
    progress
        Called as ``progress(step, seconds)`` after each step (the CLI prints a line).
    strict
        Turn every fallback to scanpy (unusable CUDA, a step or parameter the engine lacks,
        a GPU resource error) into a :class:`~gpu_sc.dispatch.FallbackError`, for jobs that
        must know the engine ran. ``None``: ``gpu_sc.settings.strict``, whose default is
        ``GPU_SC_STRICT=1`` in the environment. ``"auto"`` choosing scanpy on a machine
        without CUDA is the requested behaviour, not a fallback.
    atomic
        ``True`` (default): a failure leaves ``adata`` unchanged (see Notes). ``False``: the
        steps run on ``adata`` itself, without the extra copy, and a failure leaves it
        half-processed (for benchmarks, or data too large to hold twice).

    Returns
    -------
    The processed AnnData (``adata`` itself unless ``copy``). ``adata.uns["gpu_sc"]`` holds
    ``provenance`` (a DataFrame, one row per executed step; read it as dicts with
    :func:`gpu_sc.dispatch.provenance.provenance`), ``pipeline`` (requested and resolved
    backend, the backends that ran, config as JSON, shapes), ``versions`` and, on a GPU,
    ``device``; all of it writable by ``adata.write_h5ad`` and ``adata.write_zarr``.

    Notes
    -----
    With ``atomic=True`` the steps run on a copy of ``adata``, which replaces the caller's
    contents only when every step has succeeded: on any error, including
    ``KeyboardInterrupt``, ``adata`` is exactly as it was and a retry starts from the same
    input. This costs one extra copy of the input in memory while the pipeline runs (the
    copy shrinks as cells and genes are filtered); ``copy=True`` costs the same.
    """
    cfg = PipelineConfig.coerce(config)
    requested = canonical_backend_name(backend)
    resolved, why = resolve_backend(requested)
    strict = strict_mode() if strict is None else bool(strict)
    norm_off = not cfg.normalize_total.enabled and not cfg.log1p.enabled
    validate_counts(adata, require_integers=not norm_off)
    if resolved == "cupy" and not cuda_status().available:
        reason = f"cupy backend unusable: {cuda_status().reason}"
        if strict:
            raise FallbackError(f"pipeline: strict mode forbids running on scanpy: {reason}")
        logger.warning("gpu_sc: %s; every step runs on scanpy (recorded per step)", reason)
        why = f"{why}, but {reason}"
    logger.info("gpu_sc pipeline: backend %s (%s)", resolved, why)

    work = adata.copy() if copy or atomic else adata
    prepare_counts(work)  # float16 -> float32 on the working object (logged)
    shapes: list[dict] = [{"step": "input", "n_obs": work.n_obs, "n_vars": work.n_vars}]
    n_before = len(provenance(work))
    runner = _Runner(work, shapes, progress)
    # On cupy the working matrix stays on the device between engine steps; host at the end.
    output = "device" if resolved == "cupy" else "host"
    try:
        with settings.override(backend=resolved, output=output, strict=strict), \
                _quiet_unusable_cuda():
            _run_steps(runner, cfg)
    finally:
        _move_to_host(runner.adata)
    work = runner.adata
    ran = [p["backend"] for p in provenance(work)[n_before:] if p["backend"] != "anndata"]
    used = {b: ran.count(b) for b in dict.fromkeys(ran)}
    store_pipeline_record(work, {
        "requested_backend": requested,
        "resolved_backend": resolved,
        "backend": ", ".join(used) or resolved,
        "backend_reason": why,
        "steps_by_backend": used,
        "strict": strict,
        "config": cfg.to_dict(),
        "shapes": shapes,
    })  # fmt: skip
    if copy:
        return work
    if work is not adata:
        adata._init_as_actual(work)  # commit: the caller's object takes the result's contents
    return adata


class _Runner:
    def __init__(self, adata, shapes, progress):
        self.adata = adata
        self.shapes = shapes
        self.progress = progress

    def step(self, name: str, func: Callable, *args, **kwargs):
        n_before = len(self.adata.uns.get("gpu_sc", {}).get("provenance", []))
        t0 = time.perf_counter()
        out = func(self.adata, *args, **kwargs)
        seconds = time.perf_counter() - t0
        if len(self.adata.uns.get("gpu_sc", {}).get("provenance", [])) == n_before:
            # Not a dispatched step (subsetting, .raw): record it all the same, with the note
            # the step returned (if any) on what it did.
            record_step(
                self.adata, step=name, backend="anndata", requested="anndata",
                fallback_reason=None, params=kwargs, seconds=seconds,
                note=out if isinstance(out, str) else "",
            )  # fmt: skip
        self.shapes.append({"step": name, "n_obs": self.adata.n_obs, "n_vars": self.adata.n_vars})
        if self.progress is not None:
            self.progress(name, seconds)
        return out


def _subset_obs(adata, mask, **_params):
    adata._inplace_subset_obs(np.asarray(mask))


def _subset_var(adata, mask, **_params):
    adata._inplace_subset_var(np.asarray(mask))


def _freeze_raw(adata):
    adata.raw = adata


def _run_steps(r: _Runner, cfg: PipelineConfig) -> None:
    a = r.adata
    if cfg.var_names_make_unique:
        r.step("var_names_make_unique", lambda ad: ad.var_names_make_unique())
    elif not a.var_names.is_unique:
        raise InputError("duplicate gene names; enable var_names_make_unique in the config")

    c = cfg.filter_cells
    if c.enabled:
        r.step("filter_cells", pp.filter_cells, min_genes=c.min_genes, min_counts=c.min_counts,
               **c.extra)  # fmt: skip
    c = cfg.filter_genes
    if c.enabled:
        r.step("filter_genes", pp.filter_genes, min_cells=c.min_cells, min_counts=c.min_counts,
               **c.extra)  # fmt: skip
    _check_not_empty(r.adata, "cell and gene filters")

    c = cfg.qc
    if c.enabled:
        a = r.adata
        a.var["mt"] = a.var_names.str.startswith(c.mt_prefix)
        if not a.var["mt"].any():
            logger.warning(
                "gpu_sc: qc.mt_prefix %r matches none of the %d genes, so pct_counts_mt is 0 and "
                "max_pct_counts_mt removes no cell; set qc.mt_prefix (mouse: 'mt-')",
                c.mt_prefix, a.n_vars,
            )  # fmt: skip
        r.step("calculate_qc_metrics", pp.calculate_qc_metrics, qc_vars=["mt"], percent_top=None,
               log1p=False, inplace=True, **c.extra)  # fmt: skip
        keep = np.ones(a.n_obs, dtype=bool)
        if c.max_n_genes_by_counts is not None:
            keep &= a.obs["n_genes_by_counts"].to_numpy() < c.max_n_genes_by_counts
        if c.max_pct_counts_mt is not None:
            keep &= a.obs["pct_counts_mt"].to_numpy() < c.max_pct_counts_mt
        r.step("qc_filter", _subset_obs, keep,
               max_n_genes_by_counts=c.max_n_genes_by_counts,
               max_pct_counts_mt=c.max_pct_counts_mt)  # fmt: skip
        _check_not_empty(r.adata, "the QC filter")

    hvg = cfg.hvg
    if hvg.enabled and hvg.flavor == "seurat_v3":
        r.adata.layers["counts"] = r.adata.X.copy()  # seurat_v3 ranks genes on raw counts

    c = cfg.normalize_total
    if c.enabled:
        r.step("normalize_total", pp.normalize_total, target_sum=c.target_sum,
               exclude_highly_expressed=c.exclude_highly_expressed, **c.extra)  # fmt: skip
    if cfg.log1p.enabled:
        r.step("log1p", pp.log1p, **cfg.log1p.extra)

    if hvg.enabled:
        kwargs = dict(flavor=hvg.flavor, n_top_genes=hvg.n_top_genes, batch_key=hvg.batch_key)
        if hvg.flavor == "seurat_v3":
            kwargs["layer"] = "counts"
        else:
            kwargs.update(min_mean=hvg.min_mean, max_mean=hvg.max_mean, min_disp=hvg.min_disp)
        r.step("highly_variable_genes", pp.highly_variable_genes, **kwargs, **hvg.extra)
        if hvg.subset:
            r.step("freeze_raw", _freeze_raw)
            r.step("hvg_subset", _subset_var, r.adata.var["highly_variable"].to_numpy())
            _check_not_empty(r.adata, "the highly-variable-gene subset")

    c = cfg.regress_out
    if c.enabled:
        missing = [k for k in c.keys if k not in r.adata.obs]
        if missing:
            raise InputError(
                f"regress_out.keys {missing} are not in adata.obs; enable qc or change the keys"
            )
        r.step("regress_out", pp.regress_out, keys=list(c.keys), **c.extra)
    c = cfg.scale
    if c.enabled:
        r.step("scale", pp.scale, max_value=c.max_value, zero_center=c.zero_center, **c.extra)
    c = cfg.pca
    if c.enabled:
        n_comps = min(c.n_comps, min(r.adata.shape) - 1)
        r.step("pca", pp.pca, n_comps=n_comps, svd_solver=c.svd_solver,
               random_state=c.random_state, **c.extra)  # fmt: skip
    c = cfg.neighbors
    if c.enabled:
        n_pcs = c.n_pcs
        if n_pcs is not None and "X_pca" in r.adata.obsm:
            n_pcs = min(n_pcs, r.adata.obsm["X_pca"].shape[1])
        r.step("neighbors", pp.neighbors, n_neighbors=c.n_neighbors, n_pcs=n_pcs,
               metric=c.metric, random_state=c.random_state, **c.extra)  # fmt: skip
    c = cfg.leiden
    if c.enabled:
        r.step("leiden", tl.leiden, resolution=c.resolution, flavor=c.flavor,
               n_iterations=c.n_iterations, directed=c.directed, random_state=c.random_state,
               key_added=c.key_added, **c.extra)  # fmt: skip
    groupby = cfg.leiden.key_added
    if cfg.leiden.enabled and cfg.rank_genes_groups.enabled:
        _check_marker_groups(r.adata, groupby, cfg.leiden.resolution)
    c = cfg.paga
    if c.enabled:
        r.step("paga", tl.paga, groups=groupby, **c.extra)
        r.step("paga_layout", _paga_layout)
    c = cfg.umap
    if c.enabled:
        init_pos = c.init_pos
        if init_pos == "paga" and "paga" not in r.adata.uns:
            init_pos = "spectral"
            logger.warning("gpu_sc: umap init_pos='paga' needs the paga step; using 'spectral'")
        r.step("umap", tl.umap, init_pos=init_pos, min_dist=c.min_dist, spread=c.spread,
               random_state=c.random_state, **c.extra)  # fmt: skip
    c = cfg.tsne
    if c.enabled:
        r.step("tsne", tl.tsne, n_pcs=c.n_pcs, perplexity=c.perplexity,
               random_state=c.random_state, **c.extra)  # fmt: skip
    c = cfg.rank_genes_groups
    if c.enabled:
        if groupby not in r.adata.obs:
            raise InputError(f"rank_genes_groups needs obs[{groupby!r}]; enable leiden")
        for i, method in enumerate(c.methods):
            key = rank_genes_key(method)
            r.step(f"rank_genes_groups[{method}]", tl.rank_genes_groups, groupby, method=method,
                   n_genes=c.n_genes, use_raw=c.use_raw, pts=c.pts, key_added=key,
                   **c.extra)  # fmt: skip
            if i == 0:  # scanpy.pl.rank_genes_groups* read this key by default
                r.adata.uns["rank_genes_groups"] = r.adata.uns[key]


def _paga_layout(adata, threshold: float = 0.01) -> str:
    """Compute PAGA node positions (``uns['paga']['pos']``) as the tutorial's plot makes them.

    As ``scanpy.pl.paga(plot=False)`` does; ``umap(init_pos='paga')`` starts from them.

    When no PAGA edge reaches scanpy's drawing ``threshold`` (well-separated groups),
    ``scanpy.pl.paga`` 1.11 with scipy >= 1.15 raises ``AttributeError`` on the empty edge
    list; the layout is then made from all nonzero edges (threshold 0) or, with none at all,
    the groups are placed on a circle. Returns a note saying which layout was made.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import scanpy as sc

    conn = sp.csr_matrix(adata.uns["paga"]["connectivities"])
    n_groups = conn.shape[0]
    weights = sp.triu(conn.maximum(conn.T), k=1).tocoo().data  # one weight per edge
    n_kept = int((weights >= threshold).sum())
    if n_kept > 0:
        sc.pl.paga(adata, plot=False, random_state=0, threshold=threshold)
        return f"layout 'fr' of the {n_kept} PAGA edge(s) with weight >= {threshold:g}"
    n_any = int((weights > 0).sum())
    if n_any > 0:
        try:
            sc.pl.paga(adata, plot=False, random_state=0, threshold=0)
            note = (f"no PAGA edge with weight >= {threshold:g}; layout 'fr' of all "
                    f"{n_any} nonzero edge(s) (threshold 0)")  # fmt: skip
            logger.warning("gpu_sc: paga_layout: %s", note)
            return note
        except AttributeError:  # the same scanpy/scipy incompatibility, in another form
            pass
    angles = 2 * np.pi * np.arange(n_groups) / max(n_groups, 1)
    adata.uns["paga"]["pos"] = np.column_stack([np.cos(angles), np.sin(angles)])
    note = (f"no PAGA edge with weight >= {threshold:g} ({n_any} nonzero); the "
            f"{n_groups} groups placed on a circle")  # fmt: skip
    logger.warning("gpu_sc: paga_layout: %s", note)
    return note


def _check_marker_groups(adata, groupby: str, resolution: float) -> None:
    """Fail before the marker step, naming the resolution, when markers cannot be ranked.

    ``rank_genes_groups`` cannot rank one group, or groups of a single cell.
    """
    if groupby not in adata.obs:
        return
    sizes = adata.obs[groupby].value_counts()
    sizes = sizes[sizes > 0]
    if len(sizes) < 2:
        raise InputError(
            f"leiden at resolution {resolution:g} found {len(sizes)} cluster; rank_genes_groups "
            "needs at least 2: raise leiden.resolution or disable rank_genes_groups"
        )
    small = sizes[sizes < 2]
    if len(small):
        names = ", ".join(map(str, small.index[:5])) + (", ..." if len(small) > 5 else "")
        raise InputError(
            f"leiden at resolution {resolution:g} found {len(small)} single-cell cluster(s) "
            f"({names}) that rank_genes_groups cannot test; lower leiden.resolution or disable "
            "rank_genes_groups"
        )


def _check_not_empty(adata, after: str) -> None:
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputError(
            f"no data left after {after} ({adata.n_obs} cells x {adata.n_vars} genes); "
            "loosen the thresholds in the config"
        )
