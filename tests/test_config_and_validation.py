"""Pipeline config validation and input checks: errors name the field or the problem."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import gpu_sc
from gpu_sc.pipeline import ConfigError, InputError, PipelineConfig, validate_counts


def test_defaults_are_the_pbmc3k_tutorial():
    cfg = PipelineConfig()
    assert cfg.filter_cells.min_genes == 200 and cfg.filter_genes.min_cells == 3
    assert (cfg.qc.max_n_genes_by_counts, cfg.qc.max_pct_counts_mt) == (2500, 5)
    assert cfg.normalize_total.target_sum == 1e4
    assert (cfg.hvg.flavor, cfg.hvg.min_mean, cfg.hvg.max_mean, cfg.hvg.min_disp) == (
        "seurat",
        0.0125,
        3.0,
        0.5,
    )
    assert cfg.regress_out.keys == ["total_counts", "pct_counts_mt"]
    assert cfg.scale.max_value == 10 and cfg.pca.n_comps == 50 and cfg.pca.svd_solver == "arpack"
    assert (cfg.neighbors.n_neighbors, cfg.neighbors.n_pcs) == (10, 40)
    assert (cfg.leiden.resolution, cfg.leiden.flavor, cfg.leiden.n_iterations) == (0.9, "igraph", 2)
    assert cfg.umap.init_pos == "paga"
    assert cfg.rank_genes_groups.methods == ["t-test", "wilcoxon"]


def test_unknown_field_error_names_the_field():
    with pytest.raises(ConfigError, match=r"config\.hvg\.min_mea: unknown field"):
        PipelineConfig.from_dict({"hvg": {"min_mea": 0.1}})


def test_unknown_section_error_names_it():
    with pytest.raises(ConfigError, match=r"config\.clustering: unknown field"):
        PipelineConfig.from_dict({"clustering": {}})


def test_wrong_type_error_names_field_and_value():
    with pytest.raises(ConfigError, match=r"config\.leiden\.resolution: expected float.*'high'"):
        PipelineConfig.from_dict({"leiden": {"resolution": "high"}})
    with pytest.raises(ConfigError, match=r"config\.tsne\.enabled: expected bool"):
        PipelineConfig.from_dict({"tsne": {"enabled": 1}})


def test_toml_round_trip(tmp_path):
    path = tmp_path / "cfg.toml"
    path.write_text('[hvg]\nflavor = "seurat_v3"\nn_top_genes = 2000\n[tsne]\nenabled = false\n')
    cfg = PipelineConfig.from_toml(path)
    assert cfg.hvg.flavor == "seurat_v3" and cfg.hvg.n_top_genes == 2000
    assert cfg.tsne.enabled is False and cfg.umap.enabled is True


def test_missing_toml_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        PipelineConfig.from_toml(tmp_path / "nope.toml")


def _adata(X, obs_names=None):
    import anndata as ad

    a = ad.AnnData(X)
    if obs_names is not None:
        a.obs_names = obs_names
    return a


@pytest.mark.parametrize(
    ("X", "message"),
    [
        (np.zeros((0, 5), dtype=np.float32), "matrix is empty"),
        (np.zeros((3, 4), dtype=np.float32), "all zeros"),
        (np.array([[1.0, np.nan], [2.0, 3.0]]), "NaN or infinite"),
        (sp.csr_matrix(np.array([[1.0, np.inf], [2.0, 0.0]])), "NaN or infinite"),
        (np.array([[1.0, 0.5], [2.0, 3.0]]), "non-integer values"),
        (np.array([[1.0, -1.0], [2.0, 3.0]]), "negative values"),
    ],
)
def test_bad_counts_are_rejected_with_the_problem_named(X, message):
    with pytest.raises(InputError, match=message):
        validate_counts(_adata(X))


def test_duplicate_cell_names_are_rejected():
    with pytest.raises(InputError, match="duplicate cell names.*obs_names_make_unique"):
        validate_counts(_adata(np.ones((2, 2), dtype=np.float32), obs_names=["a", "a"]))


def test_pipeline_rejects_bad_input_before_touching_adata():
    a = _adata(np.array([[1.0, 0.5], [2.0, 3.0]], dtype=np.float32))
    with pytest.raises(InputError):
        gpu_sc.pipeline(a, backend="scanpy")
    assert "gpu_sc" not in a.uns and a.shape == (2, 2)


def test_pipeline_reports_when_filters_leave_nothing():
    a = gpu_sc.datasets.synthetic(300, n_genes=300, seed=1)
    with pytest.raises(InputError, match="no data left after cell and gene filters"):
        gpu_sc.pipeline(a, {"filter_cells": {"min_genes": 100000}}, backend="scanpy")
