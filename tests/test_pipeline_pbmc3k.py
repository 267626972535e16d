"""The PBMC3k tutorial end to end on the real 10x data: figures, markers, no wrapper drift."""

from __future__ import annotations

from importlib.metadata import version

import numpy as np
import pandas as pd
import pytest
import scanpy as sc

from gpu_sc.dispatch.provenance import pipeline_record, provenance
from gpu_sc.pipeline.run import rank_genes_key

CANONICAL = {
    "B": ["CD79A", "MS4A1"],
    "CD14+ monocytes": ["LYZ", "S100A8"],
    "FCGR3A+ monocytes": ["FCGR3A", "MS4A7"],
    "NK": ["NKG7", "GNLY"],
    "megakaryocytes": ["PPBP", "PF4"],
    "dendritic": ["FCER1A", "CST3", "HLA-DP*"],
}


@pytest.fixture(scope="module")
def result(pbmc3k_tutorial_scanpy):
    return pbmc3k_tutorial_scanpy


@pytest.fixture(scope="module")
def result_numpy(pbmc3k_tutorial_numpy):
    """The whole tutorial on gpu_sc's engine (the code the GPU runs), on NumPy."""
    return pbmc3k_tutorial_numpy


@pytest.fixture(params=["scanpy", "numpy"])
def any_result(request):
    return request.getfixturevalue("result" if request.param == "scanpy" else "result_numpy")


@pytest.fixture(scope="module")
def by_hand(pbmc3k_raw):
    """The same tutorial, written as plain scanpy calls."""
    a = pbmc3k_raw.copy()
    a.var_names_make_unique()
    sc.pp.filter_cells(a, min_genes=200)
    sc.pp.filter_genes(a, min_cells=3)
    a.var["mt"] = a.var_names.str.startswith("MT-")
    sc.pp.calculate_qc_metrics(a, qc_vars=["mt"], percent_top=None, log1p=False, inplace=True)
    a = a[(a.obs.n_genes_by_counts < 2500) & (a.obs.pct_counts_mt < 5)].copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    sc.pp.highly_variable_genes(a, min_mean=0.0125, max_mean=3, min_disp=0.5)
    a.raw = a
    a = a[:, a.var.highly_variable].copy()
    sc.pp.regress_out(a, ["total_counts", "pct_counts_mt"])
    sc.pp.scale(a, max_value=10)
    sc.pp.pca(a, n_comps=50, svd_solver="arpack", random_state=0)
    sc.pp.neighbors(a, n_neighbors=10, n_pcs=40, random_state=0)
    sc.tl.leiden(a, resolution=0.9, random_state=0, flavor="igraph", n_iterations=2, directed=False)
    sc.tl.paga(a, groups="leiden")
    sc.pl.paga(a, plot=False, random_state=0)
    sc.tl.umap(a, init_pos="paga", random_state=0)
    sc.tl.tsne(a, random_state=0)
    sc.tl.rank_genes_groups(a, "leiden", method="t-test", key_added="ttest")
    sc.tl.rank_genes_groups(a, "leiden", method="wilcoxon", key_added="wilcoxon")
    return a


def _shape_after(adata, step):
    shapes = pipeline_record(adata)["shapes"]
    (row,) = [s for s in shapes if s["step"] == step]
    return row["n_obs"], row["n_vars"]


def test_filters_give_the_tutorial_shapes(any_result):
    assert _shape_after(any_result, "filter_genes") == (2700, 13714)
    assert _shape_after(any_result, "qc_filter") == (2638, 13714)
    assert any_result.raw.shape == (2638, 13714)


def test_seurat_hvg_selects_1838_genes(any_result):
    assert any_result.n_vars == 1838
    assert any_result.raw.var.shape[0] == 13714


def test_leiden_finds_7_to_9_clusters(any_result):
    assert 7 <= any_result.obs["leiden"].nunique() <= 9


