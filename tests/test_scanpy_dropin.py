"""What scanpy accepts, gpu_sc accepts (issue 19): bare matrices, scanpy's deprecated call
forms, records that leave the AnnData as scanpy leaves it, and results where scanpy's rule
differs from a shortcut (HVG's expressed genes, NaN in score_genes, empty input)."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from anndata.tests.helpers import assert_equal

import gpu_sc
from gpu_sc.dispatch.registry import FallbackError
from gpu_sc.provenance import last as last_record

FORMATS = {"dense": np.asarray, "csr": sp.csr_matrix, "csc": sp.csc_matrix}


def _counts(n_obs=120, n_vars=60, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).poisson(1.0, (n_obs, n_vars)).astype(np.float32)


def _dense(x) -> np.ndarray:
    return x.toarray() if sp.issparse(x) else np.asarray(x)


# ---------------------------------------------------------------------------------------------
# bare matrices


@pytest.mark.parametrize("fmt", FORMATS)
def test_filter_cells_on_bare_matrix_returns_mask_and_counts_like_scanpy(fmt):
    x = _counts()
    for kw in ({"min_genes": 40}, {"min_counts": 60}, {"max_genes": 45}):
        mask, number = gpu_sc.pp.filter_cells(FORMATS[fmt](x), **kw, backend="numpy")
        assert last_record()["backend"] == "numpy"
        want_mask, want_number = sc.pp.filter_cells(FORMATS[fmt](x), **kw)
        np.testing.assert_array_equal(mask, want_mask)
        np.testing.assert_array_equal(number, want_number)
        assert number.dtype == want_number.dtype


@pytest.mark.parametrize("fmt", FORMATS)
def test_filter_genes_on_bare_matrix_returns_mask_and_numbers_like_scanpy(fmt):
    x = _counts()
    for kw in ({"min_cells": 70}, {"min_counts": 120}):
        mask, number = gpu_sc.pp.filter_genes(FORMATS[fmt](x), **kw, backend="numpy")
        want_mask, want_number = sc.pp.filter_genes(FORMATS[fmt](x), **kw)
        np.testing.assert_array_equal(mask, want_mask)
        np.testing.assert_array_equal(number, want_number)
        assert number.dtype == want_number.dtype


@pytest.mark.parametrize("fmt", FORMATS)
def test_log1p_on_bare_matrix_transforms_in_place_and_returns_it_like_scanpy(fmt):
    x, ref = FORMATS[fmt](_counts()), FORMATS[fmt](_counts())
    out = gpu_sc.pp.log1p(x, backend="numpy")
    want = sc.pp.log1p(ref)
    assert last_record()["backend"] == "numpy"
    assert out is x and want is ref  # scanpy transforms a float matrix in place
    np.testing.assert_allclose(_dense(out), _dense(want), rtol=1e-6)
    copied = gpu_sc.pp.log1p(FORMATS[fmt](_counts()), base=2, copy=True, backend="numpy")
    np.testing.assert_allclose(_dense(copied), np.log1p(_counts()) / np.log(2), rtol=1e-6)


def test_log1p_of_an_integer_array_returns_a_float_copy_like_scanpy():
    x = _counts().astype(np.int64)
    out = gpu_sc.pp.log1p(x, backend="numpy")
    want = sc.pp.log1p(x.copy())
    assert out.dtype == want.dtype == np.float64 and x.dtype == np.int64
    np.testing.assert_allclose(out, want, rtol=1e-12)


def test_scale_on_bare_array_returns_the_scaled_array_like_scanpy():
    x, ref = np.log1p(_counts()), np.log1p(_counts())
    out = gpu_sc.pp.scale(x, max_value=2.5, backend="numpy")
    want = sc.pp.scale(ref, max_value=2.5)
    assert last_record()["backend"] == "numpy"
    assert out is x and want is ref
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)


def test_scale_on_bare_array_mask_obs_runs_on_the_engine_and_array_only_args_on_scanpy():
    # mask_obs (a boolean array) is honoured by the engine's array form; the fallback for
    # arguments only scanpy's array function takes (return_mean_std) once passed the AnnData
    # form's layer/obsm on to scanpy's scale_array: it calls it with the caller's arguments
    x = np.log1p(_counts())
    mask = np.arange(x.shape[0]) % 3 == 0
    with gpu_sc.settings.override(strict=True):  # no fallback
        out = gpu_sc.pp.scale(x.copy(), mask_obs=mask, backend="numpy")
    np.testing.assert_allclose(out, sc.pp.scale(x.copy(), mask_obs=mask), rtol=1e-6)
    assert last_record()["backend"] == "numpy"
    got, mean, std = gpu_sc.pp.scale(x.copy(), return_mean_std=True, backend="numpy")
    want, want_mean, want_std = sc.pp.scale(x.copy(), return_mean_std=True)
    rec = last_record()
    assert rec["backend"] == "scanpy" and "scanpy's array function" in rec["fallback_reason"]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(mean, want_mean, rtol=1e-6)
    with (
        gpu_sc.settings.override(strict=True),
        pytest.raises(FallbackError, match="arguments only scanpy's array function takes"),
    ):
        gpu_sc.pp.scale(x.copy(), return_mean_std=True, backend="numpy")


@pytest.mark.parametrize("fmt", ["dense", "csr"])
def test_pca_on_bare_matrix_returns_x_pca_and_with_return_info_the_tuple_like_scanpy(fmt):
    x = np.log1p(_counts(150, 40))
    got = gpu_sc.pp.pca(FORMATS[fmt](x), n_comps=5, backend="numpy")
    want = sc.pp.pca(FORMATS[fmt](x), n_comps=5, svd_solver="arpack")
    assert isinstance(got, np.ndarray) and got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(np.abs(got), np.abs(want), atol=1e-4)
    info = gpu_sc.pp.pca(FORMATS[fmt](x), n_comps=5, return_info=True, backend="numpy")
    want_info = sc.pp.pca(FORMATS[fmt](x), n_comps=5, svd_solver="arpack", return_info=True)
    assert len(info) == len(want_info) == 4
    for a, b in zip(info, want_info, strict=True):  # X_pca, components, ratio, variance
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(np.abs(a), np.abs(b), atol=1e-4)


def test_bare_dask_array_gets_scanpys_lazy_result():
    da = pytest.importorskip("dask.array")
    x = _counts()
    mask, number = gpu_sc.pp.filter_cells(
        da.from_array(x, chunks=(40, 60)), min_genes=40, backend="scanpy"
    )
    assert isinstance(mask, da.Array)
    want_mask, _ = sc.pp.filter_cells(x, min_genes=40)
    np.testing.assert_array_equal(mask.compute(), want_mask)
    np.testing.assert_array_equal(number.compute(), sc.pp.filter_cells(x, min_genes=40)[1])


def test_anndata_only_step_on_bare_array_raises_scanpys_error():
    with pytest.raises(AttributeError) as want:
        sc.pp.normalize_total(_counts())
    with pytest.raises(AttributeError) as got:
        gpu_sc.pp.normalize_total(_counts(), backend="numpy")
    assert str(got.value) == str(want.value)


# ---------------------------------------------------------------------------------------------
# scanpy's deprecated call forms


def test_log1p_X_keyword_is_accepted_with_scanpys_future_warning():
    with pytest.warns(FutureWarning, match="argument `X` was renamed to `data`") as got:
        out = gpu_sc.pp.log1p(X=_counts(), backend="numpy")
    with pytest.warns(FutureWarning) as want:
        ref = sc.pp.log1p(X=_counts())
    assert [str(w.message) for w in got] == [str(w.message) for w in want]
    np.testing.assert_allclose(out, ref, rtol=1e-6)


def test_formerly_positional_argument_warns_and_works_as_in_scanpy():
    x = np.log1p(_counts())
    with pytest.warns(FutureWarning, match="no longer positional") as got:
        out = gpu_sc.pp.scale(x.copy(), False, backend="numpy")  # zero_center=False
    with pytest.warns(FutureWarning) as want:
        ref = sc.pp.scale(x.copy(), False)
    assert [str(w.message) for w in got] == [str(w.message) for w in want]
    np.testing.assert_allclose(out, ref, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# records


def _pp_calls(adata, backend):
    gpu_sc.pp.filter_genes(adata, min_cells=1, backend=backend)
    gpu_sc.pp.normalize_total(adata, target_sum=1e4, backend=backend)
    gpu_sc.pp.log1p(adata, backend=backend)
    gpu_sc.pp.highly_variable_genes(adata, n_top_genes=20, backend=backend)
    gpu_sc.pp.pca(adata, n_comps=5, backend=backend)


def test_two_identical_calls_give_equal_anndata():
    one, two = ad.AnnData(_counts()), ad.AnnData(_counts())
    _pp_calls(one, "numpy")
    _pp_calls(two, "numpy")
    assert_equal(one, two)
    assert "gpu_sc" not in one.uns
    assert last_record(two)["step"] == "pca" and last_record(two)["seconds"] >= 0
    assert [r["step"] for r in gpu_sc.provenance.history(one)] == [
        "filter_genes",
        "normalize_total",
        "log1p",
        "highly_variable_genes",
        "pca",
    ]


def test_single_step_output_keys_are_scanpys():
    ours, ref = ad.AnnData(_counts()), ad.AnnData(_counts())
    _pp_calls(ours, "numpy")
    sc.pp.filter_genes(ref, min_cells=1)
    sc.pp.normalize_total(ref, target_sum=1e4)
    sc.pp.log1p(ref)
    sc.pp.highly_variable_genes(ref, n_top_genes=20)
    sc.pp.pca(ref, n_comps=5)
    assert set(ours.uns) == set(ref.uns)
    for name in ("obs", "var", "obsm", "varm", "layers", "obsp"):
        assert set(getattr(ours, name).keys()) == set(getattr(ref, name).keys()), name


def test_record_steps_setting_writes_untimed_records_that_keep_calls_equal():
    one, two = ad.AnnData(_counts()), ad.AnnData(_counts())
    with gpu_sc.settings.override(record_steps=True):
        _pp_calls(one, "numpy")
        _pp_calls(two, "numpy")
    assert_equal(one, two)
    rows = gpu_sc.provenance.provenance(one)
    assert [r["step"] for r in rows][-1] == "pca" and all(np.isnan(r["seconds"]) for r in rows)


def test_pipeline_still_records_every_step_with_timings():
    out = gpu_sc.pipeline(
        gpu_sc.datasets.synthetic(200, 300, seed=1),
        {
            "tsne": {"enabled": False},
            "umap": {"enabled": False},
            "paga": {"enabled": False},
            "rank_genes_groups": {"enabled": False},
            "hvg": {"n_top_genes": 100},
        },
        backend="numpy",
        copy=True,
    )
    rows = gpu_sc.provenance.provenance(out)
    assert {"filter_cells", "log1p", "pca", "leiden"} <= {r["step"] for r in rows}
    assert all(r["seconds"] >= 0 for r in rows)


def test_gpu_sc_provenance_is_reachable_from_the_package():
    import importlib

    pkg = importlib.import_module("gpu_sc")
    assert pkg.provenance.history is gpu_sc.dispatch.provenance.history
    assert callable(pkg.provenance.last) and callable(pkg.provenance.recording)


# ---------------------------------------------------------------------------------------------
# results as scanpy's


@pytest.mark.parametrize("fmt", ["dense", "csr"])
def test_hvg_batches_count_values_above_zero_as_expressed_like_scanpy(fmt):
    # A gene whose values in one batch are all zero or negative is unexpressed there: scanpy
    # drops it from that batch (filter_genes(min_cells=1) counts values > 0, not nonzeros).
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (300, 200))
    x[rng.random(x.shape) < 0.5] = 0
    batch = rng.integers(0, 3, 300)
    block = np.ix_(batch == 0, np.arange(40))
    x[block] = -np.abs(x[block])
    adata = ad.AnnData(FORMATS[fmt](x))
    adata.obs["b"] = pd.Categorical(batch.astype(str))
    ref, ours = adata.copy(), adata.copy()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "invalid value encountered in log", RuntimeWarning)
        sc.pp.highly_variable_genes(ref, batch_key="b")
        gpu_sc.pp.highly_variable_genes(ours, batch_key="b", backend="numpy")
    assert last_record(ours)["backend"] == "numpy"
    np.testing.assert_array_equal(ours.var["highly_variable"], ref.var["highly_variable"])
    np.testing.assert_array_equal(
        ours.var["highly_variable_nbatches"], ref.var["highly_variable_nbatches"]
    )
    np.testing.assert_allclose(
        ours.var["dispersions_norm"], ref.var["dispersions_norm"], rtol=1e-6, equal_nan=True
    )


@pytest.mark.parametrize("fmt", ["dense", "csr"])
def test_score_genes_computes_with_nan_like_scanpy(fmt):
    x = _counts(100, 60).astype(np.float64)
    x[3, 5] = x[10, 1] = np.nan
    adata = ad.AnnData(FORMATS[fmt](x))
    adata.var_names = [f"g{i}" for i in range(60)]
    ref, ours = adata.copy(), adata.copy()
    sc.tl.score_genes(ref, ["g1", "g5", "g7"], ctrl_size=10, n_bins=5)
    gpu_sc.tl.score_genes(ours, ["g1", "g5", "g7"], ctrl_size=10, n_bins=5, backend="numpy")
    assert last_record(ours)["backend"] == "numpy"
    np.testing.assert_allclose(ours.obs["score"], ref.obs["score"], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", [(0, 5), (4, 0)])
def test_log1p_on_empty_anndata_works_like_scanpy(shape):
    ours, ref = ad.AnnData(np.zeros(shape, np.float32)), ad.AnnData(np.zeros(shape, np.float32))
    gpu_sc.pp.log1p(ours, backend="numpy")
    sc.pp.log1p(ref)
    assert_equal(ours, ref)


# ---------------------------------------------------------------------------------------------
# scanpy's warnings and argument errors, when the engine computes


def _log_x(n_obs=120, n_vars=60):
    return np.log1p(_counts(n_obs, n_vars))


def _with_pca():
    a = ad.AnnData(_log_x())
    sc.pp.pca(a, n_comps=10)
    return a


def _with_neighbors():
    a = _with_pca()
    sc.pp.neighbors(a)
    return a


_SAME_AS_SCANPY = {
    "pca_ignored_svd_solver": lambda m, kw: m.pp.pca(
        ad.AnnData(_log_x()), n_comps=5, svd_solver="lobpcg", **kw
    ),
    "pca_lobpcg_on_sparse": lambda m, kw: m.pp.pca(
        ad.AnnData(sp.csr_matrix(_log_x())), n_comps=5, svd_solver="lobpcg", **kw
    ),
    "hvg_cutoffs_ignored_with_n_top_genes": lambda m, kw: m.pp.highly_variable_genes(
        ad.AnnData(_log_x()), n_top_genes=10, min_mean=0.1, **kw
    ),
    "scale_on_a_view": lambda m, kw: m.pp.scale(ad.AnnData(_log_x())[:50], **kw),
    "log1p_on_a_view": lambda m, kw: m.pp.log1p(ad.AnnData(_counts())[:50], **kw),
    "normalize_total_on_a_view": lambda m, kw: m.pp.normalize_total(
        ad.AnnData(_counts())[:50], **kw
    ),
    "tsne_n_jobs": lambda m, kw: m.tl.tsne(_with_pca(), n_jobs=2, **kw),
    "normalize_total_bad_max_fraction": lambda m, kw: m.pp.normalize_total(
        ad.AnnData(_counts()), exclude_highly_expressed=True, max_fraction=2, **kw
    ),
    "leiden_igraph_directed": lambda m, kw: m.tl.leiden(
        _with_neighbors(), flavor="igraph", directed=True, **kw
    ),
}


def _outcome(call):
    """The warnings a call emits ({(category, text)}) and the exception it raises."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            call()
        except Exception as exc:  # compared with scanpy's below
            error = (type(exc), str(exc))
        else:
            error = None
    return {(w.category, str(w.message)) for w in caught}, error


