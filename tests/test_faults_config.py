"""Fault catalogue, configuration: a value outside a field's constraints, a wrong type or an
``extra`` key the step's scanpy function does not take is a one-line ConfigError naming the
field (and the step), raised before any data is touched."""

from __future__ import annotations

import math

import pytest

import gpu_sc
from gpu_sc.cli import main
from gpu_sc.pipeline import ConfigError, PipelineConfig
from gpu_sc.pipeline.config import _STEPS
from tests._faults import assert_one_line

BAD_VALUES = [
    ("n_neighbors_0", "neighbors", "n_neighbors", 0, [">= 2", "got 0", "default is 10"]),
    ("n_neighbors_1", "neighbors", "n_neighbors", 1, [">= 2", "own first neighbour"]),
    ("n_neighbors_negative", "neighbors", "n_neighbors", -3, [">= 2"]),
    ("n_neighbors_float", "neighbors", "n_neighbors", 2.5, ["expected int"]),
    ("n_neighbors_string", "neighbors", "n_neighbors", "10", ["expected int"]),
    ("n_comps_0", "pca", "n_comps", 0, ["integer >= 1", "got 0"]),
    ("n_comps_negative", "pca", "n_comps", -5, ["integer >= 1"]),
    ("resolution_0", "leiden", "resolution", 0, ["> 0", "one cluster"]),
    ("resolution_negative", "leiden", "resolution", -1, ["> 0", "got -1"]),
    ("resolution_nan", "leiden", "resolution", math.nan, ["finite", "got nan"]),
    ("resolution_inf", "leiden", "resolution", math.inf, ["finite", "got inf"]),
    ("resolution_string", "leiden", "resolution", "high", ["expected float"]),
    ("leiden_n_iterations_0", "leiden", "n_iterations", 0, ["other than 0", "convergence"]),
    ("leiden_flavor", "leiden", "flavor", "louvain", ["one of", "'igraph'"]),
    ("random_state_negative", "pca", "random_state", -1, [">= 0", "seed"]),
    ("target_sum_0", "normalize_total", "target_sum", 0, ["> 0"]),
    ("target_sum_inf", "normalize_total", "target_sum", math.inf, ["finite"]),
    ("max_value_negative", "scale", "max_value", -10, ["> 0"]),
    ("n_top_genes_0", "hvg", "n_top_genes", 0, [">= 1"]),
    ("hvg_flavor", "hvg", "flavor", "seurat_v4", ["one of", "'seurat_v3'"]),
    ("hvg_min_mean_nan", "hvg", "min_mean", math.nan, ["finite"]),
    ("min_genes_negative", "filter_cells", "min_genes", -1, [">= 0"]),
    ("min_cells_negative", "filter_genes", "min_cells", -1, [">= 0"]),
    ("max_pct_mt_0", "qc", "max_pct_counts_mt", 0, ["> 0", "pct_counts_mt"]),
    ("perplexity_0", "tsne", "perplexity", 0, ["> 0"]),
    ("umap_min_dist_negative", "umap", "min_dist", -0.1, [">= 0"]),
    ("umap_spread_0", "umap", "spread", 0, ["> 0"]),
    ("methods_empty", "rank_genes_groups", "methods", [], ["non-empty", "'wilcoxon'"]),
    ("methods_typo", "rank_genes_groups", "methods", ["ttest"], ["one of", "'t-test'"]),
    ("rank_n_genes_0", "rank_genes_groups", "n_genes", 0, [">= 1"]),
    ("enabled_not_bool", "pca", "enabled", "yes", ["expected bool"]),
]


@pytest.mark.parametrize(
    "section,name,value,words", [c[1:] for c in BAD_VALUES], ids=[c[0] for c in BAD_VALUES]
)
def test_bad_value_names_the_field(section, name, value, words):
    with pytest.raises(ConfigError) as err:
        PipelineConfig.from_dict({section: {name: value}})
    assert_one_line(err.value, f"config.{section}.{name}", *words)


def test_cross_field_hvg_means():
    with pytest.raises(ConfigError) as err:
        PipelineConfig.from_dict({"hvg": {"min_mean": 4.0, "max_mean": 3.0}})
    assert_one_line(err.value, "config.hvg.min_mean", "config.hvg.max_mean")


@pytest.mark.parametrize("section", sorted(_STEPS))
def test_unknown_extra_key_names_step_and_choices(section):
    with pytest.raises(ConfigError) as err:
        PipelineConfig.from_dict({section: {"extra": {"foo": 1}}})
    func = _STEPS[section][0]
    assert_one_line(
        err.value, f"config.{section}.extra.foo", f"scanpy.{func}", "'foo'", "valid extra keys"
    )


def test_extra_key_typo_gets_a_suggestion():
    with pytest.raises(ConfigError) as err:
        PipelineConfig.from_dict({"umap": {"extra": {"n_component": 3}}})
    assert_one_line(err.value, "did you mean 'n_components'")


@pytest.mark.parametrize(
    "section,key,words",
    [
        ("neighbors", "n_neighbors", ["set config.neighbors.n_neighbors instead"]),
        ("pca", "copy", ["the pipeline sets it itself"]),
        ("hvg", "inplace", ["the pipeline sets it itself"]),
        ("rank_genes_groups", "groupby", ["the pipeline sets it itself"]),
    ],
    ids=["field_in_extra", "copy", "inplace", "groupby"],
)
def test_extra_key_the_pipeline_sets_is_refused(section, key, words):
    with pytest.raises(ConfigError) as err:
        PipelineConfig.from_dict({section: {"extra": {key: 1}}})
    assert_one_line(err.value, f"config.{section}.extra.{key}", *words)


def test_valid_extra_keys_pass():
    cfg = PipelineConfig.from_dict(
        {
            "neighbors": {"extra": {"key_added": "nn"}},
            "leiden": {"extra": {"beta": 0.01}},
            "umap": {"extra": {"n_components": 3}},
        }
    )
    assert cfg.umap.extra == {"n_components": 3}


def test_assigned_bad_value_is_caught_before_the_data_is_touched():
    adata = gpu_sc.datasets.synthetic(100, n_genes=100, seed=0)
    X = adata.X.copy()
    cfg = PipelineConfig()
    cfg.leiden.resolution = 0.0  # set by assignment, never validated before
    with pytest.raises(ConfigError) as err:
        gpu_sc.pipeline(adata, cfg, backend="numpy")
    assert_one_line(err.value, "config.leiden.resolution")
    assert (adata.X != X).nnz == 0 and "gpu_sc" not in adata.uns


def test_toml_bad_value_through_the_cli(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[neighbors]\nn_neighbors = 0\n")
    out = tmp_path / "res.h5ad"
    assert main(["run", str(tmp_path / "absent.h5ad"), "-o", str(out), "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert_one_line(err, "config.neighbors.n_neighbors", ">= 2")
    assert not out.exists()
