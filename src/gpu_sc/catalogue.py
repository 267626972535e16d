"""The step catalogue: every step of gpu_sc, and the pipeline's order, declared once.

A :class:`Step` says what one step is: its name (the dispatcher's and the provenance's), the
public namespaces it appears in (``gpu_sc.pp``/``gpu_sc.tl``, scanpy's function of the same
name), its pipeline config section with the section's defaults and value constraints, what it
reads and writes in the AnnData, the engine implementation with the parameter values it
supports (declared, checked by the dispatcher before the engine runs), how the pipeline runner
calls it, its parity stage and its benchmark floor model.

Everything else is derived from this module: ``gpu_sc.pp``/``gpu_sc.tl``, the engine registry,
:class:`gpu_sc.pipeline.PipelineConfig`, the pipeline's :class:`~gpu_sc.pipeline.Runner`
loop, the parity stages and the benchmark's step sections.

This module imports nothing from gpu_sc: functions are referenced as ``"module:attribute"``
strings and resolved on first use (:func:`resolve`), so every layer may read the catalogue
without an import cycle.

Adding a step: one :class:`Step` entry here (with its section's config dataclass if the
pipeline runs it), a kernel in :mod:`gpu_sc.kernels`, the engine function the entry names,
and tests.
"""

from __future__ import annotations

import functools
import importlib
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = [
    "PIPELINE",
    "SEED_POLICY",
    "STEPS",
    "Num",
    "OneOf",
    "Step",
    "get",
    "public_steps",
    "resolve",
    "sections",
]

# -- value constraints (scikit-learn's ``_parameter_constraints`` style) -----------------------


@dataclass(frozen=True)
class Num:
    """A finite number of ``kind`` (int or float) in a range; ``None`` allowed if ``none``."""

    kind: type = float
    ge: float | None = None
    gt: float | None = None
    ne: float | None = None
    none: bool = False
    why: str = ""
    finite: bool = True  # False: +-inf allowed (never NaN)

    def describe(self) -> str:
        parts = [
            "an integer"
            if self.kind is int
            else "a finite number"
            if self.finite
            else "a number (not NaN)"
        ]
        if self.ge is not None:
            parts.append(f">= {self.ge:g}")
        if self.gt is not None:
            parts.append(f"> {self.gt:g}")
        if self.ne is not None:
            parts.append(f"other than {self.ne:g}")
        return " ".join(parts) + (" (or unset)" if self.none else "")

    def ok(self, v) -> bool:
        if v is None:
            return self.none
        if isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(v):
            return False
        if self.finite and not math.isfinite(v):
            return False
        if self.kind is int and not isinstance(v, int):
            return False
        return not (
            (self.ge is not None and v < self.ge)
            or (self.gt is not None and v <= self.gt)
            or (self.ne is not None and v == self.ne)
        )


@dataclass(frozen=True)
class OneOf:
    """One of ``options`` (each item of a list, for list fields)."""

    options: tuple
    why: str = ""

    def describe(self) -> str:
        return "one of " + ", ".join(repr(o) for o in self.options)

    def ok(self, v) -> bool:
        if isinstance(v, list):
            return len(v) > 0 and all(x in self.options for x in v)
        return v in self.options


#: The seed policy, stated once. A pipeline config seed is an integer >= 0 (numpy's
#: RandomState). A step called directly takes what scanpy takes; the engine runs an integer
#: seed (bitwise reproducible) and leaves ``None`` and ``Generator``/``RandomState`` objects
#: to scanpy (recorded as a fallback, :func:`int_seed`'s reason): every engine step with a
#: ``random_state`` declares ``supports={"random_state": int_seed}``, also those whose result
#: does not depend on it (neighbors' exact kNN, tsne), so one rule holds for all.
def _knn_transformer(v) -> str | None:
    """neighbors' ``transformer``: None (auto: exact, IVF-Flat from 2*10^5 cells), "sklearn"
    (exact), "ivf" or a :class:`gpu_sc.kernels.ivf.IVFFlat` (IVF-Flat)."""
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


