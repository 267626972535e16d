"""The pipeline on scanpy's approximate-kNN path (pynndescent), beyond its exact-kNN limits."""

from __future__ import annotations

import pytest

import gpu_sc

FAST = {"tsne": {"enabled": False}, "rank_genes_groups": {"methods": ["t-test"]}}


@pytest.mark.slow
def test_pipeline_runs_on_pynndescent_path_above_4096_cells():
    # scanpy 1.11 computes exact neighbours below 4096 cells (below 8192 for euclidean) and
    # calls pynndescent above; pynndescent 0.7.0 returns scipy sparse *arrays* there, on which
    # scanpy calls .getnnz -> AttributeError. pyproject pins pynndescent<0.7 (reproduced with
    # 0.7.0 on this configuration: 5000 cells, cosine metric).
    adata = gpu_sc.datasets.synthetic(5000, seed=0)
    gpu_sc.pipeline(adata, {**FAST, "neighbors": {"metric": "cosine"}}, backend="scanpy")
    assert adata.n_obs > 4096
    assert adata.uns["neighbors"]["params"]["metric"] == "cosine"
    assert adata.obsp["distances"].shape == (adata.n_obs, adata.n_obs)
    assert adata.obs["leiden"].nunique() >= 2
    assert "X_umap" in adata.obsm
