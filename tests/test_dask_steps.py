"""Each Dask step against the in-memory numpy engine on the same small matrix, for parameter
values the tutorial does not use (local synchronous scheduler: one process, one thread)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import gpu_sc
from gpu_sc.dispatch.provenance import provenance
from gpu_sc.provenance import last as last_record

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")

from gpu_sc.dask import DASK_STEPS  # noqa: E402
from gpu_sc.dask import graph as dgraph  # noqa: E402
from gpu_sc.dispatch.arrays import array_module  # noqa: E402
from gpu_sc.dispatch.registry import (  # noqa: E402
    DaskUnsupported,
    EngineContext,
    EngineUnsupported,
)

CTX = EngineContext(am=array_module("numpy"))


@pytest.fixture(scope="module")
def counts():
    a = gpu_sc.datasets.synthetic(1500, 400, seed=11)
    a.var["mt"] = a.var_names.str.startswith("MT-")
    return a


@pytest.fixture(autouse=True)
def _sync():
    with dask.config.set(scheduler="sync"):
        yield


def _lazy(adata, rows=400):
    out = adata.copy()
    out.X = da.from_array(sp.csr_matrix(adata.X), chunks=(rows, -1), asarray=False)
    return out


def _frames_equal(a, b, cols, rtol=1e-12):
    for c in cols:
        np.testing.assert_allclose(
            a[c].to_numpy(np.float64), b[c].to_numpy(np.float64), rtol=rtol, err_msg=c
        )


def test_qc_metrics_with_percent_top_and_log1p(counts):
    ref = counts.copy()
    gpu_sc.pp.calculate_qc_metrics(
        ref, qc_vars=["mt"], percent_top=(5, 50), inplace=True, backend="numpy"
    )
    lazy = _lazy(counts)
    DASK_STEPS["calculate_qc_metrics"](lazy, CTX, qc_vars=["mt"], percent_top=(5, 50))
    new_obs = [c for c in ref.obs.columns if c not in counts.obs.columns]
    new_var = [c for c in ref.var.columns if c not in counts.var.columns]
    assert sorted(new_obs) == sorted(c for c in lazy.obs.columns if c not in counts.obs.columns)
    _frames_equal(lazy.obs, ref.obs, new_obs)
    _frames_equal(lazy.var, ref.var, new_var)


@pytest.mark.parametrize(
    "params",
    [
        {"target_sum": None},
        {"target_sum": 1e4, "exclude_highly_expressed": True, "max_fraction": 0.1},
        {"target_sum": 1e4, "key_added": "norm_factor"},
    ],
)
def test_normalize_total_variants(counts, params):
    ref = counts.copy()
    gpu_sc.pp.normalize_total(ref, backend="numpy", **params)
    lazy = _lazy(counts)
    DASK_STEPS["normalize_total"](lazy, CTX, **params)
    got = lazy.X.compute()
    assert isinstance(got, sp.csr_matrix)
    np.testing.assert_allclose(got.toarray(), ref.X.toarray(), rtol=1e-6)
    if "key_added" in params:
        np.testing.assert_allclose(lazy.obs["norm_factor"], ref.obs["norm_factor"], rtol=1e-6)


@pytest.mark.parametrize("batch_key", [None, "parent_type"])
@pytest.mark.parametrize("flavor", ["seurat", "cell_ranger", "seurat_v3"])
def test_hvg_flavors_pick_the_same_genes(counts, flavor, batch_key):
    ref, lazy = counts.copy(), _lazy(counts)
    kwargs = {"flavor": flavor, "n_top_genes": 100, "batch_key": batch_key}
    if flavor != "seurat_v3":
        gpu_sc.pp.normalize_total(ref, target_sum=1e4, backend="numpy")
        gpu_sc.pp.log1p(ref, backend="numpy")
        DASK_STEPS["normalize_total"](lazy, CTX, target_sum=1e4)
        DASK_STEPS["log1p"](lazy, CTX)
    gpu_sc.pp.highly_variable_genes(ref, backend="numpy", **kwargs)
    DASK_STEPS["highly_variable_genes"](lazy, CTX, **kwargs)
    assert (lazy.var["highly_variable"] == ref.var["highly_variable"]).all()
    key = "variances_norm" if flavor == "seurat_v3" else "dispersions_norm"
    np.testing.assert_allclose(lazy.var[key], ref.var[key], rtol=1e-5)
    assert sorted(lazy.var.columns) == sorted(ref.var.columns)
    if batch_key is not None:
        assert (lazy.var["highly_variable_nbatches"] == ref.var["highly_variable_nbatches"]).all()


def test_hvg_with_cutoffs_and_batches(counts):
    ref, lazy = counts.copy(), _lazy(counts)
    for a, run in ((ref, "numpy"), (lazy, "dask")):
        if run == "numpy":
            gpu_sc.pp.normalize_total(a, target_sum=1e4, backend="numpy")
            gpu_sc.pp.log1p(a, backend="numpy")
            gpu_sc.pp.highly_variable_genes(a, batch_key="parent_type", backend="numpy")
        else:
            DASK_STEPS["normalize_total"](a, CTX, target_sum=1e4)
            DASK_STEPS["log1p"](a, CTX)
            DASK_STEPS["highly_variable_genes"](a, CTX, batch_key="parent_type")
    assert (lazy.var["highly_variable"] == ref.var["highly_variable"]).all()
    assert (
        lazy.var["highly_variable_intersection"] == ref.var["highly_variable_intersection"]
    ).all()


@pytest.mark.parametrize("keys", [["total", "pct_mt"], ["cell_type"]])
def test_regress_out_continuous_and_categorical(counts, keys):
    ref = counts.copy()
    x = ref.X.toarray()
    ref.obs["total"] = x.sum(1)
    ref.obs["pct_mt"] = x[:, ref.var["mt"].to_numpy()].sum(1) / x.sum(1)
    ref.X = np.log1p(ref.X.toarray()).astype(np.float32)
    lazy = ref.copy()
    lazy.X = da.from_array(ref.X, chunks=(400, -1))
    gpu_sc.pp.regress_out(ref, keys=keys, backend="numpy")
    DASK_STEPS["regress_out"](lazy, CTX, keys=keys)
    got = lazy.X.compute()
    assert got.dtype == ref.X.dtype
    np.testing.assert_allclose(got, ref.X, rtol=1e-5, atol=1e-6)


def test_scale_sparse_without_centring_stays_sparse(counts):
    ref = counts.copy()
    gpu_sc.pp.scale(ref, zero_center=False, max_value=5, backend="numpy")
    lazy = _lazy(counts)
    DASK_STEPS["scale"](lazy, CTX, zero_center=False, max_value=5)
    got = lazy.X.compute()
    assert isinstance(got, sp.csr_matrix)
    np.testing.assert_allclose(got.toarray(), ref.X.toarray(), rtol=1e-6)
    np.testing.assert_allclose(lazy.var["std"], ref.var["std"], rtol=1e-12)


def test_unsupported_parameters_are_refused_before_any_change(counts):
    lazy = _lazy(counts)
    with pytest.raises(EngineUnsupported, match="batch_key"):
        DASK_STEPS["highly_variable_genes"](lazy, CTX, batch_key="no_such_column")
    lazy.obs["when"] = np.datetime64("2024-01-01")
    with pytest.raises(EngineUnsupported, match="neither numeric nor categorical"):
        DASK_STEPS["regress_out"](lazy, CTX, keys=["pseudotime", "when"])
    with pytest.raises(EngineUnsupported, match="not a dask array"):
        DASK_STEPS["log1p"](counts.copy(), CTX)
    assert "highly_variable" not in lazy.var
    assert dgraph.is_dask(lazy.X) and lazy.X.dtype == counts.X.dtype  # untouched


def test_empty_blocks_after_a_subset_are_harmless(counts):
    from gpu_sc.dask.steps import subset_obs

    lazy = _lazy(counts, rows=300)
    keep = np.ones(lazy.n_obs, bool)
    keep[300:600] = False  # the second block loses every row
    subset_obs(lazy, keep)
    assert lazy.X.chunks[0] == (300, 0, 300, 300, 300)
    lazy.obs["total"] = np.asarray(counts.X[keep].sum(1)).ravel()
    DASK_STEPS["normalize_total"](lazy, CTX, target_sum=1e4)
    DASK_STEPS["log1p"](lazy, CTX)
    DASK_STEPS["regress_out"](lazy, CTX, keys=["cell_type"])
    DASK_STEPS["scale"](lazy, CTX, max_value=10)
    DASK_STEPS["pca"](lazy, CTX, n_comps=10)
    assert lazy.obsm["X_pca"].shape == (int(keep.sum()), 10)
    assert np.isfinite(lazy.obsm["X_pca"]).all()


def test_run_dask_step_records_provenance_and_refuses_unknown_steps(counts):
    from gpu_sc.pipeline.on_dask import run_dask_step

    lazy = _lazy(counts)
    run_dask_step("log1p", lazy, {})
    (entry,) = provenance(lazy)  # run_dask_step records as the pipeline does
    assert entry["step"] == "log1p" and entry["backend"] == "dask"
    assert "local sync" in entry["note"] and "4 blocks of <= 400 rows" in entry["note"]
    assert lazy.uns["gpu_sc"]["dask"]["chunk_rows"] == 400
    with pytest.raises(DaskUnsupported, match="no dask implementation of 'umap'"):
        run_dask_step("umap", lazy, {})


def test_a_dask_result_is_saved_block_by_block_by_the_gpu_sc_writer(counts, tmp_path):
    import gpu_sc.io
    from gpu_sc.pipeline.on_dask import run_dask_step

    lazy = _lazy(counts)
    run_dask_step("normalize_total", lazy, {"target_sum": 1e4})
    run_dask_step("log1p", lazy, {})
    gpu_sc.io.write_h5ad(lazy, tmp_path / "out.h5ad")
    back = gpu_sc.io.read_h5ad(tmp_path / "out.h5ad")
    assert isinstance(back.X, sp.csr_matrix)
    assert (back.X != lazy.X.compute()).nnz == 0
    assert [p["step"] for p in provenance(back)] == ["normalize_total", "log1p"]


# ---------------------------------------------------------------------------------------------
# the public step API and the pipeline's input check, on Dask input


def test_public_steps_run_on_the_dask_path_when_their_input_is_a_dask_array(counts):
    lazy, ref = _lazy(counts), counts.copy()
    gpu_sc.pp.normalize_total(lazy, target_sum=1e4)  # backend=None: the global setting
    gpu_sc.pp.normalize_total(ref, target_sum=1e4, backend="numpy")
    assert dgraph.is_dask(lazy.X)  # still lazy
    np.testing.assert_allclose(lazy.X.compute().toarray(), ref.X.toarray(), rtol=1e-6)
    entry = last_record(lazy)
    assert entry["backend"] == "dask" and "blocks in numpy" in entry["note"]


def test_a_step_without_a_dask_implementation_says_how_to_proceed(counts):
    lazy = _lazy(counts)
    with pytest.raises(
        DaskUnsupported,
        match=r"score_genes: its input is a Dask array .*"
        r"adata\.X = adata\.X\.compute\(\)",
    ):
        gpu_sc.tl.score_genes(lazy, gene_list=list(lazy.var_names[:5]))
    assert "score" not in lazy.obs


def test_a_parameter_the_dask_path_lacks_is_refused_not_sent_to_scanpy(counts):
    lazy = _lazy(counts)
    before = lazy.X
    with pytest.raises(DaskUnsupported, match="pca on the Dask path: random_state=None"):
        gpu_sc.pp.pca(lazy, n_comps=5, random_state=None)
    assert lazy.X is before and "X_pca" not in lazy.obsm
    # zero_center=False on sparse Dask blocks: scanpy's own error, as scanpy raises it
    with pytest.raises(TypeError, match="zero_center=False` is not supported for sparse Dask"):
        gpu_sc.pp.pca(lazy, n_comps=5, zero_center=False)
    assert lazy.X is before and "X_pca" not in lazy.obsm


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.nan, "1 NaN or infinite"),
        (-3.0, r"negative values \(min -3\)"),
        (0.5, r"non-integer values \(e\.g\. 0\.5\)"),
    ],
)
def test_the_pipeline_checks_dask_input_in_one_pass_over_the_blocks(counts, bad, message):
    from gpu_sc.pipeline.validate import InputError

    a = counts.copy()
    x = sp.csr_matrix(a.X, dtype=np.float32)
    x.data[x.indptr[1100]] = bad  # in the third of four blocks
    a.X = x
    lazy = _lazy(a)
    with pytest.raises(InputError, match=message):
        gpu_sc.pipeline(lazy, backend="numpy")
    assert dgraph.is_dask(lazy.X) and "gpu_sc" not in lazy.uns
