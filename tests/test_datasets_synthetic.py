"""The synthetic atlas: deterministic raw counts, truth columns, QC behaviour, difficulty."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import gpu_sc
from gpu_sc.datasets import synthetic

# The tutorial's QC thresholds (gpu_sc.PipelineConfig defaults).
MIN_GENES, MAX_GENES, MAX_PCT_MT = 200, 2500, 5


def _qc(adata):
    """Per cell: genes detected, total UMIs, % MT UMIs, and whether the tutorial QC keeps it."""
    X = adata.X
    n_genes = np.diff(X.indptr)
    total = np.asarray(X.sum(axis=1)).ravel()
    mt = adata.var_names.str.startswith("MT-")
    pct_mt = 100 * np.asarray(X[:, mt].sum(axis=1)).ravel() / total
    kept = (n_genes >= MIN_GENES) & (n_genes < MAX_GENES) & (pct_mt < MAX_PCT_MT)
    return n_genes, total, pct_mt, kept


@pytest.fixture(scope="module")
def atlas():
    return synthetic(3000, difficulty="overlapping", seed=0)


def test_same_seed_gives_bitwise_identical_atlas_and_other_seeds_differ():
    # 4500 cells span three of the generator's row blocks.
    a = synthetic(4500, n_genes=300, n_types=5, difficulty="trajectory", seed=7)
    b = synthetic(4500, n_genes=300, n_types=5, difficulty="trajectory", seed=7)
    c = synthetic(4500, n_genes=300, n_types=5, difficulty="trajectory", seed=8)
    for name in ("data", "indices", "indptr"):
        np.testing.assert_array_equal(getattr(a.X, name), getattr(b.X, name))
    pd.testing.assert_frame_equal(a.obs, b.obs)
    assert list(a.var_names) == list(b.var_names)
    assert (a.X != c.X).nnz > 0.5 * a.X.nnz
    assert not a.obs["cell_type"].equals(c.obs["cell_type"])


def test_counts_are_csr_float32_integers_with_sorted_indices(atlas):
    X = atlas.X
    assert atlas.shape == (3000, 2000)
    assert isinstance(X, sp.csr_matrix) and X.dtype == np.float32
    assert np.array_equal(X.data, np.round(X.data)) and X.data.min() >= 1  # no stored zeros
    # Sorted, duplicate-free column indices within every row.
    steps = np.diff(X.indices.astype(np.int64))
    row_starts = X.indptr[1:-1]
    inner = np.ones(steps.size, dtype=bool)
    inner[row_starts[(row_starts > 0) & (row_starts < X.nnz)] - 1] = False
    assert (steps[inner] > 0).all()
    assert X.has_sorted_indices
    assert atlas.var_names.is_unique and atlas.obs_names.is_unique
    assert atlas.var_names[:13].str.startswith("MT-").all()
    assert not atlas.var_names[13:].str.startswith("MT-").any()


def test_truth_columns_have_types_flags_and_pseudotime(atlas):
    obs = atlas.obs
    assert isinstance(obs["cell_type"].dtype, pd.CategoricalDtype)
    assert list(obs["cell_type"].cat.categories) == [f"type_{t}" for t in range(8)]
    assert obs["cell_type"].value_counts().min() > 0.02 * atlas.n_obs  # no vanishing type
    assert obs["is_doublet"].dtype == bool and obs["is_low_quality"].dtype == bool
    assert obs["is_doublet"].sum() == 120 and obs["is_low_quality"].sum() == 90
    assert not (obs["is_doublet"] & obs["is_low_quality"]).any()
    t = obs["pseudotime"].to_numpy()
    on = ~np.isnan(t)
    assert 0.08 < on.mean() < 0.16 and ((t[on] >= 0) & (t[on] <= 1)).all()
    # Lineage cells are labelled by the nearer end.
    start, end = atlas.uns["synthetic"]["lineage"]
    labels = obs["cell_type"].to_numpy()[on]
    assert (labels[t[on] < 0.5] == start).all() and (labels[t[on] >= 0.5] == end).all()


def test_library_sizes_mt_fraction_and_genes_detected_are_realistic(atlas):
    n_genes, total, pct_mt, kept = _qc(atlas)
    healthy = ~(atlas.obs["is_doublet"] | atlas.obs["is_low_quality"]).to_numpy()
    assert 2000 < np.median(total[healthy]) < 5000
    assert 2 < np.median(pct_mt[healthy]) < 4
    assert np.mean((n_genes[healthy] >= MIN_GENES) & (n_genes[healthy] < MAX_GENES)) > 0.99
    assert kept[healthy].mean() > 0.98  # QC spares healthy cells


def test_qc_removes_damaged_cells_and_doublets_detect_more_genes(atlas):
    n_genes, _, pct_mt, kept = _qc(atlas)
    lq = atlas.obs["is_low_quality"].to_numpy()
    dbl = atlas.obs["is_doublet"].to_numpy()
    healthy = ~(lq | dbl)
    assert (~kept[lq]).mean() > 0.95
    assert (pct_mt[lq] >= MAX_PCT_MT).mean() > 0.95
    assert np.median(n_genes[dbl]) > 1.3 * np.median(n_genes[healthy])


def test_qc_gene_cut_removes_most_doublets_when_genes_allow_it():
    # n_genes_by_counts < 2500 can only bite when well over 2500 genes exist.
    adata = synthetic(2000, n_genes=16000, difficulty="overlapping", seed=1)
    _, _, _, kept = _qc(adata)
    dbl = adata.obs["is_doublet"].to_numpy()
    healthy = ~(dbl | adata.obs["is_low_quality"].to_numpy())
    assert (~kept[dbl]).mean() > 0.6  # measured 0.75 (seed 1)
    assert kept[healthy].mean() > 0.85  # measured 0.92: the cut also takes the richest cells


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"difficulty": "easy"}, "difficulty must be one of"),
        ({"n_genes": 50}, "n_genes must be at least 100"),
        ({"n_types": 1}, "n_types must be at least 2"),
        ({"doublet_rate": 0.6}, "doublet_rate must be in"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthetic(100, **kwargs)


def test_scanpy_tutorial_pipeline_recovers_overlapping_types_only_partly(atlas):
    from sklearn.metrics import adjusted_rand_score

    cfg = gpu_sc.PipelineConfig.from_dict(
        {name: {"enabled": False} for name in ("paga", "umap", "tsne", "rank_genes_groups")}
    )
    out = gpu_sc.pipeline(atlas, cfg, backend="scanpy", copy=True)
    assert out.obs["is_low_quality"].sum() <= 0.05 * atlas.obs["is_low_quality"].sum()
    assert 200 < out.n_vars < 1500  # HVGs pass the tutorial's seurat thresholds
    ari = adjusted_rand_score(out.obs["cell_type"], out.obs["leiden"])
    assert 0.6 <= ari <= 0.95


@pytest.mark.slow
def test_generating_200k_cells_finishes():
    adata = synthetic(200_000, seed=3)
    assert adata.shape == (200_000, 2000)
    assert 500 < adata.X.nnz / adata.n_obs < 1200


def test_negative_binomial_sampler_matches_mean_and_variance_on_both_paths():
    # Means below and above the switch from the inverse-CDF walk to gamma-Poisson draws,
    # and doublet rows that add a partner row's draw.
    import importlib

    gen = importlib.import_module("gpu_sc.datasets.synthetic")
    mu_cols = np.array([0.05, 0.5, 3.0, 7.9, 8.1, 40.0], dtype=np.float32)
    theta = np.array([0.5, 2.0, 4.0, 10.0, 4.0, 20.0], dtype=np.float32)
    n_out, n_partner = 20000, 10000
    mu = np.tile(mu_cols, (n_out + n_partner, 1))
    partner = np.full(n_out, -1, dtype=np.int64)
    partner[:n_partner] = n_out + np.arange(n_partner)  # the first half are doublets
    work = gen._BlockBuffers(n_out, mu_cols.size)
    counts, indices, row_nnz = gen._block_counts(np.random.default_rng(0), mu, theta, partner, work)
    indptr = np.concatenate([[0], np.cumsum(row_nnz)])
    X = sp.csr_matrix((counts, indices, indptr), shape=(n_out, mu_cols.size)).toarray()
    assert counts.min() >= 1
    single, double = X[n_partner:], X[:n_partner]
    var = mu_cols + mu_cols**2 / theta
    for sample, scale in ((single, 1), (double, 2)):
        se = np.sqrt(scale * var / sample.shape[0])
        assert (np.abs(sample.mean(axis=0) - scale * mu_cols) < 5 * se).all()
        np.testing.assert_allclose(sample.var(axis=0), scale * var, rtol=0.12)
