"""Fault catalogue, inputs: every bad count matrix given to the pipeline or to a step either
fails with one line naming the problem and the remedy, or gives the correct result (a dtype or
layout the engine converts) with the conversion logged. No silent wrong result."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import scipy.sparse as sp

import gpu_sc
from gpu_sc.pipeline import InputError
from tests._faults import FAST, assert_one_line, same_result, small_counts


@pytest.fixture(scope="module")
def counts():
    return small_counts()


@pytest.fixture(scope="module")
def reference(counts):
    """The float32 CSR run every converted input must reproduce."""
    return gpu_sc.pipeline(counts, FAST, backend="numpy", copy=True)


# -- the pipeline's boundary: bad counts -----------------------------------------------------


def _with_X(X):
    def make(a):
        a.X = X(a) if callable(X) else X
        return a

    return make


def _set_value(value, fmt="csr"):
    def make(a):
        X = a.X.asformat(fmt).astype(np.float32)
        X.data[7] = value
        a.X = X
        return a

    return make


def _dense_value(value):
    def make(a):
        X = a.X.toarray()
        X[5, 3] = value
        a.X = X
        return a

    return make


def _rename(axis):
    def make(a):
        names = ["same"] * a.shape[0 if axis == "obs" else 1]
        if axis == "obs":
            a.obs_names = names
        else:
            a.var_names = names
        return a

    return make


PIPELINE_BAD = [
    ("empty_cells", lambda a: a[:0].copy(), None, ["empty", "0 cells"]),
    ("empty_genes", lambda a: a[:, :0].copy(), None, ["empty", "0 genes"]),
    ("all_zero", _with_X(lambda a: sp.csr_matrix(a.shape, dtype=np.float32)), None, ["all zeros"]),
    ("all_zero_dense", _with_X(lambda a: np.zeros(a.shape, dtype=np.float32)), None, ["all zeros"]),
    ("duplicate_cells", _rename("obs"), None, ["duplicate cell names", "obs_names_make_unique"]),
    (
        "duplicate_genes_make_unique_off",
        _rename("var"),
        {"var_names_make_unique": False},
        ["duplicate gene names", "var_names_make_unique"],
    ),
    ("negative", _set_value(-3.0), None, ["negative", "raw counts"]),
    ("negative_dense", _dense_value(-1.0), None, ["negative", "raw counts"]),
    (
        "float64_non_integer",
        _with_X(lambda a: a.X.astype(np.float64) * 0.37),
        None,
        ["non-integer", "raw counts"],
    ),
    ("nan_csr", _set_value(np.nan), None, ["NaN", "finite"]),
    ("inf_csr", _set_value(np.inf), None, ["infinite", "finite"]),
    ("nan_csc", _set_value(np.nan, "csc"), None, ["NaN", "finite"]),
    ("ninf_dense", _dense_value(-np.inf), None, ["infinite", "finite"]),
    ("bool_dtype", _with_X(lambda a: a.X.astype(bool)), None, ["non-numeric", "numbers"]),
    ("single_cell", lambda a: a[:1].copy(), None, ["no data left", "loosen"]),
    ("single_gene", lambda a: a[:, :1].copy(), None, ["no data left", "loosen"]),
    (
        "filters_remove_all",
        lambda a: a,
        {"filter_cells": {"min_genes": 10**6}},
        ["no data left", "cell and gene filters"],
    ),
    ("one_hvg_left", lambda a: a, {"hvg": {"n_top_genes": 1}}, ["pca", "at least 2", "genes"]),
    (
        "regress_keys_missing",
        lambda a: a,
        {"qc": {"enabled": False}},
        ["regress_out.keys", "enable qc"],
    ),
]


@pytest.mark.parametrize(
    "make,overrides,words", [c[1:] for c in PIPELINE_BAD], ids=[c[0] for c in PIPELINE_BAD]
)
def test_pipeline_rejects_bad_counts(counts, make, overrides, words):
    adata = make(counts.copy())
    before = adata.X.copy() if adata.X is not None else None
    cfg = {**FAST, **(overrides or {})}
    with pytest.raises(InputError) as err:
        gpu_sc.pipeline(adata, cfg, backend="numpy", copy=True)
    assert_one_line(err.value, *words)
    if before is not None and sp.issparse(before):
        assert (adata.X != before).nnz == 0 or np.isnan(before.data).any()  # input untouched


# -- the pipeline's boundary: dtypes and layouts that must give the float32 CSR result --------


def _as(dtype=None, fmt=None):
    def make(a):
        X = a.X
        if fmt == "dense":
            X = X.toarray()
        elif fmt is not None:
            X = X.asformat(fmt)
        if dtype is not None:
            X = X.astype(dtype)
        a.X = X
        return a

    return make


CONVERTED = [
    ("int64", _as(np.int64), None),
    ("int32", _as(np.int32), None),
    ("uint16", _as(np.uint16), None),
    ("float64_integer", _as(np.float64), None),
    ("csc", _as(fmt="csc"), None),
    ("dense", _as(fmt="dense"), None),
    ("dense_int64", _as(np.int64, "dense"), None),
    ("float16_dense", _as(np.float16, "dense"), "float16"),
]


@pytest.mark.parametrize("make,logged", [c[1:] for c in CONVERTED], ids=[c[0] for c in CONVERTED])
def test_pipeline_converted_inputs_give_the_float32_result(counts, reference, make, logged, caplog):
    adata = make(counts.copy())
    if logged == "float16":  # float16 rounds counts above 2048: the reference holds the same
        ref = counts.copy()
        ref.X = sp.csr_matrix(adata.X.astype(np.float32))
        reference = gpu_sc.pipeline(ref, FAST, backend="numpy", copy=True)
    with caplog.at_level(logging.WARNING, logger="gpu_sc"):
        res = gpu_sc.pipeline(adata, FAST, backend="numpy", copy=True)
    same_result(res, reference)
    if logged:
        assert any(logged in r.getMessage() and "float32" in r.getMessage() for r in caplog.records)
    assert res.X.dtype != np.float16


def test_pipeline_on_a_view_is_the_copy_s_result(counts):
    view = counts[:250]
    assert view.is_view
    res = gpu_sc.pipeline(view, FAST, backend="numpy", copy=True)
    ref = gpu_sc.pipeline(counts[:250].copy(), FAST, backend="numpy", copy=True)
    same_result(res, ref)


def test_pipeline_float16_on_scanpy_is_promoted_not_a_numba_error(counts, caplog):
    """scanpy's own path raised NotImplementedError: float16 inside numba; now float32."""
    cfg = {
        **FAST,
        "neighbors": {"enabled": False},
        "leiden": {"enabled": False},
        "rank_genes_groups": {"enabled": False},
        "regress_out": {"enabled": False},
    }
    a16 = counts.copy()
    a16.X = a16.X.toarray().astype(np.float16)
    with caplog.at_level(logging.WARNING, logger="gpu_sc"):
        res = gpu_sc.pipeline(a16, cfg, backend="scanpy", copy=True)
    ref = gpu_sc.pipeline(counts, cfg, backend="scanpy", copy=True)
    assert list(res.var_names) == list(ref.var_names)  # same HVG set
    np.testing.assert_allclose(
        np.abs(res.obsm["X_pca"][:, :5]), np.abs(ref.obsm["X_pca"][:, :5]), rtol=1e-3, atol=1e-3
    )
    assert any("float16" in r.getMessage() for r in caplog.records)


