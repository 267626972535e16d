"""Backend names, the auto probe, settings scopes, the registry, fallbacks and provenance."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import gpu_sc
from gpu_sc.backends import cupy as cupy_backend
from gpu_sc.dispatch import backends, registry
from gpu_sc.dispatch.provenance import provenance, recording
from gpu_sc.dispatch.registry import EngineUnsupported, register, run_step
from gpu_sc.provenance import last as last_record


@pytest.mark.parametrize(
    ("alias", "expected"),
    [("cpu", "scanpy"), ("GPU", "cupy"), ("cuda", "cupy"), ("numpy", "numpy"), ("auto", "auto")],
)
def test_backend_aliases_map_to_canonical_names(alias, expected):
    assert backends.canonical_backend_name(alias) == expected


def test_unknown_backend_name_is_rejected_with_choices():
    with pytest.raises(ValueError, match="unknown backend 'tpu'.*scanpy"):
        backends.canonical_backend_name("tpu")


def test_auto_without_cuda_resolves_to_scanpy_and_says_why(monkeypatch):
    status = backends.CudaStatus(False, "CuPy is not importable (test)")
    monkeypatch.setattr(cupy_backend, "cuda_status", lambda: status)
    chosen, why = backends.resolve_backend("auto")
    assert chosen == "scanpy"
    assert "CuPy is not importable (test)" in why


def test_auto_with_cuda_resolves_to_cupy(monkeypatch):
    status = backends.CudaStatus(True, "ok", device_name="Fake H100")
    monkeypatch.setattr(cupy_backend, "cuda_status", lambda: status)
    assert backends.resolve_backend("auto")[0] == "cupy"


def test_cuda_probe_never_raises_and_is_cached():
    first = backends.cuda_status()
    assert isinstance(first.available, bool) and first.reason
    assert backends.cuda_status() is first


def test_probe_can_be_disabled_by_environment(monkeypatch):
    backends.cuda_status.cache_clear()
    monkeypatch.setenv("GPU_SC_DISABLE_CUDA", "1")
    try:
        status = backends.cuda_status()
        assert not status.available and "GPU_SC_DISABLE_CUDA" in status.reason
    finally:
        monkeypatch.delenv("GPU_SC_DISABLE_CUDA")
        backends.cuda_status.cache_clear()


def test_global_setting_context_manager_and_per_call_argument():
    assert gpu_sc.settings.backend == "auto"
    with gpu_sc.use_backend("cpu"):
        assert gpu_sc.settings.backend == "scanpy"
        assert backends.resolve_backend()[0] == "scanpy"
        assert backends.resolve_backend("numpy")[0] == "numpy"  # per call wins
    assert gpu_sc.settings.backend == "auto"


def test_settings_override_rejects_unknown_names():
    with pytest.raises(TypeError, match="unknown setting"):
        with gpu_sc.settings.override(chunk_size=3):
            pass


def test_step_keeps_scanpy_signature_plus_backend():
    import inspect

    import scanpy as sc

    ours = inspect.signature(gpu_sc.pp.normalize_total).parameters
    theirs = inspect.signature(sc.pp.normalize_total).parameters
    assert list(ours)[: len(theirs)] == list(theirs)
    assert all(ours[k].default == theirs[k].default for k in theirs if k != "adata")
    assert ours["backend"].default is None


# -- registry, fallback and provenance with a toy step ---------------------------------------


@pytest.fixture
def toy_registry(monkeypatch):
    """An isolated registry, so toy steps never leak into the real one."""
    monkeypatch.setattr(registry, "_ENGINE", {})
    monkeypatch.setattr(registry, "_load_engine", lambda: None)
    return registry._ENGINE


def _toy_adata():
    import anndata as ad

    return ad.AnnData(np.arange(12, dtype=np.float32).reshape(4, 3))


def _scanpy_double(adata, *, factor):
    adata.obs["out"] = np.asarray(adata.X).sum(1) * factor


def test_engine_step_runs_on_numpy_and_is_recorded(toy_registry):
    @register("toy")
    def toy(adata, ctx, *, factor):
        xp = ctx.am.xp
        adata.obs["out"] = ctx.am.to_host(xp.asarray(adata.X).sum(1) * factor)

    adata = _toy_adata()
    with recording():  # as inside the pipeline: the record goes into uns, with its timing
        run_step("toy", adata, {"factor": 2}, scanpy_impl=_scanpy_double, backend="numpy")
    (rec,) = provenance(adata)
    assert rec["step"] == "toy" and rec["backend"] == "numpy" and rec["requested"] == "numpy"
    assert rec["fallback_reason"] is None and rec["params"] == {"factor": 2}
    assert rec["seconds"] >= 0
    assert adata.uns["gpu_sc"]["versions"]["scanpy"]
    assert last_record(adata) == rec == last_record()


def test_missing_engine_step_falls_back_to_scanpy_with_warning(toy_registry, caplog):
    adata = _toy_adata()
    with caplog.at_level(logging.WARNING, logger="gpu_sc"):
        run_step("toy", adata, {"factor": 3}, scanpy_impl=_scanpy_double, backend="numpy")
    rec = last_record(adata)
    assert rec["backend"] == "scanpy" and rec["requested"] == "numpy"
    assert "no numpy engine implementation" in rec["fallback_reason"]
    assert "falling back to scanpy for toy" in caplog.text
    np.testing.assert_array_equal(adata.obs["out"], np.asarray(adata.X).sum(1) * 3)


def test_gpu_resource_error_retries_chunked_then_falls_back(toy_registry):
    calls = []

    @register("toy", chunkable=True)
    def toy(adata, ctx, *, factor):
        calls.append(ctx.chunked)
        raise MemoryError("out of device memory (simulated)")

    adata = _toy_adata()
    run_step("toy", adata, {"factor": 1}, scanpy_impl=_scanpy_double, backend="numpy")
    assert calls == [False, True]
    rec = last_record(adata)
    assert rec["backend"] == "scanpy" and "MemoryError" in rec["fallback_reason"]


def test_engine_unsupported_parameter_falls_back(toy_registry):
    @register("toy")
    def toy(adata, ctx, *, factor):
        raise EngineUnsupported(f"factor={factor} not implemented")

    adata = _toy_adata()
    run_step("toy", adata, {"factor": 5}, scanpy_impl=_scanpy_double, backend="numpy")
    assert "factor=5 not implemented" in last_record(adata)["fallback_reason"]


def test_explicit_cupy_without_cuda_is_recorded_as_fallback(toy_registry, monkeypatch):
    monkeypatch.setattr(
        cupy_backend, "cuda_status", lambda: backends.CudaStatus(False, "no driver")
    )

    @register("toy")
    def toy(adata, ctx, *, factor):  # pragma: no cover - must not run
        raise AssertionError("engine must not run without CUDA")

    adata = _toy_adata()
    run_step("toy", adata, {"factor": 1}, scanpy_impl=_scanpy_double, backend="cupy")
    rec = last_record(adata)
    assert rec["backend"] == "scanpy" and "no driver" in rec["fallback_reason"]


def test_programming_errors_in_engine_are_not_swallowed(toy_registry):
    @register("toy")
    def toy(adata, ctx, *, factor):
        raise KeyError("a bug")

    with pytest.raises(KeyError, match="a bug"):
        run_step("toy", _toy_adata(), {"factor": 1}, scanpy_impl=_scanpy_double, backend="numpy")


def test_copy_true_returns_new_annotated_object_and_leaves_input():
    adata = _toy_adata()
    adata.X = adata.X + 1
    out = gpu_sc.pp.normalize_total(adata, target_sum=10, copy=True, backend="scanpy")
    assert out is not adata and "gpu_sc" not in adata.uns and "gpu_sc" not in out.uns
    assert last_record(out)["step"] == "normalize_total" and last_record(adata) is None
    np.testing.assert_allclose(np.asarray(out.X).sum(1), 10, rtol=1e-6)
