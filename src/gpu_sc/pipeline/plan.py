"""How the pipeline runs each step: ``run(runner, cfg)`` per catalogue entry.

:mod:`gpu_sc.catalogue` names these functions (``Step.run``) in the pipeline's order; the
:class:`~gpu_sc.pipeline.Runner` calls each one whose config section is enabled. A function
turns its config section into scanpy's arguments, checks what the step needs, and calls
``runner.step(label, func, ...)``. :func:`section_call` is the generic one: the public function
with the config section's fields as its parameters; the public step functions are looked up in ``gpu_sc.pp`` /
``gpu_sc.tl`` at call time.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import scipy.sparse as sp

from .. import pp, tl
from ..dispatch.arrays import is_dask
from ..kernels.ivf import AUTO_IVF_CELLS, IVFFlat
from .validate import InputError

logger = logging.getLogger("gpu_sc")


def rank_genes_key(method: str) -> str:
    """Where the pipeline stores ``rank_genes_groups`` of ``method`` in ``adata.uns``."""
    return "rank_genes_groups_" + method.replace("-", "_")


def _public(name: str):
    return getattr(pp, name) if hasattr(pp, name) else getattr(tl, name)


def section_call(r, cfg, step) -> None:
    """``gpu_sc.<ns>.<step>(adata, **section fields, **extra)``: a step whose config section's
    fields are scanpy parameters of the same names."""
    sec = getattr(cfg, step.section)
    kwargs = {
        f.name: getattr(sec, f.name)
        for f in dataclasses.fields(sec)
        if f.name not in ("enabled", "extra")
    }
    r.step(step.name, _public(step.name), **kwargs, **sec.extra)


def var_names_make_unique(r, cfg, step) -> None:
    if cfg.var_names_make_unique:
        r.step(step.name, lambda ad: ad.var_names_make_unique())
    elif not r.adata.var_names.is_unique:
        raise InputError("duplicate gene names; enable var_names_make_unique in the config")


def filter_cells(r, cfg, step) -> None:
    c = cfg.filter_cells
    r.step(step.name, _public(step.name), min_genes=c.min_genes, min_counts=c.min_counts, **c.extra)


def filter_genes(r, cfg, step) -> None:
    c = cfg.filter_genes
    r.step(step.name, _public(step.name), min_cells=c.min_cells, min_counts=c.min_counts, **c.extra)


def check_filtered(r, cfg, step) -> None:
    check_not_empty(r.adata, "cell and gene filters")


def calculate_qc_metrics(r, cfg, step) -> None:
    c = cfg.qc
    a = r.adata
    a.var["mt"] = a.var_names.str.startswith(c.mt_prefix)
    if not a.var["mt"].any():
        logger.warning(
            "gpu_sc: qc.mt_prefix %r matches none of the %d genes, so pct_counts_mt is 0 and "
            "max_pct_counts_mt removes no cell; set qc.mt_prefix (mouse: 'mt-')",
            c.mt_prefix,
            a.n_vars,
        )
    r.step(
        step.name,
        _public(step.name),
        qc_vars=["mt"],
        percent_top=None,
        log1p=False,
        inplace=True,
        **c.extra,
    )


def qc_filter(r, cfg, step) -> None:
    c = cfg.qc
    a = r.adata
    keep = np.ones(a.n_obs, dtype=bool)
    if c.max_n_genes_by_counts is not None:
        keep &= a.obs["n_genes_by_counts"].to_numpy() < c.max_n_genes_by_counts
    if c.max_pct_counts_mt is not None:
        keep &= a.obs["pct_counts_mt"].to_numpy() < c.max_pct_counts_mt
    r.step(
        step.name,
        _subset_obs,
        keep,
        max_n_genes_by_counts=c.max_n_genes_by_counts,
        max_pct_counts_mt=c.max_pct_counts_mt,
    )
    check_not_empty(r.adata, "the QC filter")


def counts_layer(r, cfg, step) -> None:
    if cfg.hvg.flavor == "seurat_v3":
        r.adata.layers["counts"] = r.adata.X.copy()  # seurat_v3 ranks genes on raw counts


def normalize_total(r, cfg, step) -> None:
    c = cfg.normalize_total
    r.step(
        step.name,
        _public(step.name),
        target_sum=c.target_sum,
        exclude_highly_expressed=c.exclude_highly_expressed,
        **c.extra,
    )


def log1p(r, cfg, step) -> None:
    r.step(step.name, _public(step.name), **cfg.log1p.extra)


def highly_variable_genes(r, cfg, step) -> None:
    hvg = cfg.hvg
    kwargs = dict(flavor=hvg.flavor, n_top_genes=hvg.n_top_genes, batch_key=hvg.batch_key)
    if hvg.flavor == "seurat_v3":
        kwargs["layer"] = "counts"
    else:
        kwargs.update(min_mean=hvg.min_mean, max_mean=hvg.max_mean, min_disp=hvg.min_disp)
    r.step(step.name, _public(step.name), **kwargs, **hvg.extra)


def freeze_raw(r, cfg, step) -> None:
    if cfg.hvg.subset:
        r.step(step.name, _freeze_raw)


def hvg_subset(r, cfg, step) -> None:
    if cfg.hvg.subset:
        r.step(step.name, _subset_var, r.adata.var["highly_variable"].to_numpy())
        check_not_empty(r.adata, "the highly-variable-gene subset")
    if r.persist_hvg_matrix and is_dask(r.adata.X):
        r.adata.X = r.adata.X.persist()  # later steps start from the workers' copy


def regress_out(r, cfg, step) -> None:
    c = cfg.regress_out
    missing = [k for k in c.keys if k not in r.adata.obs]
    if missing:
        raise InputError(
            f"regress_out.keys {missing} are not in adata.obs; enable qc or change the keys"
        )
    r.step(step.name, _public(step.name), keys=list(c.keys), **c.extra)


def scale(r, cfg, step) -> None:
    c = cfg.scale
    r.step(
        step.name, _public(step.name), max_value=c.max_value, zero_center=c.zero_center, **c.extra
    )


def pca(r, cfg, step) -> None:
    c = cfg.pca
    n_comps = min(c.n_comps, min(r.adata.shape) - 1)
    r.step(
        step.name,
        _public(step.name),
        n_comps=n_comps,
        svd_solver=c.svd_solver,
        random_state=c.random_state,
        **c.extra,
    )


def neighbors(r, cfg, step) -> None:
    c = cfg.neighbors
    n_pcs = c.n_pcs
    if n_pcs is not None and "X_pca" in r.adata.obsm:
        n_pcs = min(n_pcs, r.adata.obsm["X_pca"].shape[1])
    extra = dict(c.extra)
    if "transformer" not in extra:
        transformer = knn_transformer(c, r.adata.n_obs)
        if transformer is not None:
            extra["transformer"] = transformer
    r.step(
        step.name,
        _public(step.name),
        n_neighbors=c.n_neighbors,
        n_pcs=n_pcs,
        metric=c.metric,
        random_state=c.random_state,
        **extra,
    )


def knn_transformer(c, n_obs: int):
    """scanpy's ``transformer`` for the neighbors config ``c``: None (scanpy's default; the
    engine's auto switch) unless the config asks for an algorithm or IVF parameters."""

    ivf = c.algorithm == "ivf" or (c.algorithm == "auto" and n_obs >= AUTO_IVF_CELLS)
    if c.algorithm == "exact":
        return "sklearn"
    if ivf and (c.nlist is not None or c.nprobe is not None):
        return IVFFlat(nlist=c.nlist, nprobe=c.nprobe)
    return "ivf" if c.algorithm == "ivf" else None


