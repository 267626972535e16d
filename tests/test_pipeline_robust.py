"""The pipeline's failure behaviour and what it reports: a failure changes nothing, PAGA is laid
out on any atlas, input problems are named before the step that would fail, fallbacks are
visible (one warning, strict mode, what actually ran)."""

from __future__ import annotations

import copy
import importlib
import logging

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import gpu_sc
from gpu_sc.backends import cupy as cupy_backend
from gpu_sc.dispatch import FallbackError, backends, registry
from gpu_sc.dispatch.provenance import pipeline_record, provenance
from gpu_sc.pipeline import InputError, plan
from gpu_sc.provenance import last as last_record

FAST = {
    "tsne": {"enabled": False},
    "umap": {"enabled": False},
    "rank_genes_groups": {"methods": ["t-test"]},
}


def _snapshot(adata):
    return {
        "shape": adata.shape,
        "X": adata.X.copy(),
        "obs": adata.obs.copy(),
        "var": adata.var.copy(),
        "uns": copy.deepcopy(dict(adata.uns)),
        "obsm": list(adata.obsm),
        "layers": list(adata.layers),
        "raw": adata.raw,
    }


def _assert_unchanged(adata, snap):
    assert adata.shape == snap["shape"]
    assert (sp.csr_matrix(adata.X) != sp.csr_matrix(snap["X"])).nnz == 0
    pd.testing.assert_frame_equal(adata.obs, snap["obs"])
    pd.testing.assert_frame_equal(adata.var, snap["var"])
    assert list(adata.uns) == list(snap["uns"])
    assert list(adata.obsm) == snap["obsm"] and list(adata.layers) == snap["layers"]
    assert adata.raw is None and snap["raw"] is None


# -- item 2: a failed pipeline changes nothing ---------------------------------------------------


@pytest.mark.parametrize("exc", [RuntimeError("simulated failure"), KeyboardInterrupt()])
def test_failure_midway_leaves_callers_adata_exactly_as_it_was_and_retry_succeeds(monkeypatch, exc):
    adata = gpu_sc.datasets.synthetic(600, n_genes=300, seed=0)
    snap = _snapshot(adata)

    def boom(*args, **kwargs):
        raise exc

    # pca comes after filtering, the HVG subset and scale: all of them changed the working copy.
    # gpu_sc.tl binds pp's pca when it is first imported: import it before the patch, or it
    # would keep `boom` for the rest of the session (test_catalogue then fails after this).
    importlib.import_module("gpu_sc.tl")
    monkeypatch.setattr(gpu_sc.pp, "pca", boom)
    with pytest.raises(type(exc)):
        gpu_sc.pipeline(adata, FAST, backend="numpy")
    _assert_unchanged(adata, snap)

    monkeypatch.undo()
    out = gpu_sc.pipeline(adata, FAST, backend="numpy")
    assert out is adata and adata.n_obs < snap["shape"][0] and "leiden" in adata.obs
    assert adata.raw is not None and "X_pca" in adata.obsm


def test_copy_true_returns_the_result_and_leaves_the_input():
    adata = gpu_sc.datasets.synthetic(400, n_genes=300, seed=1)
    snap = _snapshot(adata)
    out = gpu_sc.pipeline(adata, FAST, backend="numpy", copy=True)
    assert out is not adata and "leiden" in out.obs
    _assert_unchanged(adata, snap)


# -- item 3: PAGA laid out on an atlas of well-separated types -----------------------------------


def _separated_blocks(n_cells=600, n_types=4, seed=0):
    """Cell types that share no gene at all (block-diagonal counts): the kNN graph falls apart
    into components, and at a low resolution Leiden finds one cluster per component, so no
    PAGA edge exists."""
    s = gpu_sc.datasets.synthetic(
        n_cells,
        n_genes=300,
        n_types=n_types,
        seed=seed,
        difficulty="separated",
        doublet_rate=0.0,
        low_quality_rate=0.0,
    )
    s = s[s.obs["pseudotime"].isna().to_numpy()]  # no cells on the lineage between two types
    types = list(s.obs["cell_type"].cat.categories)
    blocks = [s[(s.obs["cell_type"] == t).to_numpy()] for t in types]
    X = sp.block_diag([sp.csr_matrix(b.X) for b in blocks], format="csr").astype(np.float32)
    var = pd.DataFrame(index=[f"{g}.{t}" for t in types for g in s.var_names])  # MT- kept
    return ad.AnnData(X, obs=pd.concat([b.obs for b in blocks]), var=var)