@pytest.mark.parametrize("case", _SAME_AS_SCANPY)
def test_engine_steps_warn_and_raise_as_scanpy(case):
    call = _SAME_AS_SCANPY[case]
    theirs, their_error = _outcome(lambda: call(sc, {}))
    ours, our_error = _outcome(lambda: call(gpu_sc, {"backend": "numpy"}))
    assert our_error == their_error
    if their_error is None:  # the engine computed it
        assert last_record()["backend"] == "numpy"
    # scanpy's own warnings for the arguments (not those of its solvers' iterations)
    theirs = {(c, t) for c, t in theirs if "accuracies" not in t}
    assert (theirs or their_error) and theirs <= ours, (theirs, ours)


def test_a_call_scanpys_signature_rejects_raises_scanpys_type_error():
    with pytest.raises(TypeError) as want:
        sc.pp.log1p(ad.AnnData(_counts()), not_a_parameter=1)
    with pytest.raises(TypeError) as got:
        gpu_sc.pp.log1p(ad.AnnData(_counts()), not_a_parameter=1, backend="numpy")
    assert str(got.value) == str(want.value)


def test_pca_with_too_many_components_raises_scanpys_value_error_text():
    # scanpy's own test (test_pca_shapes) matches scikit-learn's message
    with pytest.raises(
        ValueError, match=r"n_components=100 must be between 1 and.*20 with svd_solver='arpack'"
    ):
        gpu_sc.pp.pca(
            ad.AnnData(np.random.default_rng(0).normal(size=(20, 30))), n_comps=100, backend="numpy"
        )