# -- the step API's boundary: NaN/Inf at every step that reads values -----------------------


@pytest.fixture(scope="module")
def lognorm(counts):
    a = counts.copy()
    a.layers["counts"] = a.X.copy()
    gpu_sc.pp.normalize_total(a, backend="numpy")
    gpu_sc.pp.log1p(a, backend="numpy")
    a.raw = a
    gpu_sc.pp.calculate_qc_metrics(a, backend="numpy", inplace=True, percent_top=None)
    gpu_sc.pp.pca(a, n_comps=10, backend="numpy")
    a.obs["group"] = (np.arange(a.n_obs) % 3).astype(str)
    a.obs["group"] = a.obs["group"].astype("category")
    return a


def _nan_X(a):
    a.X = a.X.toarray()
    a.X[4, 2] = np.nan


def _inf_X_sparse(a):
    a.X = a.X.copy()
    a.X.data[11] = np.inf


def _nan_pca(a):
    a.obsm["X_pca"] = a.obsm["X_pca"].copy()
    a.obsm["X_pca"][0, 0] = np.nan


def _inf_layer(a):
    a.layers["counts"] = a.layers["counts"].astype(np.float32)
    a.layers["counts"].data[0] = np.inf


def _nan_raw(a):
    raw = a.raw.to_adata()
    raw.X = raw.X.copy()
    raw.X.data[0] = np.nan
    a.raw = raw


