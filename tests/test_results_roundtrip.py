"""A pipeline result is an ordinary AnnData: ``adata.write_h5ad`` / ``write_zarr`` store every
``uns`` key and anndata / scanpy read it back without gpu_sc; scanpy's plots run on it."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from packaging.version import Version

import gpu_sc
from gpu_sc.dispatch.provenance import pipeline_record, provenance

# anndata 0.13 writes zarr v3 by default and deprecates choosing the format (a warning).
_ANNDATA_0_13 = Version(version("anndata")) >= Version("0.13")


@pytest.fixture(scope="module")
def pbmc_result(pbmc3k_tutorial_numpy):
    return pbmc3k_tutorial_numpy  # written, never modified


def _assert_same(a, b, where="uns"):
    """Equal values, recursively, across the types AnnData stores in ``uns``."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (where, sorted(a), sorted(b))
        for k in a:
            _assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, check_dtype=False, obj=where)
    elif sp.issparse(a):
        assert sp.issparse(b) and a.shape == b.shape and (a != b).nnz == 0, where
    elif isinstance(a, np.ndarray):
        b = np.asarray(b)
        assert a.shape == b.shape and a.dtype.names == b.dtype.names, where
        if a.dtype.names:  # rank_genes_groups' record arrays
            for name in a.dtype.names:
                _assert_same(np.asarray(a[name]), np.asarray(b[name]), f"{where}.{name}")
        elif a.dtype.kind in "fc":
            np.testing.assert_array_equal(a, b, err_msg=where)
        else:
            assert a.astype(str).tolist() == b.astype(str).tolist(), where
    elif isinstance(a, list | tuple):
        _assert_same(np.asarray(a), np.asarray(b), where)
    else:
        both_nan = isinstance(a, float) and np.isnan(a) and np.isnan(b)
        assert a == b or both_nan, (where, a, b)


def _plots_run(adata):
    sc.pl.umap(adata, color="leiden", show=False)
    sc.pl.paga(adata, show=False)
    sc.pl.rank_genes_groups(adata, n_genes=5, show=False)
    sc.pl.pca_variance_ratio(adata, show=False)
    sc.pl.tsne(adata, color="leiden", show=False)
    plt.close("all")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["h5ad", "zarr"])
def test_pbmc3k_result_roundtrips_through_anndatas_own_writers(pbmc_result, tmp_path, fmt):
    # Before: adata.write_h5ad raised TypeError: Can't implicitly convert non-string objects
    # to strings, on uns["gpu_sc"]["provenance"] (a list of dicts).
    path = tmp_path / f"result.{fmt}"
    if fmt == "h5ad":
        pbmc_result.write_h5ad(path)
        back = ad.read_h5ad(path)
        _assert_same(dict(pbmc_result.uns), dict(sc.read_h5ad(path).uns))
    else:
        v3 = {} if _ANNDATA_0_13 else {"zarr_write_format": 3}  # 0.13: the (only) default
        with ad.settings.override(**v3, auto_shard_zarr_v3=False):
            pbmc_result.write_zarr(path)
        back = ad.read_zarr(path)
    assert set(back.uns) >= {
        "gpu_sc",
        "pca",
        "neighbors",
        "leiden",
        "paga",
        "umap",
        "tsne",
        "rank_genes_groups",
        "rank_genes_groups_wilcoxon",
    }
    _assert_same(dict(pbmc_result.uns), dict(back.uns))
    assert provenance(back) == provenance(pbmc_result) and len(provenance(back)) >= 16
    assert pipeline_record(back) == pipeline_record(pbmc_result)
    assert pipeline_record(back)["config"] == gpu_sc.PipelineConfig().to_dict()
    assert back.raw.shape == pbmc_result.raw.shape and set(back.obsm) == set(pbmc_result.obsm)
    _plots_run(back)


def test_h5ad_reads_back_in_a_process_without_gpu_sc(tmp_path):
    adata = gpu_sc.datasets.synthetic(600, n_genes=300, seed=0)
    gpu_sc.pipeline(adata, {"tsne": {"enabled": False}}, backend="numpy")
    adata.write_h5ad(tmp_path / "r.h5ad")
    code = (
        "import sys, json, anndata as ad; a = ad.read_h5ad(sys.argv[1]); "
        "assert 'gpu_sc' not in sys.modules; p = a.uns['gpu_sc']['provenance']; "
        "print(json.dumps([list(p['step']), json.loads(p['params'].iloc[-1])]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "r.h5ad")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    steps, params = json.loads(proc.stdout)
    assert steps == [p["step"] for p in provenance(adata)]
    assert params["method"] == "wilcoxon"


def test_gpu_sc_io_is_atomic_native_and_reads_the_older_json_form(tmp_path):
    adata = gpu_sc.datasets.synthetic(400, n_genes=300, seed=0)
    gpu_sc.pipeline(
        adata, {"tsne": {"enabled": False}, "umap": {"enabled": False}}, backend="numpy"
    )
    path = gpu_sc.io.write_h5ad(adata, tmp_path / "new.h5ad")
    assert isinstance(ad.read_h5ad(path).uns["gpu_sc"]["provenance"], pd.DataFrame)
    assert provenance(gpu_sc.io.read_h5ad(path)) == provenance(adata)

    # A file of the earlier gpu_sc.io form: uns["gpu_sc"] = {"json": <text>}, lists of dicts.
    old = adata.copy()
    legacy = {
        "provenance": provenance(adata),
        "versions": dict(adata.uns["gpu_sc"]["versions"]),
        "pipeline": pipeline_record(adata),
    }
    old.uns["gpu_sc"] = {"json": json.dumps(legacy)}
    old.write_h5ad(tmp_path / "old.h5ad")
    back = gpu_sc.io.read_h5ad(tmp_path / "old.h5ad")
    assert provenance(back) == provenance(adata)
    assert pipeline_record(back) == pipeline_record(adata)
    back.write_h5ad(tmp_path / "again.h5ad")  # now in the native form


def test_import_gpu_sc_reaches_every_name_the_readme_uses_without_loading_scanpy():
    code = (
        "import sys, gpu_sc; from gpu_sc.cli import build_parser; build_parser(); "
        "heavy = sorted(m for m in ('scanpy', 'anndata', 'pandas', 'scipy') if m in sys.modules); "
        "assert not heavy, heavy; "
        "import gpu_sc.pipeline.config; "
        "assert callable(gpu_sc.pipeline) and callable(gpu_sc.report), 'shadowed'; "
        "names = [gpu_sc.io.write_h5ad, gpu_sc.io.read_h5ad, gpu_sc.datasets.pbmc3k, "
        "gpu_sc.datasets.synthetic, gpu_sc.pp.normalize_total, gpu_sc.tl.leiden, "
        "gpu_sc.PipelineConfig, gpu_sc.settings, gpu_sc.use_backend, gpu_sc.dispatch.run_step]; "
        "print(len(names))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "10"
