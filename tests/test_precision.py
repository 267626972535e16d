"""The precision policy: settings.precision / precision= (auto, exact, fast), recorded in the
provenance; the numpy backend's results unchanged at its default."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scanpy as sc

import gpu_sc
from gpu_sc import resolve_precision, settings
from gpu_sc.dispatch.arrays import array_module
from gpu_sc.dispatch.provenance import pipeline_record, provenance
from gpu_sc.kernels.knn import knn
from gpu_sc.provenance import last as last_record

NP = array_module("numpy")


def _pca_adata(n=800, d=30, seed=0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(5, d)) * 3
    a = ad.AnnData(np.zeros((n, 3), dtype=np.float32))
    a.obsm["X_pca"] = (c[rng.integers(0, 5, n)] + rng.normal(size=(n, d))).astype(np.float32)
    return a


def test_resolve_precision():
    assert resolve_precision("auto", "numpy") == "exact"
    assert resolve_precision("auto", "cupy") == "fast"
    assert resolve_precision("auto", "scanpy") == "exact"
    assert resolve_precision("fast", "numpy") == "fast"
    assert resolve_precision("exact", "cupy") == "exact"
    with settings.override(precision="fast"):
        assert resolve_precision(None, "numpy") == "fast"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("half", "numpy")


@pytest.mark.precision_default
def test_shipped_default_is_auto_and_numpy_neighbors_unchanged():
    """At the shipped default the numpy engine computes exactly as before: scanpy's exact
    neighbours, the same order and distances (float64)."""
    assert settings.precision == "auto"
    a = _pca_adata()
    ref = a.copy()
    sc.pp.neighbors(ref, n_neighbors=10, use_rep="X_pca")  # exact below 4096 cells
    gpu_sc.pp.neighbors(a, n_neighbors=10, use_rep="X_pca", backend="numpy")
    np.testing.assert_array_equal(a.obsp["distances"].indices, ref.obsp["distances"].indices)
    np.testing.assert_allclose(a.obsp["distances"].data, ref.obsp["distances"].data, rtol=1e-6)
    assert a.obsp["distances"].dtype == np.float64
    assert last_record(a)["engine"]["precision"] == "exact"


def test_fast_knn_float32_close_to_exact():
    X = _pca_adata(1500).obsm["X_pca"].astype(np.float64)
    ei, ed = knn(NP, X, 15)
    fi, fd = knn(NP, X, 15, dtype=np.float32)
    assert fd.dtype == np.float64 and fi.dtype == np.int64
    overlap = np.mean([np.intersect1d(a, b).size / 15 for a, b in zip(ei, fi, strict=True)])
    assert overlap >= 0.99
    np.testing.assert_allclose(fd, ed, rtol=1e-3, atol=1e-3)
    assert (fi[:, 0] == np.arange(1500)).all()


def test_precision_recorded_per_step_and_in_the_pipeline_record():
    a = _pca_adata()
    gpu_sc.pp.neighbors(a, n_neighbors=10, use_rep="X_pca", backend="numpy", precision="fast")
    assert last_record(a)["engine"]["precision"] == "fast"
    b = gpu_sc.datasets.synthetic(400, 300, seed=0)
    cfg = {s: {"enabled": False} for s in ("leiden", "paga", "umap", "tsne", "rank_genes_groups")}
    cfg["filter_cells"] = {"min_genes": 10}
    gpu_sc.pipeline(b, cfg, backend="numpy", precision="fast")
    assert pipeline_record(b)["precision"] == "fast"
    ran = {p["step"]: p["engine"] for p in provenance(b) if p["backend"] == "numpy"}
    assert ran["neighbors"]["precision"] == "fast" and ran["pca"]["precision"] == "fast"
    assert all(e["precision"] == "fast" for e in ran.values())
    # the pipeline's own steps (subsetting, .raw) record no engine
    assert all(p["engine"] == {} for p in provenance(b) if p["backend"] == "anndata")


@pytest.mark.gpu
@pytest.mark.precision_default
def test_cupy_default_is_fast():
    a = _pca_adata(300)
    gpu_sc.pp.neighbors(a, n_neighbors=8, use_rep="X_pca", backend="cupy")
    assert last_record(a)["backend"] == "cupy"
    assert last_record(a)["engine"]["precision"] == "fast"


@pytest.mark.gpu
def test_cupy_pipeline_uploads_the_matrix_once(_cupy_for_gpu_tests):
    """On cupy the preprocessing (filters, QC, normalisation, log1p, HVG) reads one device
    copy of the matrix: the host-to-device bytes of those steps are the matrix's size once
    (plus small vectors), not once per step."""
    a = gpu_sc.datasets.synthetic(1500, 400, seed=0)
    x = a.X
    matrix_bytes = x.data.nbytes + x.indices.nbytes + x.indptr.nbytes
    if _cupy_for_gpu_tests is None:
        pytest.skip("counts transfers on the CuPy double (real CUDA here)")
    counters = _cupy_for_gpu_tests.counters
    seen: dict[str, int] = {}
    last = [counters.snapshot()["h2d_bytes"]]

    def progress(label, _s):
        now = counters.snapshot()["h2d_bytes"]
        seen[label] = now - last[0]
        last[0] = now

    off = (
        "regress_out",
        "scale",
        "pca",
        "neighbors",
        "leiden",
        "paga",
        "umap",
        "tsne",
        "rank_genes_groups",
    )
    cfg = {s: {"enabled": False} for s in off}
    cfg["filter_cells"] = {"min_genes": 10}
    start = counters.snapshot()["h2d_bytes"]
    gpu_sc.pipeline(a, cfg, backend="cupy", progress=progress, atomic=False)
    total = counters.snapshot()["h2d_bytes"] - start
    assert pipeline_record(a)["device_resident"] is True
    assert matrix_bytes <= total < 1.1 * matrix_bytes, seen
    for step in ("filter_cells", "filter_genes", "calculate_qc_metrics", "normalize_total"):
        assert seen[step] < 0.05 * matrix_bytes, (step, seen)