SEED_POLICY = "an integer seed (None and Generator/RandomState objects run on scanpy)"
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


# -- engine parameter support (checked by the dispatcher before the engine runs) ----------------
# Each rule maps a parameter value to None (supported) or the reason it is not; the reason is
# the fallback message, exactly as the engine used to raise it.
Rule = Callable[[Any], "str | None"]


def only(*allowed, why: str | Callable[[Any], str]) -> Rule:
    """Supported when the value is one of ``allowed`` (compared with ``==``, strings and None
    only)."""

    def rule(v):
        if (v is None or isinstance(v, str)) and v in allowed:
            return None
        return why(v) if callable(why) else why

    return rule


def unset(why: str | Callable[[Any], str]) -> Rule:
    """Supported when the value is None."""
    return lambda v: None if v is None else (why(v) if callable(why) else why)


def falsy(why: str) -> Rule:
    """Supported when the value is falsy (False, None, empty)."""
    return lambda v: why if v else None


def truthy(why: str) -> Rule:
    """Supported when the value is truthy."""
    return lambda v: None if v else why


def _leidenalg_objective(params: Mapping[str, Any]) -> str | None:
    """leiden's ``flavor="leidenalg"`` where it optimises another objective than the engine's
    (modularity with ``resolution`` on the undirected weighted graph, scanpy's igraph flavor):
    on the directed graph (scanpy's default ``directed=None`` is True for leidenalg) or with
    another partition type. scanpy runs it (the same result as scanpy, recorded)."""
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


def int_seed(v) -> str | None:
    """:data:`SEED_POLICY` for the engine: an integer seed."""
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        return None
    if v is None:
        return "random_state=None (unseeded) is not reproducible"
    return f"random_state of type {type(v).__name__}"


