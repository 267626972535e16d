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
    """One ``rank_genes_groups`` call per method, each under ``rank_genes_groups_<method>``
    (the first method also under scanpy's default key ``rank_genes_groups``)."""

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
        """Build from nested mappings; unknown or mistyped fields raise :class:`ConfigError`."""
        return _build(cls, data, "config")

    @classmethod
    def from_toml(cls, path: str | Path) -> PipelineConfig:
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
