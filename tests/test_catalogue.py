"""The step catalogue: one declaration per step, everything else derived from it."""

from __future__ import annotations

import pytest

import gpu_sc
from gpu_sc import catalogue
from gpu_sc.dispatch.provenance import pipeline_record, provenance
from gpu_sc.pipeline import PipelineConfig, Runner, StepHook
from gpu_sc.provenance import last as last_record


@pytest.fixture(scope="module")
def small():
    return gpu_sc.datasets.synthetic(300, seed=1)


def test_public_namespaces_are_the_catalogues():
    for ns, module in (("pp", gpu_sc.pp), ("tl", gpu_sc.tl)):
        names = sorted(s.name for s in catalogue.public_steps(ns))
        assert module.__all__ == names
        for name in names:
            first = catalogue.get(name).namespaces[0]  # pca: gpu_sc.pp's, in both
            assert getattr(module, name).__module__ == f"gpu_sc.{first}"
    assert gpu_sc.tl.pca is gpu_sc.pp.pca


def test_config_sections_and_pipeline_order_come_from_the_catalogue():
    cfg = PipelineConfig()
    assert list(cfg.to_dict())[1:] == [s.name for s in catalogue.sections()]
    for s in catalogue.STEPS:
        assert s.section is None or hasattr(cfg, s.section), s.name
        assert s.run is None or callable(catalogue.resolve(s.run)), s.name
        assert s.engine is None or callable(catalogue.resolve(s.engine)), s.name
        assert s.values in ("X", "use_rep", "raw_or_X"), s.name
    assert catalogue.PIPELINE.index("filter_cells") < catalogue.PIPELINE.index("qc_filter")
    for sec in catalogue.sections():
        assert sec.kwargs is None or callable(catalogue.resolve(sec.kwargs)), sec.name


def test_every_engine_step_is_registered_from_the_catalogue():
    from gpu_sc.dispatch.registry import implemented_steps

    assert implemented_steps("numpy") == sorted(s.name for s in catalogue.engine_steps())


def test_parity_stages_and_bench_floors_follow_the_catalogue():
    from gpu_sc.bench import floors, steps
    from gpu_sc.parity.stages import stage_for

    cfg = PipelineConfig()
    for s in catalogue.STEPS:
        if s.parity:
            assert (
                stage_for(
                    s.name if s.name != "rank_genes_groups" else "rank_genes_groups[t-test]", cfg
                )
                is not None
            )
        if s.floor:
            assert s.name in floors._MODELS and s.section in steps.SECTIONS


def test_declared_engine_constraint_falls_back_with_its_reason(small):
    a = small.copy()
    gpu_sc.pp.filter_cells(a, min_genes=1, backend="numpy")
    gpu_sc.pp.normalize_total(a, backend="numpy")
    gpu_sc.pp.log1p(a, backend="numpy")
    gpu_sc.pp.pca(a, n_comps=5, random_state=None, backend="numpy")
    rec = last_record(a)
    assert rec["backend"] == "scanpy"
    assert rec["fallback_reason"] == (
        "pca on numpy: random_state=None (unseeded) is not reproducible"
    )


def test_use_backend_is_honoured_by_the_pipeline(small):
    cfg = {
        "tsne": {"enabled": False},
        "umap": {"enabled": False},
        "rank_genes_groups": {"methods": ["t-test"]},
    }
    with gpu_sc.use_backend("numpy"):
        out = gpu_sc.pipeline(small.copy(), cfg)
    record = pipeline_record(out)
    assert record["requested_backend"] == "numpy"
    assert record["steps_by_backend"].get("numpy", 0) > 0
    out = gpu_sc.pipeline(small.copy(), cfg, backend="scanpy")
    assert pipeline_record(out)["requested_backend"] == "scanpy"


def test_runner_hooks_see_every_step_in_order(small):
    seen = []

    class Hook(StepHook):
        def before_step(self, runner, label, func, args, kwargs):
            seen.append(("before", label))

        def after_step(self, runner, label, out):
            seen.append(("after", label))

    cfg = PipelineConfig.from_dict(
        {
            "tsne": {"enabled": False},
            "umap": {"enabled": False},
            "paga": {"enabled": False},
            "rank_genes_groups": {"enabled": False},
        }
    )
    a = small.copy()
    with gpu_sc.settings.override(backend="scanpy"):
        Runner(a, cfg, hooks=[Hook()]).run()
    labels = [label for when, label in seen if when == "before"]
    assert labels == [label for when, label in seen if when == "after"]
    assert labels[:3] == ["var_names_make_unique", "filter_cells", "filter_genes"]
    assert labels[-2:] == ["neighbors", "leiden"]
    assert [p["step"] for p in provenance(a)] == labels