# -- the entries ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One step, declared once (see the module docstring)."""

    name: str
    #: public namespaces, scanpy's (``("pp",)``, ``("tl",)``, both for pca); ``()``: a step
    #: of the pipeline's own (subsetting, ``.raw``, layout), recorded with backend ``anndata``.
    namespaces: tuple[str, ...] = ()
    #: the pipeline config section that switches it on (None: always considered)
    section: str | None = None
    #: ``"module:function"`` the pipeline runner calls as ``run(runner, cfg, step)``; None:
    #: not in the pipeline (``gpu_sc.pipeline.plan:section_call`` calls the public function
    #: with the section's fields as scanpy parameters)
    run: str | None = None
    #: ``"module:function"``: the engine implementation ``func(adata, ctx, **scanpy_params)``
    engine: str | None = None
    #: ``"module:function"``: the Dask implementation ``func(adata, ctx, **scanpy_params)``,
    #: run instead of ``engine`` when the matrix the step reads is a Dask array (blocks of
    #: NumPy/scipy or CuPy/cupyx, the engine's kernels mapped over them; see :mod:`gpu_sc.dask`)
    dask: str | None = None
    #: the engine honours ``ctx.chunked`` (an out-of-memory error is retried in row chunks)
    chunkable: bool = False
    #: ``{parameter: rule}``: parameter values the engine implements (:func:`only` & co.)
    supports: Mapping[str, Rule] = field(default_factory=dict)
    #: rules on a combination of parameters (each maps all the call's parameters, scanpy's
    #: defaults applied, to None or the reason the engine does not implement them), checked
    #: after :attr:`supports`
    supports_together: tuple[Callable[[Mapping[str, Any]], str | None], ...] = ()
    #: what the step reads and writes in the AnnData (documentation; the generic parity stage
    #: ``obs_values`` compares the ``obs[{field}]`` columns listed in ``writes``, ``{field}``
    #: formatted with the config section's fields)
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    #: scanpy parameters the pipeline sets from the section's fields (not allowed in ``extra``)
    reserved: tuple[str, ...] = ()
    #: name of the stage factory in :mod:`gpu_sc.parity.stages` (``factory(step, cfg)``)
    parity: str | None = None
    #: extract keys that must be bitwise equal when the engine reruns the stage
    repeat_keys: tuple[str, ...] = ()
    #: ``{metric: (op, value, modes, why)}``: parity thresholds of metrics only this step
    #: reports (:class:`gpu_sc.parity.thresholds.Threshold`'s fields)
    thresholds: Mapping[str, tuple[str, float, tuple[str, ...], str]] = field(default_factory=dict)
    #: name of the roofline model in :mod:`gpu_sc.bench.floors`
    floor: str | None = None
    #: config sections this step cannot run without (benchmark ``--steps``)
    requires: tuple[str, ...] = ()
    #: reads a graph, not values: no value check at the step API's boundary
    graph_input: bool = False
    #: the matrix the step API's boundary checks (:func:`gpu_sc.steps.check_step_input`):
    #: ``"X"``: ``layers[layer]`` when ``layer`` is given, else ``adata.X``; ``"use_rep"``:
    #: ``obsm[use_rep]``, ``obsm['X_pca']`` where scanpy picks it for ``use_rep=None``, else
    #: ``adata.X``; ``"raw_or_X"``: as ``"X"``, but ``.raw.X`` when there is a ``.raw``, no
    #: ``layer`` and ``use_raw`` is not False
    values: str = "X"
    #: computes ``n_comps`` components: the boundary checks the AnnData has at least 2 cells
    #: and 2 genes and ``1 <= n_comps <= min(n_obs, n_vars)``
    components: bool = False
    #: fine on an empty AnnData (the pipeline says what emptied it after them)
    empty_ok: bool = False
    #: ``"module:function"``, ``func(adata, scanpy_params)``: scanpy's warnings and argument
    #: errors for this call, run just before the engine or the Dask path computes (see
    #: :mod:`gpu_sc.steps.scanpy_checks`; a fallback leaves them to scanpy's function)
    prelude: str | None = None
    #: the boundary rejects NaN/infinite values (False: the step computes with them as
    #: scanpy does, e.g. score_genes' NaN-ignoring means)
    finite_only: bool = True
    #: what scanpy's function returns for a bare matrix (ndarray or scipy sparse) instead of
    #: an AnnData; the engine runs it on a temporary AnnData holding the matrix and returns:
    #: ``"mask"``: the ``(mask, numbers)`` of ``inplace=False``; ``"matrix"``: the
    #: transformed matrix (written back into the caller's array where scanpy transforms it
    #: in place); ``"pca"``: ``obsm['X_pca']``, or with ``return_info`` the tuple
    #: ``(X_pca, components, variance_ratio, variance)``. None: scanpy's function takes an
    #: AnnData only (a matrix is handed to it as given, and it reports the error).
    array_returns: str | None = None
    #: the parameters the engine's array form honours; any other parameter away from
    #: scanpy's default (an AnnData-only one such as ``layer``, ``obsm``, ``mask_obs``), a
    #: Dask array, or arguments only scanpy's array function takes, run scanpy's function
    #: with exactly the caller's arguments (a fallback, logged and recorded)
    array_params: tuple[str, ...] = ()
    #: ``{parameter: rule}``: values scanpy accepts but that make no sense; the step API's
    #: boundary warns (one line, the rule's text) and runs them as scanpy does (raising would
    #: break drop-in use)
    cautions: Mapping[str, Rule] = field(default_factory=dict)
    #: ``too_few(n_obs, params)``: why ``n_obs`` cells are too few for this call, or None; the
    #: boundary raises it (an InputError, a ValueError as scanpy's own) before any backend runs
    too_few: Callable[[int, Mapping[str, Any]], str | None] | None = None

    @property
    def public(self) -> bool:
        return bool(self.namespaces)

    @property
    def scanpy(self) -> str | None:
        """``"pp.filter_cells"``: scanpy's function of this step."""
        return f"{self.namespaces[0]}.{self.name}" if self.namespaces else None

    def scanpy_func(self) -> Callable[..., Any]:
        import scanpy as sc

        from ._scanpy_compat import host_function  # below a backend dispatcher, if any

        return host_function(getattr(getattr(sc, self.namespaces[0]), self.name))