STEP_NAN = [
    ("pca", gpu_sc.pp.pca, {"n_comps": 5}, _nan_X, "adata.X"),
    ("scale", gpu_sc.pp.scale, {}, _nan_X, "adata.X"),
    ("normalize_total", gpu_sc.pp.normalize_total, {}, _inf_X_sparse, "adata.X"),
    ("log1p", gpu_sc.pp.log1p, {}, _inf_X_sparse, "adata.X"),
    ("highly_variable_genes", gpu_sc.pp.highly_variable_genes, {}, _nan_X, "adata.X"),
    (
        "hvg_seurat_v3_layer",
        gpu_sc.pp.highly_variable_genes,
        {"flavor": "seurat_v3", "layer": "counts", "n_top_genes": 50},
        _inf_layer,
        "layers['counts']",
    ),
    ("regress_out", gpu_sc.pp.regress_out, {"keys": ["total_counts"]}, _nan_X, "adata.X"),
    (
        "calculate_qc_metrics",
        gpu_sc.pp.calculate_qc_metrics,
        {"percent_top": None},
        _nan_X,
        "adata.X",
    ),
    ("filter_cells", gpu_sc.pp.filter_cells, {"min_genes": 1}, _inf_X_sparse, "adata.X"),
    ("filter_genes", gpu_sc.pp.filter_genes, {"min_cells": 1}, _inf_X_sparse, "adata.X"),
    ("neighbors_X_pca", gpu_sc.pp.neighbors, {"n_neighbors": 5}, _nan_pca, "obsm['X_pca']"),
    ("tsne_X_pca", gpu_sc.tl.tsne, {}, _nan_pca, "obsm['X_pca']"),
    (
        "rank_genes_groups_raw",
        gpu_sc.tl.rank_genes_groups,
        {"groupby": "group"},
        _nan_raw,
        "adata.raw.X",
    ),
]


@pytest.mark.parametrize("backend", ["numpy", "scanpy"])
@pytest.mark.parametrize(
    "func,params,spoil,where", [c[1:] for c in STEP_NAN], ids=[c[0] for c in STEP_NAN]
)
def test_step_rejects_nonfinite_values(lognorm, func, params, spoil, where, backend):
    a = lognorm.copy()
    spoil(a)
    with pytest.raises(InputError) as err:
        func(a, backend=backend, **params)
    assert_one_line(err.value, func.__name__, where, "NaN or infinite", "remove or impute")


def test_step_nonfinite_check_is_one_sum_when_clean(lognorm):
    from gpu_sc.steps import count_nonfinite

    assert count_nonfinite(lognorm.X) == 0
    big = np.full(10, 3e38, dtype=np.float32)  # the sum overflows; the values are finite
    assert count_nonfinite(big) == 0
    big[3] = np.nan
    assert count_nonfinite(big) == 1
    assert count_nonfinite(np.arange(5)) == 0  # integers cannot hold NaN


# -- the step API: float16, empty, impossible shapes, unknown keywords ------------------------


