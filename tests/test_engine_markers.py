"""Engine rank_genes_groups vs scanpy on PBMC3k's tutorial clusters (all 13,714 raw genes)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from _cluster_pbmc3k import tutorial_clusters

import gpu_sc
from gpu_sc.dispatch.arrays import array_module
from gpu_sc.kernels.markers import indicator, rank_columns, sparse_rank_sums
from gpu_sc.provenance import last as last_record

BACKENDS = ["numpy", pytest.param("cupy", marks=pytest.mark.gpu)]
CASES = {
    "t-test": dict(method="t-test"),
    "wilcoxon-pts": dict(method="wilcoxon", pts=True),
    "t-test-0-vs-1": dict(method="t-test", groups=["0"], reference="1"),
    "wilcoxon-0-vs-1-tiecorrect": dict(
        method="wilcoxon", groups=["0"], reference="1", tie_correct=True
    ),
    "overestim-n_genes-bonferroni": dict(
        method="t-test_overestim_var", groups=["0", "2"], n_genes=50, corr_method="bonferroni"
    ),
}
# p-values: 1e-6 relative; below 1e-30 (where float64 tails of two special-function
# implementations may differ in the last digits or underflow to 0) 1e-30 absolute.
P_ATOL = 1e-30
_SCANPY: dict[str, object] = {}


@pytest.fixture(scope="module")
def pbmc(pbmc3k_raw):
    return tutorial_clusters(pbmc3k_raw)


def _scanpy_result(pbmc, case):
    if case not in _SCANPY:
        adata = pbmc.copy()
        sc.tl.rank_genes_groups(adata, "leiden", **CASES[case])
        _SCANPY[case] = adata
    return _SCANPY[case]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_rank_genes_groups_matches_scanpy(pbmc, case, backend):
    ref = _scanpy_result(pbmc, case)
    ours = pbmc.copy()
    gpu_sc.tl.rank_genes_groups(ours, "leiden", backend=backend, **CASES[case])
    record = last_record(ours)  # a single step's record: the in-process log
    assert record["backend"] == backend, record["fallback_reason"]
    r, o = ref.uns["rank_genes_groups"], ours.uns["rank_genes_groups"]
    assert list(o) == list(r)
    assert o["params"] == r["params"]
    for key in ("names", "scores", "pvals", "pvals_adj", "logfoldchanges"):
        assert o[key].dtype == r[key].dtype, key
    groups = list(r["names"].dtype.names)
    worst = {}
    for group in groups:
        assert set(o["names"][group][:25]) == set(r["names"][group][:25]), group
        a = sc.get.rank_genes_groups_df(ref, group).set_index("names")
        b = sc.get.rank_genes_groups_df(ours, group).set_index("names").loc[a.index]
        for col in ("scores", "logfoldchanges"):
            np.testing.assert_allclose(b[col], a[col], rtol=1e-6, atol=1e-6, err_msg=col)
        for col in ("pvals", "pvals_adj"):
            np.testing.assert_allclose(b[col], a[col], rtol=1e-6, atol=P_ATOL, err_msg=col)
        for col in ("scores", "logfoldchanges", "pvals"):
            rel = np.abs(b[col] - a[col]) / np.maximum(np.abs(a[col]), 1e-300)
            worst[col] = max(worst.get(col, 0.0), float(np.nanmax(rel)))
    print(f"{case}: groups {groups}, max relative differences {worst}")
    for key in ("pts", "pts_rest"):
        assert (key in o) == (key in r)
        if key in r:
            pd.testing.assert_frame_equal(o[key], r[key], rtol=1e-12)


def test_rank_genes_groups_output_is_read_by_scanpy_get(pbmc):
    adata = pbmc.copy()
    gpu_sc.tl.rank_genes_groups(
        adata, "leiden", method="t-test", key_added="markers", n_genes=10, backend="numpy"
    )
    df = sc.get.rank_genes_groups_df(adata, None, key="markers")
    n_groups = len(adata.obs["leiden"].cat.categories)
    assert len(df) == 10 * n_groups
    assert {"group", "names", "scores", "logfoldchanges", "pvals", "pvals_adj"} <= set(df)


def test_sparse_and_dense_rank_sums_agree_with_ties_and_negative_values():
    am = array_module("numpy")
    rng = np.random.default_rng(0)
    dense = rng.integers(-2, 4, (80, 12)).astype(np.float32)
    dense[rng.random(dense.shape) < 0.5] = 0
    dense[:, 3] = 0  # all tied
    dense[:, 4] = 1.5  # all tied, no zeros
    masks = np.zeros((3, 80), dtype=bool)
    masks[rng.integers(0, 3, 80), np.arange(80)] = True
    masks[2] = False
    masks[2, :15] = True  # overlapping with the others, not a partition
    G = indicator(am, masks)
    ranks, ties = rank_columns(am, dense)
    sums, sparse_ties = sparse_rank_sums(am, sp.csr_matrix(dense), G)
    from scipy.stats import rankdata, tiecorrect

    expected = np.column_stack([rankdata(dense[:, j]) for j in range(12)])
    np.testing.assert_array_equal(ranks.T, expected)
    np.testing.assert_array_equal(sums, masks.astype(float) @ expected)
    np.testing.assert_array_equal(ties, sparse_ties)
    tc = np.array([tiecorrect(expected[:, j]) for j in range(12)])
    np.testing.assert_allclose(1 - ties / (80**3 - 80), tc, rtol=1e-14)


@pytest.mark.parametrize("fmt", ["csc", "dense"])
def test_group_variances_square_float32_values_as_the_installed_scanpy_does(monkeypatch, fmt):
    """scanpy < 1.12 squares float32 values in float32 (variances off by float32 rounding);
    1.12 aggregates in float64: with float64 squares the variances are the exact two-pass ones
    to ~1e-12, with float32 squares they are not (a relative error of ~1e-7 or more)."""
    from gpu_sc.kernels import markers as K

    rng = np.random.default_rng(0)
    x = (rng.lognormal(1.0, 0.3, size=(400, 30)) * (rng.random((400, 30)) < 0.6)).astype(np.float32)
    masks = np.zeros((2, 400), dtype=bool)
    masks[0, :150], masks[1, 150:] = True, True
    exact = np.stack([x[m].astype(np.float64).var(axis=0, ddof=1) for m in masks])
    X = sp.csc_matrix(x) if fmt == "csc" else x
    am = array_module("numpy")
    errors = {}
    for in_data_dtype in (True, False):
        monkeypatch.setattr(K, "MARKER_SQUARES_IN_DATA_DTYPE", in_data_dtype)
        _, var = K.group_sums(am, X, masks).mean_var(np)
        errors[in_data_dtype] = np.max(np.abs(var / exact - 1))
    assert errors[False] <= 1e-12
    assert errors[True] >= 1e-8