@dataclass(frozen=True)
class Section:
    """A pipeline config section: its dataclass of defaults and the constraints on its values."""

    name: str
    config: type
    constraints: Mapping[str, Num | OneOf] = field(default_factory=dict)
    #: the step whose scanpy function receives ``extra`` (None: the section takes no extra)
    step: str | None = None
    #: ``"module:function"``, ``func(section_config) -> list[str] | None``: the parameters of
    #: what the step's scanpy function passes its ``**kwargs`` on to, with this configuration;
    #: a list closes ``**kwargs`` to those names for the ``extra`` check (None: scanpy's
    #: signature as it is)
    kwargs: str | None = None


# -- config sections: scanpy's PBMC3k tutorial as defaults ------------------------------------


@dataclass
class FilterCellsConfig:
    enabled: bool = True
    min_genes: int | None = 200
    min_counts: int | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class FilterGenesConfig:
    enabled: bool = True
    min_cells: int | None = 3
    min_counts: int | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class QCConfig:
    """QC metrics with the ``mt`` gene set, then the tutorial's cell filter (strict ``<``)."""

    enabled: bool = True
    mt_prefix: str = "MT-"
    max_n_genes_by_counts: float | None = 2500
    max_pct_counts_mt: float | None = 5
    extra: dict = field(default_factory=dict)


@dataclass
class NormalizeConfig:
    enabled: bool = True
    target_sum: float | None = 1e4
    exclude_highly_expressed: bool = False
    extra: dict = field(default_factory=dict)


@dataclass
class Log1pConfig:
    enabled: bool = True
    extra: dict = field(default_factory=dict)


@dataclass
class HVGConfig:
    """``flavor="seurat_v3"`` expects counts: it is then run on ``layers["counts"]``."""

    enabled: bool = True
    flavor: str = "seurat"
    min_mean: float = 0.0125
    max_mean: float = 3.0
    min_disp: float = 0.5
    n_top_genes: int | None = None
    batch_key: str | None = None
    subset: bool = True  # freeze .raw, then keep only the highly variable genes
    extra: dict = field(default_factory=dict)


@dataclass
class RegressOutConfig:
    enabled: bool = True
    keys: list[str] = field(default_factory=lambda: ["total_counts", "pct_counts_mt"])
    extra: dict = field(default_factory=dict)


@dataclass
class ScaleConfig:
    enabled: bool = True
    max_value: float | None = 10.0
    zero_center: bool = True
    extra: dict = field(default_factory=dict)


@dataclass
class PCAConfig:
    enabled: bool = True
    n_comps: int = 50
    svd_solver: str = "arpack"
    random_state: int = 0
    extra: dict = field(default_factory=dict)


@dataclass
class NeighborsConfig:
    enabled: bool = True
    n_neighbors: int = 10
    n_pcs: int | None = 40
    metric: str = "euclidean"
    random_state: int = 0
    #: kNN search of the engine: "auto" (exact below 2*10^5 cells, IVF-Flat from there on),
    #: "exact" or "ivf"; ``nlist``/``nprobe``: IVF-Flat's lists and probed lists (None: its
    #: defaults, :mod:`gpu_sc.kernels.ivf`). Passed as scanpy's ``transformer``.
    algorithm: str = "auto"
    nlist: int | None = None
    nprobe: int | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class LeidenConfig:
    enabled: bool = True
    resolution: float = 0.9
    flavor: str = "igraph"
    n_iterations: int = 2
    directed: bool = False
    random_state: int = 0
    key_added: str = "leiden"
    extra: dict = field(default_factory=dict)


@dataclass
class PagaConfig:
    enabled: bool = True
    extra: dict = field(default_factory=dict)


@dataclass
class UMAPConfig:
    enabled: bool = True
    init_pos: str = "paga"  # "paga" needs the PAGA step; otherwise scanpy's "spectral"
    min_dist: float = 0.5
    spread: float = 1.0
    random_state: int = 0
    extra: dict = field(default_factory=dict)


@dataclass
class TSNEConfig:
    enabled: bool = True
    n_pcs: int | None = None
    perplexity: float = 30
    random_state: int = 0
    extra: dict = field(default_factory=dict)


