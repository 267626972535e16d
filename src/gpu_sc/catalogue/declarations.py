"""The declarations: every pipeline config section and every step of gpu_sc, in the
pipeline's order, with the rules particular to them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .configs import (
    FilterCellsConfig,
    FilterGenesConfig,
    HVGConfig,
    LeidenConfig,
    Log1pConfig,
    NeighborsConfig,
    NormalizeConfig,
    PagaConfig,
    PCAConfig,
    QCConfig,
    RankGenesConfig,
    RegressOutConfig,
    ScaleConfig,
    ScoreGenesConfig,
    TSNEConfig,
    UMAPConfig,
)
from .entries import Section, Step
from .rules import Num, OneOf, falsy, int_seed, only, truthy, unset

__all__ = ["SECTIONS", "STEPS"]

# -- rules of particular steps ----------------------------------------------------------------


def _knn_transformer(v) -> str | None:
    """Neighbors' ``transformer``: None (auto: exact, IVF-Flat from 2*10^5 cells), "sklearn"
    (exact), "ivf" or a :class:`gpu_sc.kernels.ivf.IVFFlat` (IVF-Flat).
    """
    # An IVFFlat instance, recognised by its class's qualified name: the catalogue (pure data,
    # below every layer) does not import the kernels.
    ivf = any(
        f"{c.__module__}.{c.__qualname__}" == "gpu_sc.kernels.ivf.IVFFlat" for c in type(v).__mro__
    )
    if v is None or ivf or (isinstance(v, str) and v in ("sklearn", "ivf")):
        return None
    return (
        f"transformer={v!r} (the engine computes exact kNN or IVF-Flat: None, 'sklearn', "
        "'ivf' or gpu_sc.kernels.ivf.IVFFlat)"
    )


_SEED = Num(int, ge=0, why="a seed for numpy's RandomState")


# -- values scanpy accepts but that cannot give a useful result (the step API's boundary) ------


def _positive_resolution(v) -> str | None:
    if isinstance(v, int | float) and not isinstance(v, bool) and v <= 0:
        return (
            f"resolution={v:g} puts every cell in one cluster; use a resolution > 0 "
            "(the tutorial's is 1)"
        )
    return None


def _umap_too_few(n_obs: int, params: Mapping[str, Any]) -> str | None:
    init, dims = params.get("init_pos", "spectral"), params.get("n_components", 2)
    if isinstance(init, str) and init == "spectral" and isinstance(dims, int) and n_obs <= dims + 1:
        return (
            f"{n_obs} cells: UMAP's spectral initialisation (ARPACK, k={dims + 1} "
            f"eigenvectors) needs at least {dims + 2} cells; analyse more cells or pass "
            "init_pos='random'"
        )
    return None


def _tsne_too_few(n_obs: int, params: Mapping[str, Any]) -> str | None:
    perplexity = params.get("perplexity", 30)
    if isinstance(perplexity, int | float) and n_obs <= perplexity:
        return (
            f"perplexity ({perplexity:g}) must be less than n_samples ({n_obs}); lower "
            "perplexity or analyse more cells"
        )
    return None


def _leidenalg_objective(params: Mapping[str, Any]) -> str | None:
    """Leiden's ``flavor="leidenalg"`` where it optimises another objective than the engine's
    (modularity with ``resolution`` on the undirected weighted graph, scanpy's igraph flavor):
    on the directed graph (scanpy's default ``directed=None`` is True for leidenalg) or with
    another partition type. scanpy runs it (the same result as scanpy, recorded).
    """
    if params.get("flavor") != "leidenalg":
        return None
    if params.get("partition_type") is not None:
        return (
            "flavor='leidenalg' with a partition_type: only the modularity (RB "
            "configuration) partition type is implemented"
        )
    if params.get("directed") is not False:
        return (
            "flavor='leidenalg' on the directed graph (scanpy's default directed=None): "
            "modularity of a directed graph, another objective than the engine's "
            "(pass flavor='igraph', or directed=False)"
        )
    return None


_PP = "gpu_sc.pipeline.plan:"
_FLOAT32 = "float32 rounding of the same sums"

#: Pipeline config sections, in the pipeline's order.
SECTIONS: tuple[Section, ...] = (
    Section(
        "filter_cells",
        FilterCellsConfig,
        {
            "min_genes": Num(int, ge=0, none=True),
            "min_counts": Num(int, ge=0, none=True),
        },
        step="filter_cells",
    ),
    Section(
        "filter_genes",
        FilterGenesConfig,
        {
            "min_cells": Num(int, ge=0, none=True),
            "min_counts": Num(int, ge=0, none=True),
        },
        step="filter_genes",
    ),
    Section(
        "qc",
        QCConfig,
        {
            "max_n_genes_by_counts": Num(
                gt=0, none=True, why="cells need n_genes_by_counts below it"
            ),
            "max_pct_counts_mt": Num(gt=0, none=True, why="cells need pct_counts_mt below it"),
        },
        step="calculate_qc_metrics",
    ),
    Section(
        "normalize_total",
        NormalizeConfig,
        {"target_sum": Num(gt=0, none=True)},
        step="normalize_total",
    ),
    Section("log1p", Log1pConfig, step="log1p"),
    Section(
        "hvg",
        HVGConfig,
        {
            "flavor": OneOf(("seurat", "cell_ranger", "seurat_v3", "seurat_v3_paper")),
            "min_mean": Num(),
            "max_mean": Num(finite=False, why="inf: no upper limit"),
            "min_disp": Num(finite=False),
            "n_top_genes": Num(int, ge=1, none=True),
        },
        step="highly_variable_genes",
    ),
    Section("regress_out", RegressOutConfig, step="regress_out"),
    Section("scale", ScaleConfig, {"max_value": Num(gt=0, none=True)}, step="scale"),
    Section("pca", PCAConfig, {"n_comps": Num(int, ge=1), "random_state": _SEED}, step="pca"),
    Section(
        "neighbors",
        NeighborsConfig,
        {
            "n_neighbors": Num(int, ge=2, why="each cell is its own first neighbour"),
            "n_pcs": Num(int, ge=0, none=True, why="0 uses adata.X"),
            "random_state": _SEED,
            "algorithm": OneOf(("auto", "exact", "ivf")),
            "nlist": Num(int, ge=1, none=True),
            "nprobe": Num(int, ge=1, none=True),
        },
        step="neighbors",
    ),
    Section(
        "leiden",
        LeidenConfig,
        {
            "resolution": Num(gt=0, why="0 or less puts every cell in one cluster"),
            "flavor": OneOf(("igraph", "leidenalg")),
            "n_iterations": Num(int, ne=0, why="a negative value runs until convergence"),
            "random_state": _SEED,
        },
        step="leiden",
        kwargs="gpu_sc.pipeline.config:_leiden_kwargs",
    ),
    Section("paga", PagaConfig, step="paga"),
    Section(
        "umap",
        UMAPConfig,
        {
            "min_dist": Num(ge=0),
            "spread": Num(gt=0),
            "random_state": _SEED,
        },
        step="umap",
    ),
    Section(
        "tsne",
        TSNEConfig,
        {
            "n_pcs": Num(int, ge=0, none=True),
            "perplexity": Num(gt=0),
            "random_state": _SEED,
        },
        step="tsne",
    ),
    Section(
        "rank_genes_groups",
        RankGenesConfig,
        {
            "methods": OneOf(
                ("t-test", "t-test_overestim_var", "wilcoxon", "logreg"), why="a non-empty list"
            ),
            "n_genes": Num(int, ge=1, none=True),
        },
        step="rank_genes_groups",
        kwargs="gpu_sc.pipeline.config:_rank_genes_groups_kwargs",
    ),
    Section(
        "score_genes",
        ScoreGenesConfig,
        {
            "ctrl_size": Num(int, ge=1),
            "n_bins": Num(int, ge=2),
            "random_state": _SEED,
        },
        step="score_genes",
    ),
)

_QC_MODEL = "qc"
_CHECKS = "gpu_sc.steps.scanpy_checks:"
#: rank_genes_groups' methods the engine implements (None: scanpy's default, t-test)
_MARKER_METHODS = ("t-test", "t-test_overestim_var", "wilcoxon")

#: Every step, in the pipeline's order (steps the pipeline does not run come last).
STEPS: tuple[Step, ...] = (
    Step("var_names_make_unique", run=_PP + "var_names_make_unique"),
    Step(
        "filter_cells",
        ("pp",),
        "filter_cells",
        _PP + "filter_cells",
        "gpu_sc.engine.qc:filter_cells",
        dask="gpu_sc.dask.steps:filter_cells",
        chunkable=True,
        reads=("X",),
        writes=("obs['n_genes'|'n_counts']", "subset obs"),
        reserved=("min_genes", "min_counts"),
        parity="filter_cells",
        floor=_QC_MODEL,
        empty_ok=True,
        array_returns="mask",
        array_params=("min_counts", "min_genes", "max_counts", "max_genes", "inplace", "copy"),
    ),
    Step(
        "filter_genes",
        ("pp",),
        "filter_genes",
        _PP + "filter_genes",
        "gpu_sc.engine.qc:filter_genes",
        dask="gpu_sc.dask.steps:filter_genes",
        chunkable=True,
        reads=("X",),
        writes=("var['n_cells'|'n_counts']", "subset var"),
        reserved=("min_cells", "min_counts"),
        parity="filter_genes",
        floor=_QC_MODEL,
        empty_ok=True,
        array_returns="mask",
        array_params=("min_counts", "min_cells", "max_counts", "max_cells", "inplace", "copy"),
    ),
    Step("check_filtered", run=_PP + "check_filtered"),
    Step(
        "calculate_qc_metrics",
        ("pp",),
        "qc",
        _PP + "calculate_qc_metrics",
        "gpu_sc.engine.qc:calculate_qc_metrics",
        dask="gpu_sc.dask.steps:calculate_qc_metrics",
        chunkable=True,
        reads=("X", "var[qc_vars]"),
        writes=("obs[QC metrics]", "var[QC metrics]"),
        reserved=("qc_vars", "percent_top", "log1p"),
        parity="qc",
        floor=_QC_MODEL,
        empty_ok=True,
        prelude=_CHECKS + "calculate_qc_metrics",
    ),
    Step("qc_filter", section="qc", run=_PP + "qc_filter"),
    Step("counts_layer", section="hvg", run=_PP + "counts_layer"),
    Step(
        "normalize_total",
        ("pp",),
        "normalize_total",
        _PP + "normalize_total",
        "gpu_sc.engine.normalize:normalize_total",
        dask="gpu_sc.dask.steps:normalize_total",
        chunkable=True,
        reads=("X",),
        writes=("X",),
        reserved=("target_sum", "exclude_highly_expressed"),
        parity="normalized",
        floor="normalize",
        prelude=_CHECKS + "normalize_total",
    ),
    Step(
        "log1p",
        ("pp",),
        "log1p",
        _PP + "log1p",
        "gpu_sc.engine.normalize:log1p",
        dask="gpu_sc.dask.steps:log1p",
        chunkable=True,
        reads=("X",),
        writes=("X", "uns['log1p']"),
        parity="log1p",
        floor="log1p",
        empty_ok=True,
        array_returns="matrix",
        array_params=("base", "copy"),
        prelude=_CHECKS + "transforms_in_place",
    ),
    Step(
        "highly_variable_genes",
        ("pp",),
        "hvg",
        _PP + "highly_variable_genes",
        "gpu_sc.engine.hvg:highly_variable_genes",
        dask="gpu_sc.dask.steps:highly_variable_genes",
        chunkable=True,
        supports={
            "flavor": only(
                "seurat",
                "cell_ranger",
                "seurat_v3",
                "seurat_v3_paper",
                why=lambda v: f"flavor={v!r} is not implemented",
            )
        },
        reads=("X",),
        writes=("var[highly_variable, means, dispersions, ...]",),
        reserved=(
            "flavor",
            "n_top_genes",
            "batch_key",
            "layer",
            "min_mean",
            "max_mean",
            "min_disp",
            "subset",
        ),
        parity="hvg",
        floor="hvg",
        prelude=_CHECKS + "highly_variable_genes",
    ),
    Step("freeze_raw", section="hvg", run=_PP + "freeze_raw"),
    Step("hvg_subset", section="hvg", run=_PP + "hvg_subset"),
    Step(
        "regress_out",
        ("pp",),
        "regress_out",
        _PP + "regress_out",
        "gpu_sc.engine.regress_scale:regress_out",
        dask="gpu_sc.dask.steps:regress_out",
        chunkable=True,
        reads=("X", "obs[keys]"),
        writes=("X",),
        reserved=("keys",),
        parity="regress_out",
        floor="regress_out",
        requires=("qc",),
        prelude=_CHECKS + "transforms_in_place",
    ),
    Step(
        "scale",
        ("pp",),
        "scale",
        _PP + "scale",
        "gpu_sc.engine.regress_scale:scale",
        dask="gpu_sc.dask.steps:scale",
        chunkable=True,
        reads=("X",),
        writes=("X", "var['mean'|'std']"),
        reserved=("max_value", "zero_center"),
        parity="scale",
        floor="scale",
        array_returns="matrix",
        array_params=("zero_center", "max_value", "copy", "mask_obs"),
        prelude=_CHECKS + "transforms_in_place",
        empty_ok=True,  # scanpy scales an empty AnnData to nothing (recipe_seurat can empty it)
    ),
    Step(
        "pca",
        ("pp", "tl"),
        "pca",
        _PP + "pca",
        "gpu_sc.engine.pca:pca",
        dask="gpu_sc.dask.steps:pca",
        chunkable=True,
        supports={"random_state": int_seed},
        reads=("X",),
        writes=("obsm['X_pca']", "varm['PCs']", "uns['pca']"),
        reserved=("n_comps", "svd_solver", "random_state"),
        parity="pca",
        repeat_keys=("X_pca", "PCs"),
        floor="pca",
        components=True,
        array_returns="pca",
        array_params=(
            "n_comps",
            "zero_center",
            "svd_solver",
            "random_state",
            "return_info",
            "mask_var",
            "dtype",
            "copy",
            "chunked",
            "chunk_size",
        ),
        prelude=_CHECKS + "pca",
    ),
    Step(
        "neighbors",
        ("pp",),
        "neighbors",
        _PP + "neighbors",
        "gpu_sc.engine.neighbors:neighbors",
        supports={
            "transformer": _knn_transformer,
            "knn": truthy("knn=False (dense Gaussian kernel)"),
            "method": only("umap", "gauss", why=lambda v: f"method={v!r}"),
            "metric": only(
                "euclidean",
                "cosine",
                why=lambda v: f"metric={v!r}; the engine implements euclidean and cosine",
            ),
            "metric_kwds": lambda v: f"metric_kwds={dict(v)!r}" if v else None,
            "random_state": int_seed,
        },
        reads=("obsm[use_rep]",),
        writes=("obsp['distances'|'connectivities']", "uns['neighbors']"),
        reserved=("n_neighbors", "n_pcs", "metric", "random_state"),
        parity="neighbors",
        repeat_keys=("distances", "connectivities"),
        floor="neighbors",
        requires=("pca",),
        values="use_rep",
    ),
    Step(
        "leiden",
        ("tl",),
        "leiden",
        _PP + "leiden",
        "gpu_sc.engine.clustering:leiden",
        # flavor, directed, partition_type: the engine raises scanpy's errors; leidenalg with
        # a directed graph or another partition type is declared unsupported (scanpy runs it)
        supports={"restrict_to": unset("restrict_to is not implemented"), "random_state": int_seed},
        supports_together=(_leidenalg_objective,),
        reads=("obsp['connectivities']",),
        writes=("obs[key_added]", "uns[key_added]"),
        reserved=("resolution", "flavor", "n_iterations", "directed", "random_state", "key_added"),
        parity="leiden",
        repeat_keys=("labels",),
        floor="leiden",
        requires=("neighbors",),
        graph_input=True,
        prelude=_CHECKS + "leiden",
        cautions={"resolution": _positive_resolution},
    ),
    Step(
        "paga",
        ("tl",),
        "paga",
        _PP + "paga",
        "gpu_sc.engine.clustering:paga",
        supports={
            "use_rna_velocity": falsy("use_rna_velocity=True is not implemented"),
            "model": only("v1.2", why=lambda v: f"model={v!r}: only v1.2 is implemented"),
        },
        reads=("obsp['connectivities']", "obs[groups]"),
        writes=("uns['paga']",),
        reserved=("groups",),
        parity="paga",
        floor="paga",
        requires=("leiden",),
        graph_input=True,
    ),
    Step("paga_layout", section="paga", run=_PP + "paga_layout"),
    Step(
        "umap",
        ("tl",),
        "umap",
        _PP + "umap",
        "gpu_sc.engine.embedding:umap",
        supports={"method": only("umap", why=lambda v: f"method={v!r}"), "random_state": int_seed},
        reads=("obsp['connectivities']",),
        writes=("obsm['X_umap']",),
        reserved=("init_pos", "min_dist", "spread", "random_state"),
        parity="umap",
        repeat_keys=("Y",),
        floor="umap",
        requires=("neighbors",),
        graph_input=True,
        too_few=_umap_too_few,
    ),
    Step(
        "tsne",
        ("tl",),
        "tsne",
        _PP + "tsne",
        "gpu_sc.engine.embedding:tsne",
        supports={
            "metric": only(
                "euclidean",
                "cosine",
                why=lambda v: f"metric={v!r}; the engine implements euclidean and cosine",
            ),
            "random_state": int_seed,
        },
        reads=("obsm[use_rep]",),
        writes=("obsm['X_tsne']",),
        reserved=("n_pcs", "perplexity", "random_state"),
        parity="tsne",
        repeat_keys=("Y",),
        floor="tsne",
        requires=("pca",),
        values="use_rep",
        prelude=_CHECKS + "tsne",
        too_few=_tsne_too_few,
    ),
    Step(
        "rank_genes_groups",
        ("tl",),
        "rank_genes_groups",
        _PP + "rank_genes_groups",
        "gpu_sc.engine.markers:rank_genes_groups",
        dask="gpu_sc.dask.markers:rank_genes_groups",
        # other methods, corr_methods and groups: the engine raises scanpy's errors
        supports={
            "method": lambda v: (
                f"method={v!r}: the engine implements {_MARKER_METHODS}" if v == "logreg" else None
            )
        },
        reads=("raw.X or X", "obs[groupby]"),
        writes=("uns[key_added]",),
        reserved=("groupby", "method", "n_genes", "use_raw", "pts", "key_added"),
        parity="markers",
        floor="rank_genes",
        requires=("leiden",),
        values="raw_or_X",
    ),
    Step(
        "score_genes",
        ("tl",),
        "score_genes",
        _PP + "section_call",
        "gpu_sc.engine.score_genes:score_genes",
        supports={"random_state": int_seed},
        reads=("raw.X or X or layers[layer]",),
        writes=("obs[{score_name}]",),
        reserved=("gene_list", "ctrl_size", "n_bins", "score_name", "random_state", "use_raw"),
        parity="obs_values",
        finite_only=False,
        thresholds={
            "score_genes_max_rel_diff": (
                "<=",
                1e-5,
                ("isolated", "e2e"),
                (
                    "the same control genes; scanpy sums sparse values in float32 (scipy's sum), the "
                    "engine in float64: the means agree to float32 rounding (~1e-7 of a mean of "
                    "order 1), relative here to the score's SD, ~20x smaller than the means"
                ),
            )
        },
    ),
)