@pytest.mark.parametrize("backend", ["scanpy", "numpy"])
def test_pipeline_completes_when_no_paga_edge_passes_the_layout_threshold(backend):
    # Before: scanpy.pl.paga raised AttributeError: 'csr_matrix' object has no attribute
    # 'ravel' (scanpy 1.11, scipy >= 1.15) and the pipeline died at paga_layout.
    adata = _separated_blocks()
    cfg = {
        "tsne": {"enabled": False},
        "rank_genes_groups": {"methods": ["t-test"]},
        "leiden": {"resolution": 0.01},
    }
    gpu_sc.pipeline(adata, cfg, backend=backend)
    n_groups = adata.obs["leiden"].nunique()
    assert n_groups >= 2 and adata.uns["paga"]["connectivities"].max() < 0.01
    assert adata.uns["paga"]["pos"].shape == (n_groups, 2)
    assert np.isfinite(adata.uns["paga"]["pos"]).all()
    (layout,) = [p for p in provenance(adata) if p["step"] == "paga_layout"]
    assert "no PAGA edge with weight >= 0.01" in layout["note"]
    assert "X_umap" in adata.obsm  # umap(init_pos='paga') ran from those positions
    assert np.isfinite(adata.obsm["X_umap"]).all()


def test_paga_layout_uses_weak_edges_when_none_reaches_the_threshold():
    adata = _separated_blocks()
    gpu_sc.pipeline(
        adata,
        {
            "leiden": {"resolution": 0.01},
            "umap": {"enabled": False},
            "tsne": {"enabled": False},
            "rank_genes_groups": {"enabled": False},
        },
        backend="numpy",
    )
    n = adata.uns["paga"]["connectivities"].shape[0]
    weak = sp.lil_matrix((n, n))
    weak[0, 1] = weak[1, 0] = 0.005
    adata.uns["paga"]["connectivities"] = weak.tocsr()
    del adata.uns["paga"]["pos"]
    note = plan._paga_layout(adata)
    assert "threshold 0" in note and "1 nonzero edge" in note
    assert adata.uns["paga"]["pos"].shape == (n, 2)


def test_paga_layout_note_says_scanpys_layout_when_edges_pass():
    adata = gpu_sc.datasets.synthetic(600, n_genes=300, seed=0)
    gpu_sc.pipeline(adata, FAST, backend="numpy")
    (layout,) = [p for p in provenance(adata) if p["step"] == "paga_layout"]
    assert layout["note"].startswith("layout 'fr' of the ") and "weight >= 0.01" in layout["note"]


# -- item 4 (runner's checks) --------------------------------------------------------------------


def test_mt_prefix_matching_no_gene_warns_with_prefix_and_count(caplog):
    adata = gpu_sc.datasets.synthetic(400, n_genes=300, seed=0)
    cfg = {
        **FAST,
        "qc": {"mt_prefix": "mt-"},
        "paga": {"enabled": False},
        "leiden": {"enabled": False},
        "rank_genes_groups": {"enabled": False},
    }
    with caplog.at_level(logging.WARNING, logger="gpu_sc"):
        gpu_sc.pipeline(adata, cfg, backend="numpy")
    (msg,) = [r.getMessage() for r in caplog.records if "mt_prefix" in r.getMessage()]
    assert "'mt-' matches none of the 300 genes" in msg


@pytest.mark.parametrize(
    ("resolution", "what"), [(1e-6, "found 1 cluster"), (200.0, r"found \d+ single-cell cluster")]
)
def test_unrankable_clustering_is_named_with_the_resolution_before_the_marker_step(
    resolution, what
):
    adata = gpu_sc.datasets.synthetic(300, n_genes=300, seed=0)
    snap = _snapshot(adata)
    cfg = {**FAST, "leiden": {"resolution": resolution}}
    with pytest.raises(InputError, match=f"leiden at resolution {resolution:g} {what}") as err:
        gpu_sc.pipeline(adata, cfg, backend="numpy")
    assert len(str(err.value)) < 300 and "rank_genes_groups" in str(err.value)
    _assert_unchanged(adata, snap)


def test_non_integer_input_runs_when_normalize_total_and_log1p_are_disabled():
    adata = gpu_sc.datasets.synthetic(400, n_genes=300, seed=0)
    adata.X = adata.X.astype(np.float32)
    adata.X.data = np.log1p(adata.X.data * 0.7)  # already normalised: not integers
    with pytest.raises(InputError, match="disable normalize_total and log1p"):
        gpu_sc.pipeline(adata.copy(), FAST, backend="numpy")
    off = {**FAST, "normalize_total": {"enabled": False}, "log1p": {"enabled": False}}
    # the advice holds; QC then reads log values: one line says so (issue 19)
    with pytest.warns(
        UserWarning,
        match=r"^adata.X does not look like counts \(non-integer "
        r"values, e.g. .*\) and filter_cells, filter_genes, qc run on it as "
        "given",
    ) as rec:
        gpu_sc.pipeline(adata, off, backend="numpy")
    assert len(rec) == 1 and "\n" not in str(rec[0].message)
    assert "leiden" in adata.obs


