"""Parity suite: backend B against scanpy, stage by stage, on PBMC3k and synthetic atlases.

Runs ``scanpy`` vs ``numpy`` here and ``scanpy`` vs ``cupy`` where CUDA is usable. Every
threshold family has one test that asserts it for the stages with an engine implementation;
stages without one must be listed as such. Deliberately broken engine steps (a perturbed PCA,
merged Leiden clusters, a non-deterministic PCA) must be caught.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
from _gpu_target import cupy_for

import gpu_sc
from gpu_sc.dispatch import registry
from gpu_sc.parity import THRESHOLDS, compare
from gpu_sc.parity import metrics as M
from gpu_sc.parity.stages import registry_name

pytestmark = pytest.mark.parity

PAIRS = [
    pytest.param(("scanpy", "numpy"), id="scanpy-numpy"),
    pytest.param(("scanpy", "cupy"), id="scanpy-cupy", marks=pytest.mark.gpu),
]
#: Synthetic atlases: small enough for CI. t-SNE (which dominates run time) and the determinism
#: reruns are kept on PBMC3k only; the broken-kernel tests below cover determinism checking.
SYNTHETIC_CELLS = 1500
SYNTHETIC_CONFIG = {"tsne": {"enabled": False}}
DATASETS = ["pbmc3k", "separated", "overlapping", "trajectory"]


def _cases():
    """Data set x backend pair; the pair that needs CUDA carries the gpu mark."""
    return [
        pytest.param((d, p.values[0]), id=f"{d}-{p.id}", marks=p.marks)
        for d in DATASETS
        for p in PAIRS
    ]


@pytest.fixture(scope="module", params=_cases())
def case(request):
    """(dataset, report): :func:`compare` run once per data set and backend pair."""
    dataset, pair = request.param
    if dataset == "pbmc3k":
        adata, config = request.getfixturevalue("pbmc3k_raw"), None
    else:
        adata = gpu_sc.datasets.synthetic(SYNTHETIC_CELLS, difficulty=dataset)
        config = SYNTHETIC_CONFIG
    with cupy_for(pair):  # module scope: outside the per-test double of conftest.py
        report = compare(adata, pair, config, seed=0, name=dataset, determinism=dataset == "pbmc3k")
    return dataset, report


def _assert_family(report, stages: list[str], metrics: set[str]) -> None:
    """Every stage is in the report (measured, or listed as not implemented, in both the
    isolated and the end-to-end mode); every gated metric of an implemented stage passes."""
    for stage in stages:
        rows = [r for r in report.rows if r.stage == stage]
        assert rows, f"stage {stage} missing from the report"
        for mode in ("isolated", "e2e"):
            in_mode = [r for r in rows if r.mode == mode]
            listed = any(r.metric == "engine" and not r.implemented for r in in_mode)
            measured = {r.metric for r in in_mode} & metrics
            assert listed or measured, f"{stage} ({mode}): neither measured nor listed"
        failed = [r for r in rows if r.metric in metrics and r.implemented and r.passed is False]
        assert not failed, "below threshold:\n" + "\n".join(
            f"  {r.stage} {r.metric} ({r.mode}) = {r.value} (bar {r.threshold}; {r.note})"
            for r in failed
        )


def test_qc_and_normalised_values_agree_to_float32_rounding(case):
    _, report = case
    _assert_family(
        report,
        ["filter_cells", "filter_genes", "calculate_qc_metrics", "normalize_total", "log1p"],
        {
            "cells_jaccard",
            "genes_jaccard",
            "n_genes_max_rel_diff",
            "n_cells_max_rel_diff",
            "qc_obs_max_rel_diff",
            "qc_var_max_rel_diff",
            "normalized_max_rel_diff",
            "log1p_max_rel_diff",
        },
    )


def test_highly_variable_gene_sets_are_identical(case):
    _assert_family(case[1], ["highly_variable_genes"], {"hvg_jaccard"})


def test_regress_out_and_scale_agree_within_1e4(case):
    _assert_family(
        case[1], ["regress_out", "scale"], {"regress_out_max_rel_diff", "scale_max_rel_diff"}
    )


def test_first_30_pcs_correlate_and_span_the_same_subspace(case):
    _assert_family(case[1], ["pca"], {"pca_abs_corr_min", "pca_max_principal_angle"})


def test_knn_neighbours_and_connectivities_agree(case):
    _assert_family(case[1], ["neighbors"], {"knn_overlap", "connectivities_rel_frobenius"})


def test_leiden_clusters_agree_on_same_graph_and_end_to_end(case):
    _assert_family(case[1], ["leiden"], {"leiden_ari"})


def test_matched_clusters_share_top25_markers(case):
    # End to end only clusters with (nearly) the same cells are compared: which cells Leiden
    # regroups on PBMC3k (7 or 8 clusters) tips on last-bit BLAS differences between machines.
    _assert_family(
        case[1], ["rank_genes_groups[t-test]", "rank_genes_groups[wilcoxon]"], {"top25_overlap_min"}
    )


def test_marker_overlap_is_gated_only_on_clusters_that_share_their_cells():
    from gpu_sc.parity.stages import _compare_markers

    genes = np.array([f"g{i}" for i in range(60)])
    scores = np.linspace(10, 1, 60)
    labels_a = np.array(["0"] * 100 + ["1"] * 100)
    labels_b = labels_a.copy()
    labels_b[100:130] = "0"  # 30 cells of cluster 1 regrouped: cluster 0 Jaccard 100/130
    cells = np.array([f"c{i}" for i in range(200)])
    same_top = {"0": (genes, scores), "1": (genes, scores)}
    other_top = {"0": (genes[::-1], scores), "1": (genes, scores)}
    a = {"cells": cells, "labels": labels_a, "markers": same_top}
    b = {"cells": cells, "labels": labels_b, "markers": other_top}
    rows = {m.metric: m for m in _compare_markers(a, b, None)}
    # cluster 1 (100 vs 70 cells, Jaccard 0.7) and cluster 0 (Jaccard 0.77) both differ
    assert rows["clusters_compared"].value == 0
    assert np.isnan(rows["top25_overlap_min"].value)  # nothing comparable: the gate fails
    assert rows["top25_overlap_min[membership differs]"].value == 0.0
    b["labels"] = labels_a
    rows = {m.metric: m for m in _compare_markers(a, b, None)}
    assert rows["clusters_compared"].value == 2
    assert rows["top25_overlap_min"].value == 0.0  # same cells, other genes: a real miss
    assert "top25_overlap_min[membership differs]" not in rows


def test_embeddings_preserve_neighbourhoods_like_scanpy(case):
    dataset, report = case
    stages = ["umap", "tsne"] if dataset == "pbmc3k" else ["umap"]
    _assert_family(
        report,
        stages,
        {"neighbourhood_preservation_diff", "trustworthiness_diff", "tsne_kl_rel_diff"},
    )


def test_rerunning_an_engine_stage_gives_identical_results(case):
    _, report = case
    failed = [r for r in report.rows if r.mode == "repeat" and r.passed is False]
    assert not failed, [(r.stage, r.note) for r in failed]


def test_stages_without_engine_implementation_are_listed_not_failed(case):
    _, report = case
    backend = report.backends[1]
    for stage in {r.stage for r in report.rows}:
        if registry.engine_impl(registry_name(stage), backend) is None:
            row = report.get(stage, "engine", "isolated")
            assert row is not None and not row.implemented, stage
            assert row.note.startswith(f"not implemented on {backend}: ran scanpy"), row.note
    assert report.passed == (not report.failures)
    assert "| stage | metric |" in report.to_markdown()


# -- deliberately broken engine steps must be caught -------------------------------------------
SMALL_CONFIG = {
    "paga": {"enabled": False},
    "umap": {"enabled": False},
    "tsne": {"enabled": False},
    "rank_genes_groups": {"enabled": False},
}


@pytest.fixture(scope="module")
def small():
    return gpu_sc.datasets.synthetic(500, difficulty="separated", seed=1)


def _install(monkeypatch, step: str, func) -> None:
    """For one test, make ``func`` the only engine implementation there is (numpy, ``step``):
    the other steps run scanpy whatever the engine implements by now."""
    registry._load_engine()
    monkeypatch.setattr(registry, "_ENGINE", {step: {"numpy": registry._Impl(func, False)}})


def _scanpy_pca(adata, ctx, **params):
    sc.pp.pca(adata, **params)


def _rotated_pca(adata, ctx, **params):
    """PCA with PCs 3 and 4 rotated by 0.05 rad: |corr| ~ 0.9988, below the 0.9999 bar."""
    sc.pp.pca(adata, **params)
    c, s = np.cos(0.05), np.sin(0.05)
    for key in ("X_pca",):
        x = adata.obsm[key]
        x[:, [2, 3]] = x[:, [2, 3]] @ np.array([[c, -s], [s, c]], dtype=x.dtype)


def _noisy_pca(adata, ctx, **params):
    """PCA plus unseeded noise at the 1e-7 level: numerically fine, not deterministic."""
    sc.pp.pca(adata, **params)
    x = adata.obsm["X_pca"]
    x *= 1 + 1e-7 * np.random.default_rng().standard_normal(x.shape).astype(x.dtype)


def _merged_leiden(adata, ctx, **params):
    """Leiden, then the two largest clusters merged (a cluster lost)."""
    sc.tl.leiden(adata, **params)
    key = params["key_added"]
    labels = adata.obs[key].astype(str)
    first, second = labels.value_counts().index[:2]
    adata.obs[key] = labels.replace(second, first).astype("category")


def test_faithful_engine_stage_is_measured_and_passes(monkeypatch, small):
    _install(monkeypatch, "pca", _scanpy_pca)
    report = compare(small, ("scanpy", "numpy"), SMALL_CONFIG, name="small")
    for mode in ("isolated", "e2e"):
        row = report.get("pca", "pca_abs_corr_min", mode)
        assert row.implemented and row.passed and row.value == pytest.approx(1.0), row
    assert report.get("pca", "identical_rerun", "repeat").passed
    # leiden runs scanpy on both sides: isolated it is listed, end to end it is measured
    # (downstream of an engine stage) and says where the differences come from.
    assert report.get("leiden", "engine", "isolated") is not None
    e2e = report.get("leiden", "leiden_ari", "e2e")
    assert e2e.implemented and "engine steps before it (pca)" in e2e.note
    assert report.passed


def test_perturbed_pca_is_caught(monkeypatch, small):
    _install(monkeypatch, "pca", _rotated_pca)
    report = compare(small, ("scanpy", "numpy"), SMALL_CONFIG, name="small", determinism=False)
    for mode in ("isolated", "e2e"):
        row = report.get("pca", "pca_abs_corr_min", mode)
        assert row.implemented and row.passed is False, row
        assert 0.99 < row.value < THRESHOLDS["pca_abs_corr_min"].value
        assert "worst PC3" in row.note or "worst PC4" in row.note
    assert not report.passed
    assert "**FAIL**" in report.to_markdown()


def test_merged_leiden_clusters_are_caught(monkeypatch, small):
    _install(monkeypatch, "leiden", _merged_leiden)
    report = compare(small, ("scanpy", "numpy"), SMALL_CONFIG, name="small", determinism=False)
    row = report.get("leiden", "leiden_ari", "isolated")
    assert row.implemented and row.passed is False and row.value < 0.95, row
    n_a = report.get("leiden", "n_clusters[scanpy]", "isolated").value
    assert report.get("leiden", "n_clusters[numpy]", "isolated").value == n_a - 1
    assert not report.passed


def test_non_deterministic_stage_is_caught(monkeypatch, small):
    _install(monkeypatch, "pca", _noisy_pca)
    report = compare(small, ("scanpy", "numpy"), SMALL_CONFIG, name="small")
    assert report.get("pca", "pca_abs_corr_min", "isolated").passed  # accurate ...
    rerun = report.get("pca", "identical_rerun", "repeat")
    assert rerun.passed is False and "X_pca" in rerun.note  # ... but not reproducible
    assert not report.passed


# -- metrics -------------------------------------------------------------------------------------
def test_max_rel_diff_on_sparse_matrices_with_different_patterns():
    a = sp.csr_matrix(np.array([[1.0, 0.0, 2.0], [0.0, 4.0, 0.0]]))
    b = sp.csr_matrix(np.array([[1.0, 0.5, 2.0], [0.0, 4.0 * (1 + 1e-7), 0.0]]))
    assert M.max_rel_diff(a, b) == pytest.approx(1.0)  # an entry present on one side only
    b2 = a.copy()
    b2.data = b2.data * (1 + 1e-7)
    assert M.max_rel_diff(a, b2) == pytest.approx(1e-7, rel=1e-3)


def test_max_rel_diff_floors_centred_values_at_the_gene_sd():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((200, 3))
    a[0, 0] = 1e-5  # a value near zero, as centring produces
    b = a + 1e-6  # absolute error 1e-6 everywhere; elementwise ratio explodes near zero
    assert M.max_rel_diff(a, b) > 1e-3
    assert M.max_rel_diff(a, b, floor_sd=True) < 2e-6


def test_modularity_matches_igraph():
    import igraph as ig

    rng = np.random.default_rng(0)
    dense = np.triu(rng.random((30, 30)) * (rng.random((30, 30)) < 0.2), 1)
    adj = sp.csr_matrix(dense + dense.T)
    labels = rng.integers(0, 4, 30)
    g = ig.Graph.Weighted_Adjacency(dense + dense.T, mode="undirected")
    expected = g.modularity(labels.tolist(), weights="weight", resolution=0.9)
    assert M._local_modularity(adj, labels, 0.9) == pytest.approx(expected, abs=1e-12)
    assert M.modularity(adj, labels, 0.9) == pytest.approx(expected, abs=1e-12)


def test_hungarian_matching_pairs_relabelled_clusters():
    a = np.array(["0"] * 5 + ["1"] * 5 + ["2"] * 3)
    b = np.array(["x"] * 5 + ["y"] * 4 + ["z"] * 4)
    pairs = {(ca, cb) for ca, cb, _ in M.match_clusters(a, b)}
    assert pairs == {("0", "x"), ("1", "y"), ("2", "z")}


# -- CLI -----------------------------------------------------------------------------------------
def _cli(tmp_path, *extra):
    from gpu_sc.cli import main

    config = tmp_path / "config.toml"
    config.write_text("\n".join(f"[{k}]\nenabled = false" for k in SMALL_CONFIG) + "\n")
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    argv = [
        "parity",
        "synthetic:separated:300",
        "--backends",
        "scanpy,numpy",
        "--config",
        str(config),
        "--out",
        str(out),
        "--markdown",
        str(md),
        *extra,
    ]
    rc = main(argv)
    return rc, out, md


def test_cli_writes_report_and_exits_zero_when_nothing_fails(tmp_path, capsys):
    rc, out, md = _cli(tmp_path)
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["dataset"] == "synthetic:separated:300"
    assert data["backends"] == ["scanpy", "numpy"] and data["passed"] is True
    fields = {"stage", "metric", "mode", "value", "threshold", "passed", "note", "implemented"}
    assert fields <= set(data["rows"][0])
    assert {r["stage"] for r in data["rows"]} >= {"pca", "neighbors", "leiden"}
    assert md.read_text() in capsys.readouterr().out


def test_cli_exits_one_when_an_engine_stage_misses_its_threshold(tmp_path, monkeypatch):
    _install(monkeypatch, "pca", _rotated_pca)
    rc, out, _ = _cli(tmp_path, "--no-determinism")
    assert rc == 1
    assert json.loads(out.read_text())["passed"] is False


def test_engine_stage_that_omits_an_output_fails(monkeypatch, small):
    def pca_without_loadings(adata, ctx, **params):
        sc.pp.pca(adata, **params)
        del adata.varm["PCs"]

    _install(monkeypatch, "pca", pca_without_loadings)
    report = compare(small, ("scanpy", "numpy"), SMALL_CONFIG, name="small", determinism=False)
    row = report.get("pca", "outputs_present", "isolated")
    assert row.passed is False and "PCs" in row.note
    assert not report.passed


def test_exact_arithmetic_bars_bind_only_at_exact_precision():
    # Under precision="fast" the kNN distances are float32: a near tie can swap a neighbour,
    # which the kNN-overlap bar gates; the isolated connectivities bar is float64 arithmetic's.
    from gpu_sc.parity.thresholds import threshold_for

    exact = threshold_for("connectivities_rel_frobenius", "isolated", "exact")
    assert exact is not None and not exact.check(3.9e-3)  # the measured fast-mode value
    assert threshold_for("connectivities_rel_frobenius", "isolated", "fast") is None
    for metric in ("knn_overlap", "leiden_ari", "hvg_jaccard"):  # the fast-mode bars
        bar = threshold_for(metric, "isolated", "fast")
        assert bar is not None and bar is threshold_for(metric, "isolated")
