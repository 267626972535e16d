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
import tomllib
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import catalogue

__all__ = ["ConfigError", "PipelineConfig"]


class ConfigError(ValueError):
    """A pipeline configuration names an unknown field or gives a value of the wrong type."""


# The section dataclasses and their value constraints are declared with their steps in the
# catalogue; PipelineConfig is assembled from them below.
FilterCellsConfig = catalogue.FilterCellsConfig
FilterGenesConfig = catalogue.FilterGenesConfig
QCConfig = catalogue.QCConfig
NormalizeConfig = catalogue.NormalizeConfig
Log1pConfig = catalogue.Log1pConfig
HVGConfig = catalogue.HVGConfig
RegressOutConfig = catalogue.RegressOutConfig
ScaleConfig = catalogue.ScaleConfig
PCAConfig = catalogue.PCAConfig
NeighborsConfig = catalogue.NeighborsConfig
LeidenConfig = catalogue.LeidenConfig
PagaConfig = catalogue.PagaConfig
UMAPConfig = catalogue.UMAPConfig
TSNEConfig = catalogue.TSNEConfig
RankGenesConfig = catalogue.RankGenesConfig


class _Config:
    """Methods of :class:`PipelineConfig`."""

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineConfig:
        """Build from nested mappings, validated.

        Unknown or mistyped fields, values outside a field's constraints (:data:`CONSTRAINTS`) and ``extra`` keys the step's scanpy function does
        not take raise :class:`ConfigError`, naming the field.
        """
        cfg = _build(cls, data, "config")
        _check_values(cfg)
        return cfg

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
            return typing.cast("PipelineConfig", cls())
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
        return dataclasses.asdict(self)  # type: ignore[call-overload]  # on PipelineConfig, a dataclass


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


Num = catalogue.Num
OneOf = catalogue.OneOf

if TYPE_CHECKING:  # the fields come from the catalogue at import: a static face for mypy

    class PipelineConfig(_Config):  # noqa: D101
        var_names_make_unique: bool

        def __init__(self, **sections: Any) -> None: ...
        def __getattr__(self, section: str) -> Any: ...  # noqa: D105


#: The whole workflow, in order: ``var_names_make_unique`` and one field per catalogue
#: section. Defaults reproduce scanpy's PBMC3k tutorial.
PipelineConfig = dataclasses.make_dataclass(  # type: ignore[misc,assignment]  # the static face above
    "PipelineConfig",
    [("var_names_make_unique", bool, field(default=True))]
    + [(s.name, s.config, field(default_factory=s.config)) for s in catalogue.sections()],
    bases=(_Config,),
    namespace={
        "__module__": __name__,
        "__doc__": "The whole workflow, in order. Defaults reproduce scanpy's PBMC3k "
        "tutorial; one field per section of :mod:`gpu_sc.catalogue`.",
    },
)

#: ``"section.field" -> constraint``, checked by :meth:`PipelineConfig.from_dict`.
CONSTRAINTS: dict[str, Num | OneOf] = {
    f"{s.name}.{name}": rule for s in catalogue.sections() for name, rule in s.constraints.items()
}


def _steps() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Section -> (scanpy function, parameters the runner sets itself, so not in ``extra``)."""
    out = {}
    for s in catalogue.sections():
        step = catalogue.get(s.step) if s.step else None
        if step is not None and step.scanpy:
            out[s.name] = (step.scanpy, step.reserved)
    return out


_STEPS = _steps()
_MANAGED = ("copy", "inplace")  # the runner works in place on its own object


def _check_values(cfg: PipelineConfig) -> None:
    defaults = PipelineConfig()
    for key, rule in CONSTRAINTS.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if not rule.ok(value):
            default = getattr(getattr(defaults, section), name)
            why = f" ({rule.why})" if rule.why else ""
            raise ConfigError(
                f"config.{key}: must be {rule.describe()}{why}, got {value!r}; "
                f"the default is {default!r}"
            )
    if cfg.hvg.min_mean >= cfg.hvg.max_mean:
        raise ConfigError(
            f"config.hvg.min_mean ({cfg.hvg.min_mean:g}) must be below "
            f"config.hvg.max_mean ({cfg.hvg.max_mean:g}); lower or raise one"
        )
    for section, (func_name, reserved) in _STEPS.items():
        extra = getattr(cfg, section).extra
        if extra:
            _check_extra(cfg, section, func_name, reserved, extra)


def _leiden_kwargs(c) -> list[str] | None:
    """Name the parameters leiden's ``**clustering_args`` go to (None: open keyword arguments).

    scanpy passes them to igraph's ``community_leiden`` for flavor igraph; leidenalg's
    partition types take any.
    """
    if c.flavor != "igraph":
        return None
    import igraph

    more = inspect.signature(igraph.Graph.community_leiden).parameters.values()
    return [
        p.name
        for p in more
        if p.kind is p.POSITIONAL_OR_KEYWORD
        and p.name not in ("graph", "weights", "resolution", "n_iterations")
    ]


def _rank_genes_groups_kwargs(c) -> list[str]:
    """Name the parameters rank_genes_groups' ``**kwds`` go to: none unless a method is logreg.

    scanpy hands them to logreg's LogisticRegression and ignores them otherwise.
    """
    if "logreg" not in c.methods:
        return []
    from sklearn.linear_model import LogisticRegression

    return list(inspect.signature(LogisticRegression).parameters)


def _check_extra(cfg, section: str, func_name: str, reserved: tuple[str, ...], extra: dict):
    import scanpy as sc

    ns, name = func_name.split(".")
    params = list(inspect.signature(getattr(getattr(sc, ns), name)).parameters.values())[1:]
    open_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    names = [p.name for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD]
    entry = catalogue.section(section)
    assert entry is not None  # _STEPS names catalogue sections
    kwargs = entry.kwargs
    more = catalogue.resolve(kwargs)(getattr(cfg, section)) if kwargs else None
    if more is not None:  # where scanpy's **kwargs go, declared by the catalogue's section
        names += more
        open_kwargs = False
    fields = {f.name for f in dataclasses.fields(typing.get_type_hints(PipelineConfig)[section])}
    for key in extra:
        where = f"config.{section}.extra.{key}"
        if key in reserved or key in _MANAGED:
            hint = (
                f"set config.{section}.{key} instead"
                if key in fields
                else "the pipeline sets it itself"
            )
            raise ConfigError(
                f"{where}: scanpy.{func_name}'s {key!r} cannot be passed through extra; {hint}"
            )
        if key not in names and not open_kwargs:
            choices = [n for n in names if n not in reserved and n not in _MANAGED]
            close = difflib.get_close_matches(key, choices, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"{where}: scanpy.{func_name} (step {section}) has no parameter "
                f"{key!r}; {hint}valid extra keys are {choices}"
            )