def test_normalised_input_without_qc_steps_runs_without_the_counts_warning():
    adata = gpu_sc.datasets.synthetic(400, n_genes=300, seed=0)
    adata.X = adata.X.astype(np.float32)
    adata.X.data = np.log1p(adata.X.data * 0.7)
    off = {
        **FAST,
        **{
            k: {"enabled": False}
            for k in (
                "normalize_total",
                "log1p",
                "filter_cells",
                "filter_genes",
                "qc",
                "regress_out",
            )
        },
    }
    gpu_sc.pipeline(adata, off, backend="numpy")  # warnings are errors: none came
    assert "leiden" in adata.obs


# -- item 7: say what ran ------------------------------------------------------------------------


@pytest.fixture
def no_cuda(monkeypatch):
    status = backends.CudaStatus(False, "no driver (simulated)")
    monkeypatch.setattr(cupy_backend, "cuda_status", lambda: status)


def test_explicit_cupy_without_gpu_warns_once_and_records_what_ran(no_cuda, caplog):
    adata = gpu_sc.datasets.synthetic(400, n_genes=300, seed=0)
    with caplog.at_level(logging.WARNING, logger="gpu_sc"):
        gpu_sc.pipeline(adata, FAST, backend="cupy")
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "no driver (simulated)" in warnings[0], warnings
    rec = pipeline_record(adata)
    assert rec["backend"] == "scanpy" and rec["requested_backend"] == "cupy"
    assert list(rec["steps_by_backend"]) == ["scanpy"]
    assert "cupy backend unusable" in rec["backend_reason"]
    dispatched = [p for p in provenance(adata) if p["backend"] != "anndata"]
    assert all(p["requested"] == "cupy" and "no driver" in p["fallback_reason"] for p in dispatched)


def test_strict_turns_unusable_cupy_into_one_line_error_and_changes_nothing(no_cuda):
    adata = gpu_sc.datasets.synthetic(300, n_genes=300, seed=0)
    snap = _snapshot(adata)
    with pytest.raises(FallbackError, match="strict mode .*no driver") as err:
        gpu_sc.pipeline(adata, FAST, backend="cupy", strict=True)
    assert "\n" not in str(err.value)
    _assert_unchanged(adata, snap)


def test_strict_from_environment_makes_a_step_fallback_an_error(monkeypatch):
    @registry.register("toy_strict")
    def toy(adata, ctx):
        raise registry.EngineUnsupported("not this input")

    try:
        adata = ad.AnnData(np.ones((3, 2), dtype=np.float32))
        monkeypatch.setenv("GPU_SC_STRICT", "1")
        with pytest.raises(FallbackError, match="toy_strict: strict mode .*not this input"):
            registry.run_step("toy_strict", adata, {}, scanpy_impl=lambda a: None, backend="numpy")
        with gpu_sc.settings.override(strict=False):  # the setting wins over the environment
            registry.run_step("toy_strict", adata, {}, scanpy_impl=lambda a: None, backend="numpy")
        assert last_record(adata)["backend"] == "scanpy"
    finally:
        registry._ENGINE.pop("toy_strict", None)


def test_successful_chunked_retry_is_logged(caplog):
    calls = []

    @registry.register("toy_chunked", chunkable=True)
    def toy(adata, ctx):
        calls.append(ctx.chunked)
        if not ctx.chunked:
            raise MemoryError("out of device memory (simulated)")

    try:
        adata = ad.AnnData(np.ones((3, 2), dtype=np.float32))
        with caplog.at_level(logging.WARNING, logger="gpu_sc"):
            registry.run_step("toy_chunked", adata, {}, scanpy_impl=lambda a: None, backend="numpy")
        assert calls == [False, True]
        assert "toy_chunked on numpy succeeded in row chunks" in caplog.text
        assert "out of device memory (simulated)" in caplog.text
        rec = last_record(adata)
        assert rec["backend"] == "numpy" and "retried in row chunks" in rec["note"]
    finally:
        registry._ENGINE.pop("toy_chunked", None)


def test_engine_warns_when_it_shrinks_n_neighbors(caplog):
    adata = ad.AnnData(np.random.default_rng(0).normal(size=(10, 5)).astype(np.float32))
    with caplog.at_level(logging.WARNING, logger="gpu_sc"):
        gpu_sc.pp.neighbors(adata, n_neighbors=15, use_rep="X", backend="numpy")
    assert "adjusting to n_neighbors = 6" in caplog.text
    assert adata.uns["neighbors"]["params"]["n_neighbors"] == 6


def test_progress_bars_are_silent_off_a_terminal(capsys):
    from gpu_sc._progress import progress

    assert list(progress(range(5), desc="test")) == list(range(5))
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_atomic_false_runs_in_place_without_the_copy():
    adata = gpu_sc.datasets.synthetic(400, n_genes=300, seed=0)
    seen = []
    gpu_sc.pipeline(
        adata,
        FAST,
        backend="numpy",
        atomic=False,
        progress=lambda step, s: seen.append(len(provenance(adata))),
    )
    assert seen == sorted(seen) and seen[0] >= 1  # the caller's object grows step by step
    assert seen[-1] == len(provenance(adata))
