"""The pipeline's declarative configuration: scanpy's PBMC3k tutorial as defaults.

Every section has ``enabled`` and scanpy-named fields; ``extra`` passes any other scanpy
parameter through unchanged. Load from TOML with :meth:`PipelineConfig.from_toml`::

    [hvg]
    flavor = "seurat_v3"
    n_top_genes = 2000

    [tsne]
    enabled = false
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ConfigError", "PipelineConfig"]


class ConfigError(ValueError):
    """A pipeline configuration names an unknown field or gives a value of the wrong type."""


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
    """One ``rank_genes_groups`` call per method, each under ``rank_genes_groups_<method>``.

    The first method is also stored under scanpy's default key ``rank_genes_groups``.
    """

    enabled: bool = True
    methods: list[str] = field(default_factory=lambda: ["t-test", "wilcoxon"])
    n_genes: int | None = None  # scanpy default: all genes
    use_raw: bool | None = None
    pts: bool = False
    extra: dict = field(default_factory=dict)


@dataclass
class PipelineConfig:
    """The whole workflow, in order. Defaults reproduce scanpy's PBMC3k tutorial."""

    var_names_make_unique: bool = True
    filter_cells: FilterCellsConfig = field(default_factory=FilterCellsConfig)
    filter_genes: FilterGenesConfig = field(default_factory=FilterGenesConfig)
    qc: QCConfig = field(default_factory=QCConfig)
    normalize_total: NormalizeConfig = field(default_factory=NormalizeConfig)
    log1p: Log1pConfig = field(default_factory=Log1pConfig)
    hvg: HVGConfig = field(default_factory=HVGConfig)
    regress_out: RegressOutConfig = field(default_factory=RegressOutConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    pca: PCAConfig = field(default_factory=PCAConfig)
    neighbors: NeighborsConfig = field(default_factory=NeighborsConfig)
    leiden: LeidenConfig = field(default_factory=LeidenConfig)
    paga: PagaConfig = field(default_factory=PagaConfig)
    umap: UMAPConfig = field(default_factory=UMAPConfig)
    tsne: TSNEConfig = field(default_factory=TSNEConfig)
    rank_genes_groups: RankGenesConfig = field(default_factory=RankGenesConfig)

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineConfig:
        """Build from nested mappings.

        Unknown or mistyped fields, values outside a field's constraints
        (:data:`CONSTRAINTS`) and ``extra`` keys the step's scanpy function does not take
        raise :class:`ConfigError`, naming the field.
        """
        cfg = _build(cls, data, "config")
        _check_values(cfg)
        return cfg

    @classmethod
    def from_toml(cls, path: str | Path) -> PipelineConfig:
        """Read and validate a TOML config file (see :meth:`from_dict`)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def coerce(cls, config: PipelineConfig | dict | str | Path | None) -> PipelineConfig:
        """Validate a config given as a dataclass, a dict, a TOML path or None (defaults)."""
        if config is None:
            return cls()
        if isinstance(config, cls):
            return cls.from_dict(config.to_dict())  # re-validate fields set by assignment
        if isinstance(config, dict):
            return cls.from_dict(config)
        if isinstance(config, str | Path):
            return cls.from_toml(config)
        raise ConfigError(
            f"config must be a PipelineConfig, a dict or a TOML path, not {type(config).__name__}"
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the config as nested dicts (the form :meth:`from_dict` reads)."""
        return dataclasses.asdict(self)


def _build(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table of fields, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown field; valid fields are {names}")
    values = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            values[name] = _build(tp, value, f"{where}.{name}")
        else:
            values[name] = _check_type(value, tp, f"{where}.{name}")
    return cls(**values)


def _check_type(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(tp):
            try:
                return _check_type(value, arm, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected None, got {value!r}")
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp) or (Any,)
        return [_check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is Any or (isinstance(tp, type) and isinstance(value, tp)):
        return value
    raise ConfigError(f"{where}: expected {_name(tp)}, got {value!r}")


def _name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


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
        parts = ["an integer" if self.kind is int else
                 "a finite number" if self.finite else "a number (not NaN)"]  # fmt: skip
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
        return not ((self.ge is not None and v < self.ge) or (self.gt is not None and v <= self.gt)
                    or (self.ne is not None and v == self.ne))  # fmt: skip


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


_SEED = Num(int, ge=0, why="a seed for numpy's RandomState")

#: ``"section.field" -> constraint``, checked by :meth:`PipelineConfig.from_dict`.
CONSTRAINTS: dict[str, Num | OneOf] = {
    "filter_cells.min_genes": Num(int, ge=0, none=True),
    "filter_cells.min_counts": Num(int, ge=0, none=True),
    "filter_genes.min_cells": Num(int, ge=0, none=True),
    "filter_genes.min_counts": Num(int, ge=0, none=True),
    "qc.max_n_genes_by_counts": Num(gt=0, none=True, why="cells need n_genes_by_counts below it"),
    "qc.max_pct_counts_mt": Num(gt=0, none=True, why="cells need pct_counts_mt below it"),
    "normalize_total.target_sum": Num(gt=0, none=True),
    "hvg.flavor": OneOf(("seurat", "cell_ranger", "seurat_v3", "seurat_v3_paper")),
    "hvg.min_mean": Num(),
    "hvg.max_mean": Num(finite=False, why="inf: no upper limit"),
    "hvg.min_disp": Num(finite=False),
    "hvg.n_top_genes": Num(int, ge=1, none=True),
    "scale.max_value": Num(gt=0, none=True),
    "pca.n_comps": Num(int, ge=1),
    "pca.random_state": _SEED,
    "neighbors.n_neighbors": Num(int, ge=2, why="each cell is its own first neighbour"),
    "neighbors.n_pcs": Num(int, ge=0, none=True, why="0 uses adata.X"),
    "neighbors.random_state": _SEED,
    "leiden.resolution": Num(gt=0, why="0 or less puts every cell in one cluster"),
    "leiden.flavor": OneOf(("igraph", "leidenalg")),
    "leiden.n_iterations": Num(int, ne=0, why="a negative value runs until convergence"),
    "leiden.random_state": _SEED,
    "umap.min_dist": Num(ge=0),
    "umap.spread": Num(gt=0),
    "umap.random_state": _SEED,
    "tsne.n_pcs": Num(int, ge=0, none=True),
    "tsne.perplexity": Num(gt=0),
    "tsne.random_state": _SEED,
    "rank_genes_groups.methods": OneOf(("t-test", "t-test_overestim_var", "wilcoxon", "logreg"),
                                       why="a non-empty list"),
    "rank_genes_groups.n_genes": Num(int, ge=1, none=True),
}  # fmt: skip

#: Section -> (scanpy function, parameters the runner sets itself, so not allowed in ``extra``).
_STEPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "filter_cells": ("pp.filter_cells", ("min_genes", "min_counts")),
    "filter_genes": ("pp.filter_genes", ("min_cells", "min_counts")),
    "qc": ("pp.calculate_qc_metrics", ("qc_vars", "percent_top", "log1p")),
    "normalize_total": ("pp.normalize_total", ("target_sum", "exclude_highly_expressed")),
    "log1p": ("pp.log1p", ()),
    "hvg": ("pp.highly_variable_genes", ("flavor", "n_top_genes", "batch_key", "layer",
                                         "min_mean", "max_mean", "min_disp", "subset")),
    "regress_out": ("pp.regress_out", ("keys",)),
    "scale": ("pp.scale", ("max_value", "zero_center")),
    "pca": ("pp.pca", ("n_comps", "svd_solver", "random_state")),
    "neighbors": ("pp.neighbors", ("n_neighbors", "n_pcs", "metric", "random_state")),
    "leiden": ("tl.leiden", ("resolution", "flavor", "n_iterations", "directed",
                             "random_state", "key_added")),
    "paga": ("tl.paga", ("groups",)),
    "umap": ("tl.umap", ("init_pos", "min_dist", "spread", "random_state")),
    "tsne": ("tl.tsne", ("n_pcs", "perplexity", "random_state")),
    "rank_genes_groups": ("tl.rank_genes_groups", ("groupby", "method", "n_genes", "use_raw",
                                                   "pts", "key_added")),
}  # fmt: skip
_MANAGED = ("copy", "inplace")  # the runner works in place on its own object


def _check_values(cfg: PipelineConfig) -> None:
    defaults = PipelineConfig()
    for key, rule in CONSTRAINTS.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if not rule.ok(value):
            default = getattr(getattr(defaults, section), name)
            why = f" ({rule.why})" if rule.why else ""
            raise ConfigError(f"config.{key}: must be {rule.describe()}{why}, got {value!r}; "
                              f"the default is {default!r}")  # fmt: skip
    if cfg.hvg.min_mean >= cfg.hvg.max_mean:
        raise ConfigError(f"config.hvg.min_mean ({cfg.hvg.min_mean:g}) must be below "
                          f"config.hvg.max_mean ({cfg.hvg.max_mean:g}); lower or raise one")  # fmt: skip
    for section, (func_name, reserved) in _STEPS.items():
        extra = getattr(cfg, section).extra
        if extra:
            _check_extra(cfg, section, func_name, reserved, extra)


def _check_extra(cfg, section: str, func_name: str, reserved: tuple[str, ...], extra: dict):
    import scanpy as sc

    ns, name = func_name.split(".")
    params = list(inspect.signature(getattr(getattr(sc, ns), name)).parameters.values())[1:]
    open_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    names = [p.name for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD]
    if section == "leiden" and cfg.leiden.flavor == "igraph":
        # scanpy passes its **clustering_args to igraph's community_leiden: check those too.
        import igraph

        more = inspect.signature(igraph.Graph.community_leiden).parameters.values()
        names += [p.name for p in more if p.kind is p.POSITIONAL_OR_KEYWORD
                  and p.name not in ("graph", "weights", "resolution", "n_iterations")]  # fmt: skip
        open_kwargs = False
    if section == "rank_genes_groups":
        # scanpy hands its **kwds to logreg's LogisticRegression and ignores them otherwise.
        if "logreg" in cfg.rank_genes_groups.methods:
            from sklearn.linear_model import LogisticRegression

            names += list(inspect.signature(LogisticRegression).parameters)
        open_kwargs = False
    fields = {f.name for f in dataclasses.fields(typing.get_type_hints(PipelineConfig)[section])}
    for key in extra:
        where = f"config.{section}.extra.{key}"
        if key in reserved or key in _MANAGED:
            hint = (f"set config.{section}.{key} instead" if key in fields
                    else "the pipeline sets it itself")  # fmt: skip
            raise ConfigError(f"{where}: scanpy.{func_name}'s {key!r} cannot be passed "
                              f"through extra; {hint}")  # fmt: skip
        if key not in names and not open_kwargs:
            choices = [n for n in names if n not in reserved and n not in _MANAGED]
            close = difflib.get_close_matches(key, choices, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"{where}: scanpy.{func_name} (step {section}) has no parameter "
                              f"{key!r}; {hint}valid extra keys are {choices}")  # fmt: skip
