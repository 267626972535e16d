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

This package imports nothing from gpu_sc outside it: functions are referenced as
``"module:attribute"`` strings and resolved on first use (:func:`resolve`), so every layer may
read the catalogue without an import cycle.

By concern: :mod:`.rules` (the constraint language: :class:`Num`, :class:`OneOf`, support
rules), :mod:`.entries` (:class:`Step`, :class:`Section`), :mod:`.configs` (the sections'
dataclasses) and :mod:`.declarations` (:data:`SECTIONS`, :data:`STEPS`); this module derives
the views every layer reads, and re-exports the names of all four.

Adding a step: one :class:`Step` entry in :mod:`.declarations` (with its section's config
dataclass in :mod:`.configs` if the pipeline runs it), a kernel in :mod:`gpu_sc.kernels`, the engine function the entry names,
and tests.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping
from types import MappingProxyType
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
from .declarations import SECTIONS, STEPS
from .entries import Section, Step
from .rules import SEED_POLICY, Num, OneOf, Rule, falsy, int_seed, only, truthy, unset

__all__ = [
    "PIPELINE",
    "SECTIONS",
    "SEED_POLICY",
    "STEPS",
    "FilterCellsConfig",
    "FilterGenesConfig",
    "HVGConfig",
    "LeidenConfig",
    "Log1pConfig",
    "NeighborsConfig",
    "NormalizeConfig",
    "Num",
    "OneOf",
    "PCAConfig",
    "PagaConfig",
    "QCConfig",
    "RankGenesConfig",
    "RegressOutConfig",
    "Rule",
    "ScaleConfig",
    "ScoreGenesConfig",
    "Section",
    "Step",
    "TSNEConfig",
    "UMAPConfig",
    "cautions",
    "engine_steps",
    "falsy",
    "get",
    "int_seed",
    "only",
    "public_steps",
    "resolve",
    "section",
    "sections",
    "truthy",
    "unset",
    "unsupported",
]

# -- derived views ----------------------------------------------------------------------------
_BY_NAME: Mapping[str, Step] = MappingProxyType({s.name: s for s in STEPS})
_SECTIONS: Mapping[str, Section] = MappingProxyType({s.name: s for s in SECTIONS})

#: Names of the steps the pipeline runs, in order.
PIPELINE: tuple[str, ...] = tuple(s.name for s in STEPS if s.run is not None)


def get(name: str) -> Step | None:
    """The entry of step ``name``; a pipeline label such as ``rank_genes_groups[t-test]``
    names its step before the bracket.
    """
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
