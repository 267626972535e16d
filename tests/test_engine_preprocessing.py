"""Engine preprocessing (QC, filtering, normalize, log1p, HVG, regress_out, scale, PCA) against
scanpy on the real PBMC3k and on a synthetic atlas; chunked against unchunked; out-of-memory
retry and fallback.

Reference results come from scanpy itself (``backend="scanpy"``), computed once per module.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp

import gpu_sc
from gpu_sc import pp
from gpu_sc._scanpy_compat import engine_gap
from gpu_sc.provenance import last as last_record

BACKENDS = ["numpy", pytest.param("cupy", marks=pytest.mark.gpu)]

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


def max_rel(a, b) -> float:
    """max |a - b| / max |b| (NaNs in the same places ignored)."""
    a = a.toarray() if sp.issparse(a) else np.asarray(a)
    b = b.toarray() if sp.issparse(b) else np.asarray(b)
    assert a.shape == b.shape
    a, b = a.astype(np.float64), b.astype(np.float64)
    assert np.array_equal(np.isnan(a), np.isnan(b))
    return float(np.nanmax(np.abs(a - b)) / max(np.nanmax(np.abs(b)), 1e-300))


def last_step(adata) -> dict:
    return last_record(adata)


def assert_ran_on(adata, backend: str) -> None:
    step = last_step(adata)
    assert step["backend"] == backend, step["fallback_reason"]


def assert_frames_match(got: pd.DataFrame, want: pd.DataFrame, rtol: float = 1e-6) -> None:
    assert list(got.columns) == list(want.columns)
    for col in want.columns:
        assert got[col].dtype == want[col].dtype, col
        if want[col].dtype.kind in "fiu":
            assert max_rel(got[col], want[col]) <= rtol, col
        else:
            assert (got[col].to_numpy() == want[col].to_numpy()).all(), col


# ---------------------------------------------------------------------------------------------
# data


def _tutorial_qc(adata):
    """filter_cells(200), filter_genes(3), mt QC metrics (scanpy)."""
    sc.pp.filter_cells(adata, min_genes=200)
    sc.pp.filter_genes(adata, min_cells=3)
    adata.var["mt"] = adata.var_names.str.startswith("MT-")
    sc.pp.calculate_qc_metrics(adata, qc_vars=["mt"], percent_top=None, log1p=False, inplace=True)
    return adata


@pytest.fixture(scope="module")
def counts(pbmc3k_raw):
    """PBMC3k after the tutorial's cell/gene filters and QC cut (raw counts, CSC float32)."""
    a = _tutorial_qc(pbmc3k_raw.copy())
    return a[(a.obs.n_genes_by_counts < 2500) & (a.obs.pct_counts_mt < 5), :].copy()


@pytest.fixture(scope="module")
def logged(counts):
    """PBMC3k normalised to 1e4 and logged (scanpy)."""
    a = counts.copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    return a


@pytest.fixture(scope="module")
def tutorial_hvg(logged):
    """Logged PBMC3k restricted to the tutorial's highly variable genes, raw kept (scanpy)."""
    a = logged.copy()
    sc.pp.highly_variable_genes(a, min_mean=0.0125, max_mean=3, min_disp=0.5)
    a.raw = a
    return a[:, a.var.highly_variable].copy()


@pytest.fixture(scope="module")
def scaled(tutorial_hvg):
    """The tutorial's dense scaled matrix (regress_out + scale(max_value=10), scanpy)."""
    a = tutorial_hvg.copy()
    sc.pp.regress_out(a, ["total_counts", "pct_counts_mt"])
    sc.pp.scale(a, max_value=10)
    return a


@pytest.fixture(scope="module")
def atlas():
    """A synthetic atlas of raw counts with a batch column, after light filtering."""
    a = gpu_sc.datasets.synthetic(3000, n_genes=1500, n_types=6, difficulty="overlapping", seed=0)
    a.X = sp.csr_matrix(a.X)
    sc.pp.filter_genes(a, min_cells=3)
    sc.pp.filter_cells(a, min_genes=1)
    a.obs["batch"] = pd.Categorical(np.where(np.arange(a.n_obs) % 3 == 0, "b0", "b1"))
    return a


