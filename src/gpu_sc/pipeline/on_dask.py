"""Shortcuts over :func:`gpu_sc.pipeline` for Dask input (tests, the benchmark).

They call the public steps and the pipeline, so they live here, above :mod:`gpu_sc.dask`.
The Dask path is not a pipeline of its own: every catalogued step with a ``dask``
implementation runs on it when the matrix it reads is a Dask array (:func:`gpu_sc.dispatch.run_step`).
"""

from __future__ import annotations

from .. import catalogue, pp, tl
from ..dispatch.arrays import is_dask
from ..dispatch.provenance import recording
from ..dispatch.registry import DaskUnsupported
from .config import PipelineConfig
from .run import pipeline

__all__ = ["run_dask_step", "run_qc_to_pca"]

_AFTER_PCA = ("neighbors", "leiden", "paga", "umap", "tsne", "rank_genes_groups")


def run_dask_step(step: str, adata, params: dict, *, array_module_name: str = "numpy"):
    """Run the public step ``step`` on the Dask matrix of ``adata``.

    ``gpu_sc.pp.<step>``/``gpu_sc.tl.<step>`` with scanpy-named ``params``, its blocks in
    ``array_module_name``.

    Recorded (as in the pipeline, :func:`~gpu_sc.provenance.recording`) in
    ``adata.uns["gpu_sc"]["provenance"]`` with backend ``"dask"`` (scheduler, worker count and block
    size in ``note`` and in ``adata.uns["gpu_sc"]["dask"]``). Raises
    :class:`~gpu_sc.dispatch.registry.DaskUnsupported` (before any change to ``adata``) for
    a step or parameter value the Dask path does not implement.
    """
    entry = catalogue.get(step)
    if entry is None or entry.dask is None:
        on_dask = sorted(s.name for s in catalogue.STEPS if s.dask is not None)
        raise DaskUnsupported(f"no dask implementation of {step!r}; the dask path has {on_dask}")
    func = getattr(pp, step) if hasattr(pp, step) else getattr(tl, step)
    with recording():
        return func.call(adata, **params, backend=array_module_name)


def run_qc_to_pca(
    adata, config=None, *, array_module_name: str = "numpy", persist_after_hvg: bool = False
):
    """Run :func:`gpu_sc.pipeline` from the filters to PCA on the Dask matrix of ``adata``.

    In place (``atomic=False``); the sections after PCA are switched off.

    Parameters
    ----------
    adata
        AnnData whose ``X`` is a Dask array of CSR row blocks of raw counts (e.g. from
        :func:`gpu_sc.datasets.read_lazy`).
    config
        :class:`~gpu_sc.pipeline.config.PipelineConfig` (or a dict of sections); ``None``:
        the tutorial.
    array_module_name
        ``"numpy"`` (blocks on the CPU) or ``"cupy"`` (each block on its worker's GPU).
    persist_after_hvg
        ``pipeline(..., persist_hvg_matrix=True)``.
    """
    if not is_dask(adata.X):
        raise TypeError("adata.X is not a dask array; open the file with gpu_sc.datasets.read_lazy")
    cfg = PipelineConfig.coerce(config).to_dict()
    for name in _AFTER_PCA:
        cfg[name] = dict(cfg.get(name, {}), enabled=False)
    return pipeline(
        adata, cfg, backend=array_module_name, atomic=False, persist_hvg_matrix=persist_after_hvg
    )
