"""Engine behaviours added for scanpy's own test suite (issue 19; scripts/test_scanpy_suite.sh):
each is run on the NumPy engine in strict mode (no fallback) and compared with scanpy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from anndata import AnnData

import gpu_sc
from gpu_sc.dispatch.provenance import provenance

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
    assert provenance(adata)[-1]["backend"] == "numpy"


@pytest.mark.parametrize("container", CONTAINERS)
def test_pca_zero_center_false_matches_scanpy(container):
    ref = AnnData(container(_counts()))
    got = ref.copy()
    sc.pp.pca(ref, n_comps=8, zero_center=False, svd_solver="arpack", dtype="float64")
    gpu_sc.pp.pca(got, n_comps=8, zero_center=False, dtype="float64", backend="numpy",
                  strict=True)  # fmt: skip
    _engine(got)
    np.testing.assert_allclose(np.abs(got.obsm["X_pca"]), np.abs(ref.obsm["X_pca"]),
                               rtol=1e-4, atol=1e-4)  # fmt: skip
    np.testing.assert_allclose(got.varm["PCs"], ref.varm["PCs"], atol=1e-5)  # same signs
    for key in ("variance", "variance_ratio"):
        np.testing.assert_allclose(got.uns["pca"][key], ref.uns["pca"][key], rtol=1e-5)
        assert got.uns["pca"][key].dtype == ref.uns["pca"][key].dtype
    assert got.uns["pca"]["params"] == ref.uns["pca"]["params"]


def test_pca_chunked_is_the_exact_pca():
    """scanpy's chunked=True (incremental PCA) approximates the exact PCA: the engine computes
    that one, whatever zero_center says (scanpy ignores it too)."""
    ref = AnnData(sp.csr_matrix(_counts(200, 40)))
    got = ref.copy()
    sc.pp.pca(ref, n_comps=5, svd_solver="arpack")
    gpu_sc.pp.pca(got, n_comps=5, chunked=True, chunk_size=50, zero_center=False,
                  backend="numpy", strict=True)  # fmt: skip
    _engine(got)
    np.testing.assert_allclose(np.abs(got.obsm["X_pca"]), np.abs(ref.obsm["X_pca"]),
                               rtol=1e-3, atol=1e-3)  # fmt: skip
    np.testing.assert_allclose(got.uns["pca"]["variance_ratio"], ref.uns["pca"]["variance_ratio"],
                               rtol=1e-4)  # fmt: skip
    assert got.uns["pca"]["params"]["zero_center"] is True


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
    gpu_sc.pp.scale(got, mask_obs=mask_obs, zero_center=zero_center, max_value=3,
                    backend="numpy", strict=True)  # fmt: skip
    _engine(got)
    assert sp.issparse(got.X) == sp.issparse(ref.X)
    assert got.X.dtype == ref.X.dtype
    np.testing.assert_allclose(_dense(got.X), _dense(ref.X), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(_dense(got.X)[~cells], x[~cells])  # the others untouched
    assert list(got.var.columns) == list(ref.var.columns)
    pd.testing.assert_frame_equal(got.var, ref.var, rtol=1e-6)


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