def both(step, adata, backend, *args, **kwargs):
    """Run ``step`` on copies with ``backend`` and with scanpy; return (ours, scanpy's) data
    and the results."""
    ours, ref = adata.copy(), adata.copy()
    got = step(ours, *args, backend=backend, **kwargs)
    want = step(ref, *args, backend="scanpy", **kwargs)
    assert_ran_on(ours, backend)
    return ours, ref, got, want


# ---------------------------------------------------------------------------------------------
# QC and filtering


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dataset", ["pbmc3k", "atlas"])
def test_qc_metrics_equal_scanpy_with_same_dtypes(backend, dataset, pbmc3k_raw, atlas):
    adata = pbmc3k_raw.copy() if dataset == "pbmc3k" else atlas.copy()
    adata.var["mt"] = adata.var_names.str.startswith("MT-")
    ours, ref, _, _ = both(pp.calculate_qc_metrics, adata, backend, qc_vars=["mt"], inplace=True)
    assert_frames_match(ours.obs, ref.obs)
    assert_frames_match(ours.var, ref.var)


@pytest.mark.parametrize("backend", BACKENDS)
def test_qc_metrics_not_inplace_returns_scanpy_frames(backend, atlas):
    adata = atlas.copy()
    adata.var["mt"] = adata.var_names.str.startswith("MT-")
    got = pp.calculate_qc_metrics(adata, qc_vars="mt", percent_top=(5, 20), backend=backend)
    want = sc.pp.calculate_qc_metrics(adata.copy(), qc_vars="mt", percent_top=(5, 20))
    assert_frames_match(got[0], want[0])
    assert_frames_match(got[1], want[1])
    assert "total_counts" not in adata.obs  # not inplace: adata untouched


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("step", "kwargs", "column"),
    [
        ("filter_cells", {"min_genes": 200}, "n_genes"),
        ("filter_cells", {"max_counts": 4000}, "n_counts"),
        ("filter_genes", {"min_cells": 3}, "n_cells"),
        ("filter_genes", {"min_counts": 10}, "n_counts"),
    ],
)
def test_filters_keep_the_same_cells_and_genes_as_scanpy(backend, step, kwargs, column, pbmc3k):
    ours, ref, _, _ = both(getattr(pp, step), pbmc3k, backend, **kwargs)
    assert ours.shape == ref.shape
    assert (ours.obs_names == ref.obs_names).all() and (ours.var_names == ref.var_names).all()
    frame = "obs" if step == "filter_cells" else "var"
    got, want = getattr(ours, frame)[column], getattr(ref, frame)[column]
    assert got.dtype == want.dtype
    assert np.array_equal(got.to_numpy(), want.to_numpy())
    assert max_rel(ours.X, ref.X) == 0


# ---------------------------------------------------------------------------------------------
# normalize_total, log1p


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "kwargs",
    [
        {"target_sum": 1e4},
        {"target_sum": None, "key_added": "norm_factor"},
        {"exclude_highly_expressed": True, "max_fraction": 0.02, "key_added": "nf"},
    ],
)
@pytest.mark.parametrize("dense", [False, True])
def test_normalize_total_equals_scanpy(backend, kwargs, dense, counts, atlas):
    # dense input: the synthetic atlas only (a dense PBMC3k adds time, not coverage)
    for data in (atlas,) if dense else (counts, atlas):
        adata = data.copy()
        if dense:
            adata.X = adata.X.toarray()
        ours, ref, _, _ = both(pp.normalize_total, adata, backend, **kwargs)
        assert type(ours.X) is type(ref.X) and ours.X.dtype == ref.X.dtype
        assert max_rel(ours.X, ref.X) <= 1e-6
        if "key_added" in kwargs:
            key = kwargs["key_added"]
            assert ours.obs[key].dtype == ref.obs[key].dtype
            assert max_rel(ours.obs[key], ref.obs[key]) <= 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("base", [None, 2])
def test_log1p_equals_scanpy_and_records_base(backend, base, logged):
    adata = logged.copy()
    adata.X = adata.X.expm1()  # normalised, not logged
    del adata.uns["log1p"]
    ours, ref, _, _ = both(pp.log1p, adata, backend, base=base)
    assert ours.X.dtype == ref.X.dtype == np.float32
    assert max_rel(ours.X, ref.X) <= 1e-6
    assert ours.uns["log1p"] == ref.uns["log1p"] == {"base": base}


# ---------------------------------------------------------------------------------------------
# highly variable genes