def leiden(r, cfg, step) -> None:
    c = cfg.leiden
    r.step(
        step.name,
        _public(step.name),
        resolution=c.resolution,
        flavor=c.flavor,
        n_iterations=c.n_iterations,
        directed=c.directed,
        random_state=c.random_state,
        key_added=c.key_added,
        **c.extra,
    )
    if cfg.rank_genes_groups.enabled:
        check_marker_groups(r.adata, c.key_added, c.resolution)


def paga(r, cfg, step) -> None:
    r.step(step.name, _public(step.name), groups=cfg.leiden.key_added, **cfg.paga.extra)


def paga_layout(r, cfg, step) -> None:
    r.step(step.name, _paga_layout)


def umap(r, cfg, step) -> None:
    c = cfg.umap
    init_pos = c.init_pos
    if init_pos == "paga" and "paga" not in r.adata.uns:
        init_pos = "spectral"
        logger.warning("gpu_sc: umap init_pos='paga' needs the paga step; using 'spectral'")
    r.step(
        step.name,
        _public(step.name),
        init_pos=init_pos,
        min_dist=c.min_dist,
        spread=c.spread,
        random_state=c.random_state,
        **c.extra,
    )


def tsne(r, cfg, step) -> None:
    c = cfg.tsne
    r.step(
        step.name,
        _public(step.name),
        n_pcs=c.n_pcs,
        perplexity=c.perplexity,
        random_state=c.random_state,
        **c.extra,
    )