def _top(adata, key, group, n=10):
    return list(pd.DataFrame(adata.uns[key]["names"])[group][:n])


def _matches(genes, markers):
    return any(g.startswith(m[:-1]) if m.endswith("*") else g == m for g in genes for m in markers)


def test_canonical_markers_lead_distinct_clusters_by_wilcoxon(any_result):
    result = any_result
    key = rank_genes_key("wilcoxon")
    groups = list(result.obs["leiden"].cat.categories)
    hits = {
        cell_type: [g for g in groups if _matches(_top(result, key, g), markers)]
        for cell_type, markers in CANONICAL.items()
    }
    missing = [t for t, gs in hits.items() if not gs]
    assert not missing, f"no cluster has these markers in its top 10: {missing}"
    # Each cell type must own a cluster of its own (no two types forced onto one cluster).
    from scipy.optimize import linear_sum_assignment

    cost = np.array([[0 if g in gs else 1 for g in groups] for gs in hits.values()])
    rows, cols = linear_sum_assignment(cost)
    assert cost[rows, cols].sum() == 0, hits


def test_wrapper_adds_no_drift_against_plain_scanpy(result, by_hand):
    assert list(result.obs_names) == list(by_hand.obs_names)
    assert list(result.var_names) == list(by_hand.var_names)
    np.testing.assert_array_equal(result.X, by_hand.X)
    np.testing.assert_array_equal(result.obsm["X_pca"], by_hand.obsm["X_pca"])
    assert (result.obsp["connectivities"] != by_hand.obsp["connectivities"]).nnz == 0
    assert (result.obs["leiden"] == by_hand.obs["leiden"]).all()
    np.testing.assert_array_equal(result.obsm["X_umap"], by_hand.obsm["X_umap"])
    np.testing.assert_array_equal(result.obsm["X_tsne"], by_hand.obsm["X_tsne"])
    for method, key in [("t-test", "ttest"), ("wilcoxon", "wilcoxon")]:
        ours = result.uns[rank_genes_key(method)]
        for field in ("names", "scores", "pvals_adj", "logfoldchanges"):
            assert ours[field].tolist() == by_hand.uns[key][field].tolist(), (method, field)


def test_provenance_records_every_step(result):
    prov = provenance(result)
    steps = [p["step"] for p in prov]
    for expected in [
        "filter_cells",
        "filter_genes",
        "calculate_qc_metrics",
        "qc_filter",
        "normalize_total",
        "log1p",
        "highly_variable_genes",
        "hvg_subset",
        "regress_out",
        "scale",
        "pca",
        "neighbors",
        "leiden",
        "paga",
        "umap",
        "tsne",
    ]:
        assert expected in steps
    assert steps.count("rank_genes_groups") == 2
    for p in prov:
        assert set(p) >= {"step", "backend", "requested", "fallback_reason", "params", "seconds"}
        assert p["seconds"] >= 0
    dispatched = [p for p in prov if p["backend"] != "anndata"]
    assert all(p["backend"] == "scanpy" and p["fallback_reason"] is None for p in dispatched)
    assert result.uns["gpu_sc"]["versions"]["scanpy"] == version("scanpy")  # sc.__version__ warns
    assert result.uns["gpu_sc"]["pipeline"]["backend"] == "scanpy"


def test_numpy_engine_ran_every_dispatched_step(result_numpy):
    dispatched = [p for p in provenance(result_numpy) if p["backend"] != "anndata"]
    fallbacks = [(p["step"], p["fallback_reason"]) for p in dispatched if p["backend"] != "numpy"]
    assert not fallbacks


def test_results_plot_with_scanpy_unchanged(result, tmp_path):
    sc.pl.umap(result, color=["leiden", "CST3"], show=False)
    sc.pl.rank_genes_groups(result, n_genes=5, sharey=False, show=False)
    sc.get.rank_genes_groups_df(result, group="0", key=rank_genes_key("wilcoxon"))