def test_execution_options_reach_the_steps_as_arguments_not_through_settings(small, monkeypatch):
    """pipeline() reads the settings once and passes strict, output and the chunking to each
    step: the global settings are untouched while it runs."""
    import gpu_sc.dispatch.registry as registry

    seen = []
    real = registry.run_step

    def spy(step, adata, params, **options):
        seen.append((step, options, gpu_sc.settings.strict, gpu_sc.settings.chunk_rows))
        return real(step, adata, params, **options)

    monkeypatch.setattr(registry, "run_step", spy)
    monkeypatch.setattr("gpu_sc.steps.run_step", spy)
    cfg = {
        k: {"enabled": False}
        for k in ("neighbors", "leiden", "paga", "umap", "tsne", "rank_genes_groups")
    }
    with gpu_sc.settings.override(chunk_rows=1234):
        gpu_sc.pipeline(small.copy(), cfg, backend="numpy", strict=True)
    assert [s for s, *_ in seen][:2] == ["filter_cells", "filter_genes"]
    for step, options, strict_setting, rows_setting in seen:
        assert options["strict"] is True and options["output"] == "host", step
        assert options["chunk_rows"] == 1234, step  # read once at the pipeline's boundary
        assert strict_setting is None and rows_setting == 1234, step  # not overridden


@pytest.fixture(scope="module")
def logged(small):
    import numpy as np
    import pandas as pd

    a = small.copy()
    gpu_sc.pp.filter_cells(a, min_genes=1, backend="numpy")
    gpu_sc.pp.normalize_total(a, backend="numpy")
    gpu_sc.pp.log1p(a, backend="numpy")
    a.obs["g"] = pd.Categorical((np.arange(a.n_obs) % 3).astype(str))
    return a


# Parameter values the engine leaves to scanpy, declared in the catalogue's ``supports``
# (formerly raised by the engine): (step, params, the reason, scanpy's error or None).
_DECLARED = [
    (
        "rank_genes_groups",
        {"groupby": "g", "method": "logreg"},
        "method='logreg': the engine implements ('t-test', 't-test_overestim_var', 'wilcoxon')",
        None,
    ),
]


@pytest.mark.parametrize(("step", "params", "reason", "scanpy_error"), _DECLARED)
def test_declared_constraints_fall_back_to_scanpy_with_the_engines_reason(
    logged, caplog, step, params, reason, scanpy_error
):
    assert catalogue.unsupported(step, params) == reason
    a = logged.copy()
    func = getattr(getattr(gpu_sc, catalogue.get(step).namespaces[0]), step)
    full = f"{step} on numpy: {reason}"
    if scanpy_error is None:
        func(a, **params, backend="numpy")
        rec = last_record(a)
        assert rec["step"] == step and rec["backend"] == "scanpy"
        assert rec["fallback_reason"] == full
    else:
        with caplog.at_level("WARNING", logger="gpu_sc"), pytest.raises(ValueError) as err:
            func(a, **params, backend="numpy")
        assert scanpy_error in str(err.value)
        assert any(r.getMessage().endswith(full) for r in caplog.records)


def test_pca_shape_is_checked_at_the_boundary_as_its_entry_declares(logged):
    from gpu_sc.pipeline.validate import InputError

    assert [s.name for s in catalogue.STEPS if s.components] == ["pca"]
    with pytest.raises(InputError, match="PCA needs at least 2 cells and 2 genes"):
        gpu_sc.pp.pca(logged[:, :1].copy(), backend="numpy")
    # scanpy's (scikit-learn's) text, with gpu_sc's advice
    match = r"n_components=400 must be between 1 and min\(n_samples, n_features\)=\d+ with svd"
    with pytest.raises(InputError, match=match):
        gpu_sc.pp.pca(logged.copy(), n_comps=400, backend="numpy")


def test_one_seed_policy_for_every_engine_step_with_a_random_state():
    import inspect

    seeded = [
        s.name
        for s in catalogue.engine_steps()
        if "random_state" in inspect.signature(s.scanpy_func()).parameters
    ]
    assert seeded == ["pca", "neighbors", "leiden", "umap", "tsne", "score_genes"]
    for name in seeded:
        assert catalogue.get(name).supports["random_state"] is catalogue.int_seed, name
    assert catalogue.int_seed(3) is None
    assert catalogue.int_seed(None) == "random_state=None (unseeded) is not reproducible"


def test_an_unseeded_call_runs_on_scanpy_with_the_policys_reason(logged):
    a = logged.copy()
    gpu_sc.pp.pca(a, n_comps=5, random_state=None, backend="numpy")
    rec = last_record(a)
    assert rec["backend"] == "scanpy"
    assert (
        rec["fallback_reason"] == "pca on numpy: random_state=None (unseeded) is not reproducible"
    )


def test_where_scanpys_kwargs_go_is_declared_by_the_section():
    from gpu_sc.pipeline.config import ConfigError

    PipelineConfig.from_dict({"rank_genes_groups": {"methods": ["logreg"], "extra": {"C": 0.5}}})
    with pytest.raises(ConfigError, match="has no parameter 'C'"):
        PipelineConfig.from_dict({"rank_genes_groups": {"extra": {"C": 0.5}}})
    PipelineConfig.from_dict({"leiden": {"flavor": "leidenalg", "extra": {"anything": 1}}})
    with pytest.raises(ConfigError, match="has no parameter 'anything'"):
        PipelineConfig.from_dict({"leiden": {"extra": {"anything": 1}}})