@pytest.mark.parametrize("backend", BACKENDS)
def test_hvg_seurat_selects_the_tutorials_1838_genes(backend, logged):
    ours, ref, _, _ = both(
        pp.highly_variable_genes, logged, backend, min_mean=0.0125, max_mean=3, min_disp=0.5
    )
    assert ours.var.highly_variable.sum() == 1838
    assert (ours.var.highly_variable == ref.var.highly_variable).all()
    assert_frames_match(ours.var, ref.var)
    assert ours.uns["hvg"] == ref.uns["hvg"] == {"flavor": "seurat"}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "kwargs",
    [
        {"flavor": "cell_ranger", "n_top_genes": 2000},
        {"flavor": "seurat", "n_top_genes": 1000},
        {"flavor": "seurat", "batch_key": "batch"},
        {"flavor": "cell_ranger", "n_top_genes": 1500, "batch_key": "batch"},
    ],
)
def test_hvg_dispersion_flavors_match_scanpy(backend, kwargs, logged):
    adata = logged.copy()
    adata.obs["batch"] = pd.Categorical(np.where(np.arange(adata.n_obs) % 3 == 0, "a", "b"))
    ours, ref, _, _ = both(pp.highly_variable_genes, adata, backend, **kwargs)
    assert (ours.var.highly_variable == ref.var.highly_variable).all()
    assert_frames_match(ours.var, ref.var)
    got = pp.highly_variable_genes(adata.copy(), backend=backend, inplace=False, **kwargs)
    want = sc.pp.highly_variable_genes(adata.copy(), inplace=False, **kwargs)
    assert (got.index == want.index).all()
    assert_frames_match(
        got.drop(columns="mean_bin", errors="ignore"),
        want.drop(columns="mean_bin", errors="ignore"),
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch_key", [None, "batch"])
@pytest.mark.parametrize("dataset", ["pbmc3k", "atlas"])
def test_hvg_seurat_v3_selects_the_same_2000_genes(backend, batch_key, dataset, counts, atlas):
    adata = counts.copy() if dataset == "pbmc3k" else atlas.copy()
    if dataset == "pbmc3k":
        adata.obs["batch"] = pd.Categorical(np.where(np.arange(adata.n_obs) % 3 == 0, "a", "b"))
    kwargs = dict(
        flavor="seurat_v3", n_top_genes=2000 if dataset == "pbmc3k" else 500, batch_key=batch_key
    )
    if engine_gap("highly_variable_genes", kwargs):  # scanpy >= 1.12 with a batch_key
        ours, ref = adata.copy(), adata.copy()
        pp.highly_variable_genes(ours, backend=backend, **kwargs)
        pp.highly_variable_genes(ref, backend="scanpy", **kwargs)
        assert "Welford" in last_step(ours)["fallback_reason"]
    else:
        ours, ref, _, _ = both(pp.highly_variable_genes, adata, backend, **kwargs)
    assert (ours.var.highly_variable == ref.var.highly_variable).all()
    assert_frames_match(ours.var, ref.var)


# ---------------------------------------------------------------------------------------------
# regress_out, scale


@pytest.mark.parametrize("backend", BACKENDS)
def test_regress_out_continuous_residuals_within_1e4(backend, tutorial_hvg):
    ours, ref, _, _ = both(pp.regress_out, tutorial_hvg, backend, ["total_counts", "pct_counts_mt"])
    assert type(ours.X) is type(ref.X) and ours.X.dtype == ref.X.dtype
    assert max_rel(ours.X, ref.X) <= 1e-4


@pytest.mark.parametrize("backend", BACKENDS)
def test_regress_out_categorical_residuals_within_1e4(backend, tutorial_hvg):
    adata = tutorial_hvg[:, :300].copy()
    adata.obs["group"] = pd.Categorical(np.arange(adata.n_obs) % 4).rename_categories(list("abcd"))
    ours, ref, _, _ = both(pp.regress_out, adata, backend, "group")
    assert ours.X.dtype == ref.X.dtype
    assert max_rel(ours.X, ref.X) <= 1e-4


@pytest.mark.parametrize("backend", BACKENDS)
def test_scale_dense_equals_scanpy(backend, tutorial_hvg):
    adata = tutorial_hvg.copy()
    adata.X = adata.X.toarray()
    ours, ref, _, _ = both(pp.scale, adata, backend, max_value=10)
    assert ours.X.dtype == ref.X.dtype
    assert max_rel(ours.X, ref.X) <= 1e-6
    for col in ("mean", "std"):
        assert ours.var[col].dtype == ref.var[col].dtype
        assert max_rel(ours.var[col], ref.var[col]) <= 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kwargs", [{}, {"max_value": 3}, {"zero_center": False, "max_value": 5}])
def test_scale_sparse_equals_scanpy(backend, kwargs, tutorial_hvg):
    ours, ref, _, _ = both(pp.scale, tutorial_hvg, backend, **kwargs)
    assert type(ours.X) is type(ref.X) and ours.X.dtype == ref.X.dtype
    assert max_rel(ours.X, ref.X) <= 1e-6
    assert max_rel(ours.var["std"], ref.var["std"]) <= 1e-6


# ---------------------------------------------------------------------------------------------
# PCA


def assert_pca_matches(ours, ref, n_check: int = 30) -> None:
    """Explained variance within 1e-4 relative; each of the first ``n_check`` components with
    correlation >= 0.9999 (same sign) in X_pca and in the loadings."""
    got, want = ours.uns["pca"], ref.uns["pca"]
    assert got["params"] == want["params"]
    for key in ("variance", "variance_ratio"):
        assert got[key].dtype == want[key].dtype
        assert np.max(np.abs(got[key] / want[key] - 1)) <= 1e-4, key
    assert ours.obsm["X_pca"].dtype == ref.obsm["X_pca"].dtype
    assert ours.varm["PCs"].dtype == ref.varm["PCs"].dtype
    corr = [
        np.corrcoef(ours.obsm["X_pca"][:, i], ref.obsm["X_pca"][:, i])[0, 1] for i in range(n_check)
    ]
    load = [
        np.corrcoef(ours.varm["PCs"][:, i], ref.varm["PCs"][:, i])[0, 1] for i in range(n_check)
    ]
    assert min(corr) >= 0.9999, corr
    assert min(load) >= 0.9999, load


@pytest.fixture(scope="module")
def scaled_pca_ref(scaled):
    ref = scaled.copy()
    sc.pp.pca(ref)
    return ref


@pytest.mark.parametrize("backend", BACKENDS)
def test_pca_dense_tutorial_matches_scanpy_signs_included(backend, scaled, scaled_pca_ref):
    ours = scaled.copy()
    pp.pca(ours, backend=backend)
    assert_ran_on(ours, backend)
    assert_pca_matches(ours, scaled_pca_ref)


@pytest.mark.parametrize("backend", BACKENDS)
def test_pca_sparse_input_matches_scanpy(backend, logged):
    adata = logged.copy()
    sc.pp.highly_variable_genes(adata, n_top_genes=800)
    ours, ref, _, _ = both(pp.pca, adata, backend, n_comps=30)
    assert sp.issparse(ours.X)  # implicit centring: X is left sparse
    assert_pca_matches(ours, ref)


def test_pca_randomized_solver_agrees_with_eigh(monkeypatch, logged):
    """Above EIGH_MAX_FEATURES the randomized subspace solver is used; it must reproduce the
    exact eigendecomposition on the leading components."""
    from gpu_sc.kernels import pca as pca_k

    adata = logged[:, :600].copy()
    exact = adata.copy()
    pp.pca(exact, n_comps=20, backend="numpy")
    monkeypatch.setattr(pca_k, "EIGH_MAX_FEATURES", 100)
    approx = adata.copy()
    pp.pca(approx, n_comps=20, backend="numpy")
    assert_ran_on(approx, "numpy")
    assert np.max(np.abs(approx.uns["pca"]["variance"] / exact.uns["pca"]["variance"] - 1)) < 1e-4
    for i in range(10):
        c = np.corrcoef(approx.obsm["X_pca"][:, i], exact.obsm["X_pca"][:, i])[0, 1]
        assert c >= 0.9999


@pytest.mark.parametrize("backend", BACKENDS)
def test_pca_random_state_seeds_the_lanczos_solver_like_scanpys_arpack(backend, scaled):
    """scanpy's default solver (ARPACK) starts from a random vector: the same seed gives the
    same bits, another seed other last bits of the same PCA. The engine's Lanczos does too
    (scanpy's test_pca_reproducible), converged to ~1e-13 of the exact eigendecomposition."""
    runs = {}
    for name, seed, solver in [("a", 42, None), ("b", 42, None), ("c", 0, None)]:
        runs[name] = scaled.copy()
        pp.pca(runs[name], dtype=np.float64, random_state=seed, svd_solver=solver, backend=backend)
        assert_ran_on(runs[name], backend)
    assert last_record(runs["a"])["engine"]["pca"] == {"solver": "lanczos (random_state=42)"}
    a, b, c = (runs[k].obsm["X_pca"] for k in "abc")
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert max_rel(a, c) <= 1e-10
    exact = scaled.copy()
    pp.pca(exact, dtype=np.float64, svd_solver="covariance_eigh", backend=backend)
    assert max_rel(a, exact.obsm["X_pca"]) <= 1e-10


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kwargs", [{"svd_solver": "covariance_eigh"}, {"chunked": True}])
def test_pca_is_seed_free_where_scanpys_solver_is(backend, kwargs, scaled):
    """covariance_eigh (and chunked=True, an incremental PCA) ignore random_state in scanpy;
    the engine then eigendecomposes the covariance exactly: every seed, the same bits."""
    a, c = scaled.copy(), scaled.copy()
    pp.pca(a, dtype=np.float64, random_state=42, backend=backend, **kwargs)
    pp.pca(c, dtype=np.float64, random_state=0, backend=backend, **kwargs)
    assert_ran_on(a, backend)
    assert last_record(a)["engine"]["pca"] == {"solver": "eigh"}
    assert np.array_equal(a.obsm["X_pca"], c.obsm["X_pca"])


def test_pca_lanczos_that_does_not_converge_is_replaced_by_eigh_and_recorded(monkeypatch, scaled):
    """CuPy's eigsh returns its last iterate instead of raising: the residual is checked, and
    an unconverged solve is replaced by the exact eigendecomposition, recorded as such."""
    from gpu_sc.kernels import pca as pca_k

    exact = scaled.copy()
    pp.pca(exact, svd_solver="covariance_eigh", backend="numpy")
    monkeypatch.setattr(pca_k, "LANCZOS_MAX_RESIDUAL", 0.0)
    got = scaled.copy()
    pp.pca(got, backend="numpy")
    assert_ran_on(got, "numpy")
    solver = last_record(got)["engine"]["pca"]["solver"]
    assert solver.startswith("eigh (Lanczos residual ") and solver.endswith("did not converge)")
    assert np.array_equal(got.obsm["X_pca"], exact.obsm["X_pca"])


def test_pca_with_too_few_features_for_a_lanczos_space_uses_eigh():
    """k components need a Krylov space of 2k + 1 vectors; below that the exact solver is used
    (as cheap), and the record says why."""
    rng = np.random.default_rng(0)
    a = sc.AnnData(rng.normal(size=(100, 12)).astype(np.float32))
    pp.pca(a, n_comps=6, backend="numpy")
    assert last_record(a)["engine"]["pca"] == {
        "solver": "eigh (12 features: too few for a Lanczos space)"
    }


# ---------------------------------------------------------------------------------------------
# chunked == unchunked


def run_engine(step: str, adata, backend: str, *, chunked: bool, chunk_rows: int, **kwargs):
    """Call the engine implementation of ``step`` directly with a chosen context."""
    from gpu_sc.dispatch import array_module
    from gpu_sc.dispatch.registry import (
        EngineContext,
        bind_scanpy_params,
        engine_impl,
        move_to_host,
    )

    scanpy_func = getattr(sc.pp, step)
    _, params = bind_scanpy_params(scanpy_func, (adata,), kwargs)
    ctx = EngineContext(am=array_module(backend), chunked=chunked, chunk_rows=chunk_rows)
    result = engine_impl(step, backend)(adata, ctx, **params)
    move_to_host(adata)
    return result


CHUNK_CASES = [
    ("calculate_qc_metrics", "counts", {"qc_vars": ["mt"], "inplace": True}),
    ("filter_cells", "counts", {"min_genes": 300}),
    ("filter_genes", "counts", {"min_cells": 10}),
    ("normalize_total", "counts", {"target_sum": None, "key_added": "nf"}),
    ("normalize_total", "counts", {"exclude_highly_expressed": True, "max_fraction": 0.02}),
    ("log1p", "logged", {}),
    ("highly_variable_genes", "logged", {"min_mean": 0.0125, "max_mean": 3, "min_disp": 0.5}),
    ("highly_variable_genes", "logged", {"flavor": "cell_ranger", "batch_key": "batch"}),
    ("highly_variable_genes", "counts", {"flavor": "seurat_v3", "batch_key": "batch"}),
    ("regress_out", "hvg", {"keys": ["total_counts", "pct_counts_mt"]}),
    ("regress_out", "hvg", {"keys": "batch"}),
    ("scale", "hvg", {"max_value": 10}),
    ("scale", "hvg", {"zero_center": False}),
    ("pca", "hvg300", {"n_comps": 20}),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("step", "data", "kwargs"), CHUNK_CASES)
def test_chunked_equals_unchunked(backend, step, data, kwargs, counts, logged, tutorial_hvg):
    sources = {"counts": counts, "logged": logged, "hvg": tutorial_hvg}
    if data == "hvg300":  # PCA: fewer features keep the eigendecomposition cheap on CPU
        source = tutorial_hvg[:, :300].copy()
        source.var["highly_variable"] = True
    else:
        source = sources[data].copy()
    source.var["mt"] = source.var_names.str.startswith("MT-")
    source.obs["batch"] = pd.Categorical(np.where(np.arange(source.n_obs) % 3 == 0, "a", "b"))
    whole, chunked = source.copy(), source.copy()
    run_engine(step, whole, backend, chunked=False, chunk_rows=97, **kwargs)
    run_engine(step, chunked, backend, chunked=True, chunk_rows=97, **kwargs)
    assert whole.shape == chunked.shape
    assert max_rel(chunked.X, whole.X) <= 1e-6
    for frame in ("obs", "var"):
        a, b = getattr(chunked, frame), getattr(whole, frame)
        assert list(a.columns) == list(b.columns)
        for col in b.columns:
            if b[col].dtype.kind in "fiu":
                assert max_rel(a[col], b[col]) <= 1e-9, col
            else:
                assert (a[col].to_numpy() == b[col].to_numpy()).all(), col
    for key in whole.obsm:
        assert max_rel(chunked.obsm[key], whole.obsm[key]) <= 1e-6


def test_big_host_matrix_streams_in_chunks_automatically(monkeypatch, counts):
    """A host matrix above settings.max_device_nnz is streamed in row blocks without the
    caller asking, and gives the unchunked result."""
    from gpu_sc.kernels import chunks

    seen = []
    real_iter = chunks.RowBlocks.__iter__

    def spy(self):
        for item in real_iter(self):
            seen.append(item[1] - item[0])
            yield item

    monkeypatch.setattr(chunks.RowBlocks, "__iter__", spy)
    whole = counts.copy()
    pp.normalize_total(whole, target_sum=1e4, backend="numpy")
    assert not seen
    streamed = counts.copy()
    with gpu_sc.settings.override(chunk_rows=97, max_device_nnz=1000):
        pp.normalize_total(streamed, target_sum=1e4, backend="numpy")
    assert seen and max(seen) == 97
    assert max_rel(streamed.X, whole.X) == 0


# ---------------------------------------------------------------------------------------------
# out-of-memory: chunked retry, then scanpy fallback with adata untouched


def test_out_of_memory_retries_chunked(monkeypatch, counts):
    from gpu_sc.kernels import normalize as norm_k

    real = norm_k.divide_rows
    calls = {"n": 0}

    def first_call_oom(am, x, factor):
        calls["n"] += 1
        if calls["n"] == 1:
            raise MemoryError("simulated device out of memory")
        return real(am, x, factor)

    monkeypatch.setattr(norm_k, "divide_rows", first_call_oom)
    adata = counts.copy()
    with gpu_sc.settings.override(chunk_rows=500):
        pp.normalize_total(adata, target_sum=1e4, backend="numpy")
    step = last_step(adata)
    assert step["backend"] == "numpy" and "retried in row chunks" in step["note"]
    ref = counts.copy()
    sc.pp.normalize_total(ref, target_sum=1e4)
    assert max_rel(adata.X, ref.X) == 0


def test_persistent_out_of_memory_falls_back_to_scanpy_with_adata_unchanged(monkeypatch, counts):
    from gpu_sc.dispatch import registry
    from gpu_sc.kernels import normalize as norm_k

    def always_oom(am, x, factor):
        raise MemoryError("simulated device out of memory")

    monkeypatch.setattr(norm_k, "divide_rows", always_oom)
    adata = counts.copy()
    before_x = adata.X.copy()
    before_obs = adata.obs.copy()
    seen_by_scanpy = {}
    real_run_step = registry.run_step

    def spy_run_step(step, adata_, params, *, scanpy_impl, **options):
        @functools.wraps(scanpy_impl)  # run_step reads scanpy's defaults through it
        def checked(a, **p):  # what scanpy receives after the engine gave up
            seen_by_scanpy["x_equal"] = (a.X != before_x).nnz == 0
            seen_by_scanpy["obs_equal"] = a.obs.equals(before_obs)
            return scanpy_impl(a, **p)

        return real_run_step(step, adata_, params, scanpy_impl=checked, **options)

    monkeypatch.setattr("gpu_sc.steps.run_step", spy_run_step)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.normalize_total(adata, target_sum=1e4, key_added="nf", backend="numpy")
    step = last_step(adata)
    assert step["backend"] == "scanpy"
    assert "MemoryError" in step["fallback_reason"]
    assert seen_by_scanpy == {"x_equal": True, "obs_equal": True}
    ref = counts.copy()
    sc.pp.normalize_total(ref, target_sum=1e4, key_added="nf")
    assert max_rel(adata.X, ref.X) == 0


def test_unsupported_parameter_falls_back_to_scanpy(logged):
    adata = logged.copy()
    pp.pca(adata, random_state=None, n_comps=10, backend="numpy")
    step = last_step(adata)
    assert step["backend"] == "scanpy" and "random_state" in step["fallback_reason"]
    assert adata.obsm["X_pca"].shape == (adata.n_obs, 10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_integer_counts_give_scanpys_dtypes(backend, atlas):
    """Integer matrices: normalize_total makes float32, log1p float64, QC sums int64."""
    adata = atlas.copy()
    adata.X = adata.X.astype(np.int32)
    adata.var["mt"] = adata.var_names.str.startswith("MT-")
    ours, ref, _, _ = both(pp.calculate_qc_metrics, adata, backend, qc_vars="mt", inplace=True)
    assert_frames_match(ours.obs, ref.obs)
    assert_frames_match(ours.var, ref.var)
    for step in (pp.normalize_total, pp.log1p):
        ours, ref, _, _ = both(step, adata, backend)
        assert ours.X.dtype == ref.X.dtype
        assert max_rel(ours.X, ref.X) <= 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
def test_string_batch_columns_are_sanitized_like_scanpy(backend, tutorial_hvg):
    """scanpy turns repeated-string obs columns into categoricals (regress_out, batched HVG);
    the engine does the same, after computing."""
    adata = tutorial_hvg[:, :200].copy()
    adata.obs["group"] = np.where(np.arange(adata.n_obs) % 2 == 0, "x", "y").astype(object)
    ours, ref, _, _ = both(pp.regress_out, adata, backend, "group")
    assert isinstance(ours.obs["group"].dtype, pd.CategoricalDtype)
    assert max_rel(ours.X, ref.X) <= 1e-4
    ours, ref, _, _ = both(
        pp.highly_variable_genes, adata, backend, batch_key="group", n_top_genes=50
    )
    assert (ours.var.highly_variable == ref.var.highly_variable).all()
    assert_frames_match(ours.obs, ref.obs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_results_are_bitwise_reproducible(backend, tutorial_hvg):
    """Same input, same backend: bitwise the same output (no order-dependent reductions)."""
    runs = []
    for _ in range(2):
        adata = tutorial_hvg.copy()
        pp.calculate_qc_metrics(adata, inplace=True, percent_top=(10,), backend=backend)
        pp.highly_variable_genes(adata, flavor="cell_ranger", n_top_genes=300, backend=backend)
        pp.scale(adata, max_value=10, backend=backend)
        pp.pca(adata, n_comps=10, backend=backend)
        runs.append(adata)
    a, b = runs
    assert np.array_equal(a.X, b.X)
    assert np.array_equal(a.obsm["X_pca"], b.obsm["X_pca"])
    assert a.obs.equals(b.obs) and a.var.equals(b.var)


@pytest.mark.parametrize("backend", BACKENDS)
def test_steps_on_a_view_write_like_scanpy(backend, counts):
    ours = counts[counts.obs.n_genes_by_counts < 2000]
    ref = ours.copy()
    assert ours.is_view
    pp.calculate_qc_metrics(ours, inplace=True, percent_top=None, backend=backend)
    sc.pp.calculate_qc_metrics(ref, inplace=True, percent_top=None)
    assert not ours.is_view
    assert_frames_match(ours.obs, ref.obs)