@pytest.mark.parametrize("backend", ["numpy", "scanpy"])
@pytest.mark.parametrize("step", ["normalize_total", "log1p", "highly_variable_genes"])
def test_step_float16_is_promoted_and_logged(lognorm, step, backend, caplog):
    a32 = lognorm.copy()
    a32.X = a32.X.toarray().astype(np.float16).astype(np.float32)
    a16 = lognorm.copy()
    a16.X = a16.X.toarray().astype(np.float16)
    func = getattr(gpu_sc.pp, step)
    with caplog.at_level(logging.WARNING, logger="gpu_sc"):
        func(a16, backend=backend)
    func(a32, backend=backend)
    assert a16.X.dtype == np.float32
    np.testing.assert_allclose(a16.X, a32.X, rtol=1e-6)
    if step == "highly_variable_genes":
        assert (a16.var["highly_variable"] == a32.var["highly_variable"]).all()
    assert any("float16" in r.getMessage() and step in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("step", ["pca", "normalize_total", "neighbors"])
def test_step_on_empty_anndata_is_named(lognorm, step):
    with pytest.raises(InputError) as err:
        getattr(gpu_sc.pp, step)(lognorm[:0].copy(), backend="numpy")
    assert_one_line(err.value, step, "empty", "0 cells")


@pytest.mark.parametrize("n_comps", [0, 10**6], ids=["zero", "above_shape"])
def test_step_pca_impossible_n_comps(lognorm, n_comps):
    with pytest.raises(InputError) as err:
        gpu_sc.pp.pca(lognorm.copy(), n_comps=n_comps, backend="numpy")
    # scikit-learn's text, which scanpy's own test_pca_shapes matches, then what to do
    assert_one_line(err.value, "pp.pca", f"n_components={n_comps}", "lower n_comps")


def test_step_unknown_keyword_raises_scanpys_own_type_error(lognorm):
    # a drop-in raises what scanpy raises: Python's binding error of scanpy's signature
    with pytest.raises(TypeError) as err:
        gpu_sc.pp.neighbors(lognorm.copy(), foo=1)
    assert_one_line(err.value, "neighbors()", "unexpected keyword argument 'foo'")


def test_step_on_a_view_with_nan_is_rejected(lognorm):
    a = lognorm.copy()
    _nan_X(a)  # the NaN is in row 4
    view = a[2:200]
    assert view.is_view
    with pytest.raises(InputError) as err:
        gpu_sc.pp.scale(view, backend="numpy")
    assert_one_line(err.value, "pp.scale", "NaN or infinite")


def test_step_float16_on_a_view_is_promoted(lognorm, caplog):
    a = lognorm.copy()
    a.X = a.X.toarray().astype(np.float16)
    ref = a[10:200].copy()
    ref.X = ref.X.astype(np.float32)
    view = a[10:200]
    with caplog.at_level(logging.WARNING, logger="gpu_sc"):
        gpu_sc.pp.scale(view, backend="numpy")
    gpu_sc.pp.scale(ref, backend="numpy")
    assert view.X.dtype == np.float32
    np.testing.assert_allclose(view.X, ref.X, rtol=1e-5, atol=1e-6)
    assert any("float16" in r.getMessage() for r in caplog.records)


def test_prepare_counts_contract(counts, caplog):
    """What the runner relies on: float16 X -> float32 in place (also on a view), logged;
    anything else untouched and silent."""
    from gpu_sc.pipeline.validate import prepare_counts

    a = counts.copy()
    a.X = a.X.toarray().astype(np.float16)
    view = a[:100]
    with caplog.at_level(logging.WARNING, logger="gpu_sc"):
        prepare_counts(view)
    assert view.X.dtype == np.float32 and not view.is_view and view.n_obs == 100
    assert any("float16" in r.getMessage() for r in caplog.records)
    caplog.clear()
    b = counts.copy()
    X = b.X
    with caplog.at_level(logging.WARNING, logger="gpu_sc"):
        prepare_counts(b)
    assert b.X is X and not caplog.records


def test_step_copy_true_leaves_the_caller_s_float16_alone(lognorm):
    a16 = lognorm.copy()
    a16.X = a16.X.toarray().astype(np.float16)
    out = gpu_sc.pp.log1p(a16, copy=True, backend="numpy")
    assert a16.X.dtype == np.float16 and out.X.dtype == np.float32
