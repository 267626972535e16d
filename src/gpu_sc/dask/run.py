"""The tutorial's steps from the cell filter to PCA on the Dask path.

For tests and the benchmark; a step catalogue registers :data:`~gpu_sc.dask.steps.DASK_STEPS`.
"""

from __future__ import annotations

import time

import numpy as np

from ..dispatch.arrays import array_module
from ..dispatch.provenance import record_step
from ..dispatch.registry import EngineContext, EngineUnsupported
from ..pipeline.config import PipelineConfig
from .graph import dask_info, is_dask
from .steps import DASK_STEPS, subset_obs, subset_var

__all__ = ["run_dask_step", "run_qc_to_pca"]


def _note(adata, array_module_name: str) -> str:
    info = dask_info(adata.X)
    adata.uns.setdefault("gpu_sc", {})["dask"] = info
    return (
        f"dask: {info['scheduler']}, {info['n_workers']} workers, {info.get('n_blocks')} "
        f"blocks of <= {info.get('chunk_rows')} rows, blocks in {array_module_name}"
    )


def run_dask_step(step: str, adata, params: dict, *, array_module_name: str = "numpy"):
    """Run the Dask implementation of ``step`` with scanpy-named ``params``.

    The step is recorded in the provenance (backend ``"dask"``; scheduler, worker count and block size in ``note``
    and in ``adata.uns["gpu_sc"]["dask"]``), as :func:`gpu_sc.dispatch.run_step` records an
    engine step. Raises :class:`~gpu_sc.dispatch.registry.EngineUnsupported` (before any
    change to ``adata``) for a parameter value the Dask path does not implement.
    """
    if step not in DASK_STEPS:
        raise EngineUnsupported(
            f"no dask implementation of {step!r}; the dask path has {sorted(DASK_STEPS)}"
        )
    ctx = EngineContext(am=array_module(array_module_name))
    t0 = time.perf_counter()
    result = DASK_STEPS[step](adata, ctx, **params)
    record_step(
        adata, step=step, backend="dask", requested="dask", fallback_reason=None,
        params=params, seconds=time.perf_counter() - t0, note=_note(adata, array_module_name),
    )  # fmt: skip
    return result


def run_qc_to_pca(
    adata,
    config: PipelineConfig | dict | None = None,
    *,
    array_module_name: str = "numpy",
    persist_after_hvg: bool = False,
):
    """Run the tutorial's steps from the filters to PCA on the Dask matrix of ``adata``.

    Filters, QC, normalize_total, log1p, HVG, regress_out, scale and PCA, in the order and with
    the parameters of :func:`gpu_sc.pipeline`.

    Parameters
    ----------
    adata
        AnnData whose ``X`` is a Dask array of CSR row blocks of raw counts (e.g. from
        :func:`gpu_sc.datasets.read_lazy`); modified in place.
    config
        :class:`~gpu_sc.pipeline.config.PipelineConfig` (or a dict of sections); sections
        after ``pca`` are ignored. ``None``: the tutorial.
    array_module_name
        ``"numpy"`` (blocks on the CPU) or ``"cupy"`` (each block moved to its worker's GPU).
    persist_after_hvg
        Keep the normalised, logged matrix of the highly variable genes in the workers'
        memory (``dask.persist``) after the HVG subset, so that regress_out, scale and the two
        PCA passes start from it instead of re-reading and re-normalising the file. Costs
        that matrix's size (spread over the workers); off by default.

    Returns
    -------
    ``adata``, with scanpy's keys, ``obsm["X_pca"]`` in memory, ``X`` still lazy, and one
    provenance entry per step with backend ``"dask"`` and the scheduler, worker count and
    block size in ``note``.
    """
    cfg = PipelineConfig.coerce(config)
    if not is_dask(adata.X):
        raise TypeError("adata.X is not a dask array; open the file with gpu_sc.datasets.read_lazy")

    def step(name, func, *args, dispatched=True, **params):
        if dispatched:
            run_dask_step(name, adata, params, array_module_name=array_module_name)
            return
        t0 = time.perf_counter()
        func(adata, *args)
        record_step(
            adata, step=name, backend="anndata", requested="dask", fallback_reason=None,
            params={}, seconds=time.perf_counter() - t0, note=_note(adata, array_module_name),
        )  # fmt: skip

    s = DASK_STEPS
    if cfg.var_names_make_unique:
        adata.var_names_make_unique()
    c = cfg.filter_cells
    if c.enabled:
        step("filter_cells", s["filter_cells"], min_genes=c.min_genes, min_counts=c.min_counts,
             **c.extra)  # fmt: skip
    c = cfg.filter_genes
    if c.enabled:
        step("filter_genes", s["filter_genes"], min_cells=c.min_cells, min_counts=c.min_counts,
             **c.extra)  # fmt: skip
    c = cfg.qc
    if c.enabled:
        adata.var["mt"] = adata.var_names.str.startswith(c.mt_prefix)
        step("calculate_qc_metrics", s["calculate_qc_metrics"], qc_vars=["mt"],
             percent_top=None, log1p=False, inplace=True, **c.extra)  # fmt: skip
        keep = np.ones(adata.n_obs, dtype=bool)
        if c.max_n_genes_by_counts is not None:
            keep &= adata.obs["n_genes_by_counts"].to_numpy() < c.max_n_genes_by_counts
        if c.max_pct_counts_mt is not None:
            keep &= adata.obs["pct_counts_mt"].to_numpy() < c.max_pct_counts_mt
        step("qc_filter", subset_obs, keep, dispatched=False)
    hvg = cfg.hvg
    if hvg.enabled and hvg.flavor == "seurat_v3":
        adata.layers["counts"] = adata.X  # lazy: the same graph, no copy
    c = cfg.normalize_total
    if c.enabled:
        step("normalize_total", s["normalize_total"], target_sum=c.target_sum,
             exclude_highly_expressed=c.exclude_highly_expressed, **c.extra)  # fmt: skip
    if cfg.log1p.enabled:
        step("log1p", s["log1p"], **cfg.log1p.extra)
    if hvg.enabled:
        kwargs = dict(flavor=hvg.flavor, n_top_genes=hvg.n_top_genes, batch_key=hvg.batch_key)
        if hvg.flavor == "seurat_v3":
            kwargs["layer"] = "counts"
        else:
            kwargs.update(min_mean=hvg.min_mean, max_mean=hvg.max_mean, min_disp=hvg.min_disp)
        step("highly_variable_genes", s["highly_variable_genes"], **kwargs, **hvg.extra)
        if hvg.subset:
            step("hvg_subset", subset_var, adata.var["highly_variable"].to_numpy(),
                 dispatched=False)  # fmt: skip
    if persist_after_hvg:
        adata.X = adata.X.persist()
    c = cfg.regress_out
    if c.enabled:
        step("regress_out", s["regress_out"], keys=list(c.keys), **c.extra)
    c = cfg.scale
    if c.enabled:
        step("scale", s["scale"], max_value=c.max_value, zero_center=c.zero_center, **c.extra)
    c = cfg.pca
    if c.enabled:
        n_comps = min(c.n_comps, min(adata.shape) - 1)
        step("pca", s["pca"], n_comps=n_comps, svd_solver=c.svd_solver,
             random_state=c.random_state, **c.extra)  # fmt: skip
    return adata