@dataclass
class RankGenesConfig:
    """One ``rank_genes_groups`` call per method, each under ``rank_genes_groups_<method>``
    (the first method also under scanpy's default key ``rank_genes_groups``)."""

    enabled: bool = True
    methods: list[str] = field(default_factory=lambda: ["t-test", "wilcoxon"])
    n_genes: int | None = None  # scanpy default: all genes
    use_raw: bool | None = None
    pts: bool = False
    extra: dict = field(default_factory=dict)


@dataclass
class ScoreGenesConfig:
    """A gene-set score per cell (``tl.score_genes``) in ``obs[score_name]``; off by default.
    The default set is the S-phase genes of cell-cycle scoring (Tirosh et al. 2016, as in
    scanpy's cell-cycle notebook); with ``use_raw`` unset it scores ``.raw``."""

    enabled: bool = False
    gene_list: list[str] = field(
        default_factory=lambda: [
            "MCM5",
            "PCNA",
            "TYMS",
            "FEN1",
            "MCM2",
            "MCM4",
            "RRM1",
            "UNG",
            "GINS2",
            "MCM6",
            "CDCA7",
            "DTL",
            "PRIM1",
            "UHRF1",
            "MLF1IP",
            "HELLS",
            "RFC2",
            "RPA2",
            "NASP",
            "RAD51AP1",
            "GMNN",
            "WDR76",
            "SLBP",
            "CCNE2",
            "UBR7",
            "POLD3",
            "MSH2",
            "ATAD2",
            "RAD51",
            "RRM2",
            "CDC45",
            "CDC6",
            "EXO1",
            "TIPIN",
            "DSCC1",
            "BLM",
            "CASP8AP2",
            "USP1",
            "CLSPN",
            "POLA1",
            "CHAF1B",
            "BRIP1",
            "E2F8",
        ]
    )
    ctrl_size: int = 50
    n_bins: int = 25
    score_name: str = "S_score"
    random_state: int = 0
    use_raw: bool | None = None
    extra: dict = field(default_factory=dict)


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


# -- derived views ----------------------------------------------------------------------------
_BY_NAME: Mapping[str, Step] = MappingProxyType({s.name: s for s in STEPS})
_SECTIONS: Mapping[str, Section] = MappingProxyType({s.name: s for s in SECTIONS})

#: Names of the steps the pipeline runs, in order.
PIPELINE: tuple[str, ...] = tuple(s.name for s in STEPS if s.run is not None)


def get(name: str) -> Step | None:
    """The entry of step ``name``; a pipeline label such as ``rank_genes_groups[t-test]``
    names its step before the bracket."""
    return _BY_NAME.get(name.split("[", 1)[0])


def section(name: str) -> Section | None:
    return _SECTIONS.get(name)


def sections() -> tuple[Section, ...]:
    return SECTIONS


def public_steps(namespace: str) -> list[Step]:
    """The steps of ``gpu_sc.<namespace>``, in pipeline order."""
    return [s for s in STEPS if namespace in s.namespaces]


def engine_steps() -> list[Step]:
    return [s for s in STEPS if s.engine is not None]


@functools.cache
def resolve(ref: str) -> Any:
    """``"package.module:attribute"`` -> the attribute (imported on first use)."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def cautions(step: str, params: Mapping[str, Any]) -> list[str]:
    """What the boundary warns about ``params`` of ``step`` (:attr:`Step.cautions`)."""
    entry = get(step)
    if entry is None:
        return []
    return [
        w
        for name, rule in entry.cautions.items()
        if name in params
        for w in [rule(params[name])]
        if w
    ]


def unsupported(step: str, params: Mapping[str, Any]) -> str | None:
    """The reason the engine does not implement ``params`` of ``step``, or None."""
    entry = get(step)
    if entry is None:
        return None
    for name, rule in entry.supports.items():
        if name in params:
            why = rule(params[name])
            if why:
                return why
    for together in entry.supports_together:
        why = together(params)
        if why:
            return why
    return None
