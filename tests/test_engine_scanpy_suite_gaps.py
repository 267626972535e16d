"""Engine behaviours added for scanpy's own test suite (issue 19; scripts/test_scanpy_suite.sh):
each is run on the NumPy engine in strict mode (no fallback) and compared with scanpy."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from anndata import AnnData

import gpu_sc
from gpu_sc.dispatch.provenance import last

pytestmark = pytest.mark.filterwarnings(
    "ignore::UserWarning", "ignore::FutureWarning", "ignore::scipy.sparse.SparseEfficiencyWarning"
)

CONTAINERS = [np.asarray, sp.csr_matrix, sp.csc_matrix]


def _counts(n_obs=120, n_vars=30, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.poisson(rng.gamma(1.0, 1.0, n_vars), (n_obs, n_vars)).astype(np.float32)
    x[:, 0] += np.arange(n_obs) % 7  # a leading direction well separated from the rest
    return x


def _dense(x) -> np.ndarray:
    return x.toarray() if sp.issparse(x) else np.asarray(x)


def _engine(adata) -> None:
    assert last(adata)["backend"] == "numpy"


@pytest.mark.parametrize("container", CONTAINERS)
def test_pca_zero_center_false_matches_scanpy(container):
    ref = AnnData(container(_counts()))
    got = ref.copy()
    sc.pp.pca(ref, n_comps=8, zero_center=False, svd_solver="arpack", dtype="float64")
    gpu_sc.pp.pca(got, n_comps=8, zero_center=False, dtype="float64", backend="numpy", strict=True)
    _engine(got)
    np.testing.assert_allclose(
        np.abs(got.obsm["X_pca"]), np.abs(ref.obsm["X_pca"]), rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(got.varm["PCs"], ref.varm["PCs"], atol=1e-5)  # same signs
    for key in ("variance", "variance_ratio"):
        np.testing.assert_allclose(got.uns["pca"][key], ref.uns["pca"][key], rtol=1e-5)
        assert got.uns["pca"][key].dtype == ref.uns["pca"][key].dtype
    assert got.uns["pca"]["params"] == ref.uns["pca"]["params"]


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("svd_solver", ["full", "covariance_eigh", "tsqr", "auto", "lobpcg"])
def test_pca_zero_center_false_warns_scanpys_ignored_svd_solver(container, svd_solver):
    """zero_center=False is scanpy's TruncatedSVD path: a solver it does not offer is ignored
    with scanpy's warning, also when the engine computes it (strict mode: no fallback)."""
    a = AnnData(container(_counts(40, 12)))
    with pytest.warns(UserWarning, match="Ignoring svd_solver") as want:
        sc.pp.pca(a.copy(), n_comps=4, svd_solver=svd_solver, zero_center=False)
    with pytest.warns(UserWarning, match="Ignoring svd_solver") as got:
        gpu_sc.pp.pca(
            a, n_comps=4, svd_solver=svd_solver, zero_center=False, backend="numpy", strict=True
        )
    _engine(a)
    text = [str(w.message) for w in want if "Ignoring" in str(w.message)]
    assert [str(w.message) for w in got if "Ignoring" in str(w.message)] == text


@pytest.mark.parametrize("svd_solver", [None, "arpack", "randomized"])
def test_pca_zero_center_false_with_a_truncated_svd_solver_does_not_warn(svd_solver):
    a = AnnData(_counts(40, 12))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "Ignoring", UserWarning)
        gpu_sc.pp.pca(
            a, n_comps=4, svd_solver=svd_solver, zero_center=False, backend="numpy", strict=True
        )
    _engine(a)


def test_pca_chunked_is_the_exact_pca():
    """scanpy's chunked=True (incremental PCA) approximates the exact PCA: the engine computes
    that one, whatever zero_center says (scanpy ignores it too)."""
    ref = AnnData(sp.csr_matrix(_counts(200, 40)))
    got = ref.copy()
    sc.pp.pca(ref, n_comps=5, svd_solver="arpack")
    gpu_sc.pp.pca(
        got, n_comps=5, chunked=True, chunk_size=50, zero_center=False, backend="numpy", strict=True
    )
    _engine(got)
    np.testing.assert_allclose(
        np.abs(got.obsm["X_pca"]), np.abs(ref.obsm["X_pca"]), rtol=1e-3, atol=1e-3
    )
    np.testing.assert_allclose(
        got.uns["pca"]["variance_ratio"], ref.uns["pca"]["variance_ratio"], rtol=1e-4
    )
    assert got.uns["pca"]["params"]["zero_center"] is False  # recorded as given, as scanpy


