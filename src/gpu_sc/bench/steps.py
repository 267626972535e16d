"""Which pipeline steps a benchmark runs: selectable sections, their prerequisites, labels."""

from __future__ import annotations

import re

from .. import catalogue

__all__ = ["REQUIRES", "SECTIONS", "dependents", "expand_steps", "pipeline_config", "section_of"]

#: Pipeline config sections that ``--steps`` selects, in pipeline order (the catalogue's
#: sections of steps with a benchmark floor model: the timed work).
SECTIONS = tuple(
    sec.name
    for sec in catalogue.sections()
    if any(st.section == sec.name and st.floor for st in catalogue.STEPS)
)

#: Sections a section cannot run without (regress_out regresses on QC metrics; scanpy's
#: neighbors and tsne would compute a PCA inside their own timing without the pca step).
REQUIRES = {st.section: st.requires for st in catalogue.STEPS if st.requires}

#: Provenance step names (and pipeline labels) that differ from their section's name.
_ALIASES = {
    st.name: st.section
    for st in catalogue.STEPS
    if st.section is not None and st.name != st.section
}


def section_of(label: str) -> str | None:
    """The config section a pipeline step label belongs to (None: always-on bookkeeping)."""
    base = re.sub(r"\[.*\]$", "", label)
    base = _ALIASES.get(base, base)
    return base if base in SECTIONS else None


def expand_steps(spec: str | list[str]) -> tuple[list[str], list[str]]:
    """Parse ``--steps`` (``"all"`` or comma-separated sections / provenance step names).

    Returns
    -------
    ``(requested, enabled)``: the sections asked for, and those plus their prerequisites,
    both in pipeline order.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    items = [s.strip() for s in items if s.strip()]
    if not items:
        raise ValueError("--steps is empty; give 'all' or some of " + ", ".join(SECTIONS))
    if items == ["all"]:
        return list(SECTIONS), list(SECTIONS)
    requested = set()
    for item in items:
        section = section_of(item)
        if section is None:
            raise ValueError(f"unknown step {item!r}; choose 'all' or from {', '.join(SECTIONS)}")
        requested.add(section)
    enabled = set(requested)
    todo = list(requested)
    while todo:
        for dep in REQUIRES.get(todo.pop(), ()):
            if dep not in enabled:
                enabled.add(dep)
                todo.append(dep)
    order = {s: i for i, s in enumerate(SECTIONS)}
    return sorted(requested, key=order.get), sorted(enabled, key=order.get)


def dependents(section: str, enabled: list[str]) -> list[str]:
    """Enabled sections that need ``section``, directly or through others."""
    out: list[str] = []
    changed = True
    while changed:
        changed = False
        for s in enabled:
            if s in out or s == section:
                continue
            if any(d == section or d in out for d in REQUIRES.get(s, ())):
                out.append(s)
                changed = True
    return out


def pipeline_config(enabled: list[str]):
    """The tutorial's :class:`~gpu_sc.pipeline.PipelineConfig` with only ``enabled`` on."""
    from ..pipeline import PipelineConfig

    cfg = PipelineConfig()
    for section in SECTIONS:
        getattr(cfg, section).enabled = section in enabled
    return cfg