def rank_genes_groups(r, cfg, step) -> None:
    c = cfg.rank_genes_groups
    groupby = cfg.leiden.key_added
    if groupby not in r.adata.obs:
        raise InputError(f"rank_genes_groups needs obs[{groupby!r}]; enable leiden")
    for i, method in enumerate(c.methods):
        key = rank_genes_key(method)
        r.step(
            f"{step.name}[{method}]",
            _public(step.name),
            groupby,
            method=method,
            n_genes=c.n_genes,
            use_raw=c.use_raw,
            pts=c.pts,
            key_added=key,
            **c.extra,
        )
        if i == 0:  # scanpy.pl.rank_genes_groups* read this key by default
            r.adata.uns["rank_genes_groups"] = r.adata.uns[key]


# -- the pipeline's own steps -----------------------------------------------------------------
def _subset_obs(adata, mask, **_params):
    _subset(adata, mask, axis=0)


def _subset_var(adata, mask, **_params):
    _subset(adata, mask, axis=1)


def _subset(adata, mask, *, axis: int) -> None:
    if any(is_dask(m) for m in (adata.X, *adata.layers.values())):
        from ..dask.steps import subset_obs, subset_var  # lazy, block by block

        (subset_obs if axis == 0 else subset_var)(adata, mask)
    elif axis == 0:
        adata._inplace_subset_obs(np.asarray(mask))
    else:
        adata._inplace_subset_var(np.asarray(mask))


def _freeze_raw(adata):
    adata.raw = adata


def _paga_layout(adata, threshold: float = 0.01) -> str:
    """PAGA node positions (``uns['paga']['pos']``), as ``scanpy.pl.paga(plot=False)`` makes
    them in the tutorial; ``umap(init_pos='paga')`` starts from them.

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
            note = (
                f"no PAGA edge with weight >= {threshold:g}; layout 'fr' of all "
                f"{n_any} nonzero edge(s) (threshold 0)"
            )
            logger.warning("gpu_sc: paga_layout: %s", note)
            return note
        except AttributeError:  # the same scanpy/scipy incompatibility, in another form
            pass
    angles = 2 * np.pi * np.arange(n_groups) / max(n_groups, 1)
    adata.uns["paga"]["pos"] = np.column_stack([np.cos(angles), np.sin(angles)])
    note = (
        f"no PAGA edge with weight >= {threshold:g} ({n_any} nonzero); the "
        f"{n_groups} groups placed on a circle"
    )
    logger.warning("gpu_sc: paga_layout: %s", note)
    return note


def check_marker_groups(adata, groupby: str, resolution: float) -> None:
    """Fail before the marker step, naming the resolution, when ``rank_genes_groups`` cannot
    rank the clustering (one group, or groups of a single cell)."""
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


def check_not_empty(adata, after: str) -> None:
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputError(
            f"no data left after {after} ({adata.n_obs} cells x {adata.n_vars} genes); "
            "loosen the thresholds in the config"
        )