@pytest.mark.parametrize("zero_center", [True, False])
@pytest.mark.parametrize("n_vars", [40, 12_000])  # the exact eigensolver, the randomized one
def test_pca_all_zero_features_load_exactly_zero_so_sparse_and_dense_agree(zero_center, n_vars):
    """scanpy's test_pca_sparse compares sparse and dense PCA with atol=0: the loadings of a
    gene absent from every cell must be 0 on both, not the eigensolver's ~1e-30 noise."""
    rng = np.random.default_rng(1)
    x = np.zeros((60, n_vars), dtype=np.float64)
    live = rng.choice(n_vars, 30, replace=False)
    x[:, live] = _counts(60, 30, seed=2)
    dense, sparse = AnnData(x), AnnData(sp.csr_matrix(x))
    for a in (dense, sparse):
        gpu_sc.pp.pca(a, n_comps=5, zero_center=zero_center, backend="numpy", strict=True)
        _engine(a)
        dead = np.setdiff1d(np.arange(n_vars), live)
        assert not a.varm["PCs"][dead].any()
    np.testing.assert_allclose(sparse.varm["PCs"], dense.varm["PCs"], rtol=1e-7, atol=0)


def test_pca_of_a_column_subset_is_bitwise_that_of_its_copy():
    """scanpy's test_mask compares PCA with mask_var against PCA of the masked copy at
    rtol=1e-11; ``X[:, mask]`` is column-major, its copy row-major, and NumPy sums the two in
    another order: the engine makes dense blocks row-major first, so memory layout never
    changes the bits (62 of the 1,013 masks of 10 genes failed before)."""
    x = sc.datasets.blobs(n_variables=10, n_centers=3, n_observations=100).X  # test_mask's
    mask = np.array([1, 1, 1, 1, 1, 1, 0, 1, 1, 0], dtype=bool)
    full, masked = AnnData(x), AnnData(np.ascontiguousarray(x[:, mask]))
    gpu_sc.pp.pca(full, n_comps=3, mask_var=mask, backend="numpy", strict=True)
    gpu_sc.pp.pca(masked, n_comps=3, backend="numpy", strict=True)
    np.testing.assert_array_equal(full.obsm["X_pca"], masked.obsm["X_pca"])
    np.testing.assert_array_equal(full.varm["PCs"][mask], masked.varm["PCs"])
    fortran = AnnData(np.asfortranarray(x))
    gpu_sc.pp.pca(fortran, n_comps=3, mask_var=mask, backend="numpy", strict=True)
    np.testing.assert_array_equal(fortran.obsm["X_pca"], full.obsm["X_pca"])


def test_pca_chunked_with_a_layer_raises_scanpys_error():
    adata = AnnData(_counts(), layers={"counts": _counts()})
    with pytest.raises(NotImplementedError, match="Cannot use `layer` and `chunked`"):
        gpu_sc.pp.pca(adata, layer="counts", chunked=True, backend="numpy", strict=True)


@pytest.mark.parametrize("zero_center", [True, False], ids=["center", "no_center"])
@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("mask", ["array", "column"])
def test_scale_mask_obs_matches_scanpy(container, zero_center, mask):
    x = _counts()
    ref = AnnData(container(x))
    cells = np.arange(ref.n_obs) % 3 != 0
    ref.obs["some cells"] = cells
    got = ref.copy()
    mask_obs = cells if mask == "array" else "some cells"
    sc.pp.scale(ref, mask_obs=mask_obs, zero_center=zero_center, max_value=3)
    gpu_sc.pp.scale(
        got, mask_obs=mask_obs, zero_center=zero_center, max_value=3, backend="numpy", strict=True
    )
    _engine(got)
    assert sp.issparse(got.X) == sp.issparse(ref.X)
    assert got.X.dtype == ref.X.dtype
    np.testing.assert_allclose(_dense(got.X), _dense(ref.X), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(_dense(got.X)[~cells], x[~cells])  # the others untouched
    assert list(got.var.columns) == list(ref.var.columns)
    pd.testing.assert_frame_equal(got.var, ref.var, rtol=1e-6)


@pytest.mark.parametrize("zero_center", [True, False], ids=["center", "no_center"])
@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("copy", [True, False], ids=["copy", "in_place"])
def test_scale_mask_obs_on_a_bare_matrix_runs_on_the_engine(container, zero_center, copy):
    """scale(matrix, mask_obs=boolean array): the array form honours mask_obs (strict mode:
    no fallback) and returns scanpy's matrix, only the masked cells scaled."""
    x = _counts()
    cells = np.arange(x.shape[0]) % 3 != 0
    ref = sc.pp.scale(container(x.copy()), mask_obs=cells, zero_center=zero_center, copy=copy)
    got = gpu_sc.pp.scale(
        container(x.copy()),
        mask_obs=cells,
        zero_center=zero_center,
        copy=copy,
        backend="numpy",
        strict=True,
    )
    assert type(got) is type(ref)
    assert got.dtype == ref.dtype
    np.testing.assert_allclose(_dense(got), _dense(ref), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(_dense(got)[~cells], x[~cells])


def test_scale_string_mask_on_a_bare_matrix_raises_scanpys_error_in_strict_mode():
    """A column name as mask_obs means nothing without an AnnData: scanpy's ValueError, not a
    fallback (strict mode would turn that into another error)."""
    x = _counts()
    with pytest.raises(ValueError, match=r"Cannot refer to mask.* without.*anndata"):
        sc.pp.scale(x.copy(), mask_obs="mask")
    with pytest.raises(ValueError, match=r"Cannot refer to mask.* without.*anndata"):
        gpu_sc.pp.scale(x.copy(), mask_obs="mask", backend="numpy", strict=True)


@pytest.mark.parametrize("container", CONTAINERS)
def test_scale_obsm_matches_scanpy(container):
    x = _counts()
    ref = AnnData(container(x.copy()), obsm={"obsm": container(x.copy())})
    got = ref.copy()
    sc.pp.scale(ref, obsm="obsm", zero_center=False)
    gpu_sc.pp.scale(got, obsm="obsm", zero_center=False, backend="numpy", strict=True)
    _engine(got)
    np.testing.assert_allclose(_dense(got.obsm["obsm"]), _dense(ref.obsm["obsm"]), rtol=1e-6)
    np.testing.assert_array_equal(_dense(got.X), x)  # X untouched
    pd.testing.assert_frame_equal(got.var, ref.var, rtol=1e-6)


@pytest.mark.parametrize("container", CONTAINERS)
def test_log1p_obsm_matches_scanpy(container):
    x = _counts()
    ref = AnnData(container(x.copy()), obsm={"obsm": container(x.copy())})
    got = ref.copy()
    sc.pp.log1p(ref, obsm="obsm", base=2)
    gpu_sc.pp.log1p(got, obsm="obsm", base=2, backend="numpy", strict=True)
    _engine(got)
    np.testing.assert_allclose(_dense(got.obsm["obsm"]), _dense(ref.obsm["obsm"]), rtol=1e-6)
    np.testing.assert_array_equal(_dense(got.X), x)
    assert got.uns["log1p"] == ref.uns["log1p"]


def test_log1p_chunked_with_obsm_raises_scanpys_error():
    adata = AnnData(_counts(), obsm={"obsm": _counts()})
    with pytest.raises(NotImplementedError, match="chunked operations on arrays not stored"):
        gpu_sc.pp.log1p(adata, obsm="obsm", chunked=True, backend="numpy", strict=True)


def test_neighbors_without_x_pca_runs_scanpys_pca_first():
    """scanpy computes a PCA (warning) when there are more than 50 genes and no X_pca."""
    x = _counts(150, 80)
    ref, got = AnnData(x.copy()), AnnData(x.copy())
    with pytest.warns(UserWarning, match="Falling back to preprocessing with `sc.pp.pca`"):
        sc.pp.neighbors(ref)
    with pytest.warns(UserWarning, match="Falling back to preprocessing with `sc.pp.pca`"):
        gpu_sc.pp.neighbors(got, backend="numpy", strict=True)
    _engine(got)
    assert got.obsm["X_pca"].dtype == ref.obsm["X_pca"].dtype
    np.testing.assert_allclose(np.abs(got.obsm["X_pca"]), np.abs(ref.obsm["X_pca"]), atol=1e-3)
    np.testing.assert_allclose(
        got.obsp["distances"].toarray(), ref.obsp["distances"].toarray(), rtol=1e-4, atol=1e-4
    )


@pytest.fixture(scope="module")
def logged():
    a = AnnData(_counts(90, 20))
    sc.pp.log1p(a)
    a.obs["g"] = pd.Categorical((np.arange(a.n_obs) % 3).astype(str))
    return a


@pytest.mark.parametrize(
    ("params", "scanpy_error"),
    [
        ({"corr_method": "holm"}, "Correction method must be one of"),
        ({"method": "t_test"}, "Method must be one of"),
        ({"groups": "0"}, "Specify a sequence of groups"),
        ({"groups": 1}, "Specify a sequence of groups"),
        ({"reference": "9"}, "reference = 9 needs to be one of groupby"),
        ({"use_raw": True}, "Received `use_raw=True`, but `adata.raw` is empty."),
    ],
)
def test_rank_genes_groups_bad_arguments_raise_scanpys_error_in_strict_mode(
    logged, params, scanpy_error
):
    """The engine raises scanpy's exception and message itself: no fallback needed, so strict
    mode reports what scanpy reports."""
    a = logged.copy()
    with pytest.raises(ValueError, match=re.escape(scanpy_error)):
        sc.tl.rank_genes_groups(a.copy(), "g", **params)
    with pytest.raises(ValueError, match=re.escape(scanpy_error)):
        gpu_sc.tl.rank_genes_groups(a, "g", **params, backend="numpy", strict=True)


def test_rank_genes_groups_mask_var_and_string_groupby_match_scanpy(logged):
    ref = logged.copy()
    ref.obs["g"] = ref.obs["g"].astype(str)  # not categorical: scanpy converts it
    got = ref.copy()
    mask = np.arange(ref.n_vars) % 2 == 0
    sc.tl.rank_genes_groups(ref, "g", mask_var=mask, method="t-test")
    gpu_sc.tl.rank_genes_groups(
        got, "g", mask_var=mask, method="t-test", backend="numpy", strict=True
    )
    _engine(got)
    assert isinstance(got.obs["g"].dtype, pd.CategoricalDtype)
    r, g = ref.uns["rank_genes_groups"], got.uns["rank_genes_groups"]
    assert len(g["names"]) == mask.sum()
    for group in r["names"].dtype.names:
        np.testing.assert_array_equal(g["names"][group], r["names"][group])
        np.testing.assert_allclose(g["scores"][group], r["scores"][group], rtol=1e-5)


def test_calculate_qc_metrics_use_raw_matches_scanpy():
    x = _counts(100, 40)
    ref = AnnData(sp.csr_matrix(x))
    ref.var["mt"] = np.arange(ref.n_vars) < 4
    ref.raw = ref.copy()
    ref.X = ref.X * 0  # the metrics must come from .raw
    got = ref.copy()
    sc.pp.calculate_qc_metrics(ref, qc_vars=["mt"], use_raw=True, inplace=True, percent_top=[5, 10])
    gpu_sc.pp.calculate_qc_metrics(
        got,
        qc_vars=["mt"],
        use_raw=True,
        inplace=True,
        percent_top=[5, 10],
        backend="numpy",
        strict=True,
    )
    _engine(got)
    pd.testing.assert_frame_equal(got.obs, ref.obs, rtol=1e-6)
    pd.testing.assert_frame_equal(got.var, ref.var, rtol=1e-6)
    with pytest.raises(ValueError, match="Cannot use expression from both layer and raw"):
        gpu_sc.pp.calculate_qc_metrics(got, use_raw=True, layer="x", backend="numpy", strict=True)


@pytest.fixture(scope="module")
def graph():
    a = AnnData(_counts(120, 20))
    sc.pp.log1p(a)
    sc.pp.neighbors(a, n_neighbors=10, use_rep="X")
    return a


@pytest.mark.parametrize(
    ("params", "scanpy_error"),
    [
        ({"flavor": "louvain"}, "flavor must be either 'igraph' or 'leidenalg'"),
        ({"flavor": "igraph", "directed": True}, "Cannot use igraph’s leiden implementation"),
        ({"flavor": "igraph", "partition_type": object}, "Do not pass in partition_type"),
        ({"flavor": "igraph", "neighbors_key": "nope"}, ""),
    ],
)
def test_leiden_bad_arguments_raise_scanpys_error_in_strict_mode(graph, params, scanpy_error):
    with pytest.raises((ValueError, KeyError)) as want:
        sc.tl.leiden(graph.copy(), **params)
    with pytest.raises(type(want.value), match=re.escape(scanpy_error)):
        gpu_sc.tl.leiden(graph.copy(), **params, backend="numpy", strict=True)


def test_leiden_scanpys_default_flavor_falls_back_with_scanpys_result(graph):
    """scanpy's default (leidenalg on the directed graph) is another objective than the
    engine's: it runs on scanpy, with scanpy's labels."""
    ref, got = graph.copy(), graph.copy()
    sc.tl.leiden(ref, random_state=0)
    gpu_sc.tl.leiden(got, random_state=0, backend="numpy")
    assert last(got)["backend"] == "scanpy"
    assert "directed" in last(got)["fallback_reason"]
    pd.testing.assert_series_equal(got.obs["leiden"], ref.obs["leiden"])


@pytest.mark.parametrize(
    ("params", "declared"),
    [
        ({"flavor": "leidenalg", "directed": None}, "directed graph"),
        ({"flavor": "leidenalg", "directed": True}, "directed graph"),
        ({"flavor": "leidenalg", "directed": False, "partition_type": object}, "partition type"),
        ({"flavor": "leidenalg", "directed": False}, None),
        ({"flavor": "igraph", "directed": None}, None),
    ],
)
def test_leiden_leidenalg_objective_is_declared_in_the_catalogue(graph, params, declared):
    """leidenalg on the directed graph (scanpy's default) or with another partition type is a
    declared gap of the catalogue (a recorded fallback with scanpy's result; in strict mode
    an error naming it), checked before the engine runs."""
    from gpu_sc import catalogue
    from gpu_sc.dispatch.registry import EngineUnsupported, engine_impl

    full = {"partition_type": None, **params}
    why = catalogue.unsupported("leiden", full)
    if declared is None:
        assert why is None
        return
    assert declared in why
    with pytest.raises(EngineUnsupported, match=declared):  # the engine called directly
        engine_impl("leiden", "numpy")(graph.copy(), None, **params)
    with pytest.raises(Exception, match=declared):  # strict: the declared reason
        gpu_sc.tl.leiden(graph.copy(), **params, random_state=0, backend="numpy", strict=True)


@pytest.mark.parametrize(
    ("params", "error", "scanpy_error"),
    [
        ({"gene_list": ["nope"]}, ValueError, "No valid genes were passed for scoring."),
        (
            {"gene_list": ["g1"], "gene_pool": ["nope"]},
            ValueError,
            "No valid genes were passed for reference set.",
        ),
    ],
)
def test_score_genes_bad_arguments_raise_scanpys_error_in_strict_mode(params, error, scanpy_error):
    a = AnnData(_counts(50, 30))
    a.var_names = [f"g{i}" for i in range(a.n_vars)]
    with pytest.raises(error, match=re.escape(scanpy_error)):
        sc.tl.score_genes(a.copy(), **params)
    with pytest.raises(error, match=re.escape(scanpy_error)):
        gpu_sc.tl.score_genes(a, **params, backend="numpy", strict=True)


@pytest.mark.parametrize("shape", [(0, 5), (5, 0)], ids=["no_cells", "no_genes"])
def test_scale_on_an_empty_anndata_scales_nothing_like_scanpy(shape):
    # scanpy's recipe_seurat can filter every gene away and then scale: scanpy returns the
    # empty matrix with var's mean/std columns; a drop-in must not raise there
    a = AnnData(np.zeros(shape, dtype=np.float32))
    ref = a.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scanpy's mean of an empty slice
        sc.pp.scale(ref)
        gpu_sc.pp.scale(a, backend="numpy")
    assert a.shape == ref.shape
    assert list(a.var.columns) == list(ref.var.columns)
