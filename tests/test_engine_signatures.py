"""Every engine implementation against the *installed* scanpy's signature.

The engine's signatures are written against one scanpy release, while ``pyproject.toml``
admits a range. :func:`gpu_sc.dispatch.registry.run_step` reconciles the two: a scanpy
parameter the engine does not accept is dropped at scanpy's default and makes the step fall
back to scanpy (with the parameter named) at any other value; never a ``TypeError``.
"""

from __future__ import annotations

import inspect
import logging

import anndata as ad
import numpy as np
import pytest
import scanpy as sc

import gpu_sc
from gpu_sc.dispatch import engine_impl, implemented_steps, registry
from gpu_sc.provenance import last as last_record

STEPS = implemented_steps("numpy")
_VAR_KW = inspect.Parameter.VAR_KEYWORD


def _scanpy_func(step: str):
    return getattr(sc.pp, step, None) or getattr(sc.tl, step)


def _named(sig: inspect.Signature, skip: int) -> dict[str, inspect.Parameter]:
    params = list(sig.parameters.values())[skip:]
    return {p.name: p for p in params if p.kind is not _VAR_KW}


def test_every_step_has_an_engine_implementation_to_check():
    assert len(STEPS) >= 15, STEPS


@pytest.mark.parametrize("step", STEPS)
def test_engine_accepts_or_falls_back_on_every_installed_scanpy_parameter(step):
    engine = engine_impl(step, "numpy")
    scanpy_sig = inspect.signature(_scanpy_func(step))
    engine_sig = inspect.signature(engine)
    scanpy_params = _named(scanpy_sig, 1)  # (adata, ...)
    engine_params = _named(engine_sig, 2)  # (adata, ctx, ...)
    engine_var_kw = any(p.kind is _VAR_KW for p in engine_sig.parameters.values())

    # scanpy's **kwargs (leiden's clustering_args, rank_genes_groups' kwds) are flattened into
    # the call by bind_scanpy_params: the engine must take them as **kwargs too.
    if any(p.kind is _VAR_KW for p in scanpy_sig.parameters.values()):
        assert engine_var_kw, f"{step}: scanpy takes **kwargs, the engine does not"

    lacking = [] if engine_var_kw else [n for n in scanpy_params if n not in engine_params]
    call = {n: p.default for n, p in scanpy_params.items()}  # what bind_scanpy_params passes
    for name in lacking:  # handled by run_step's rule: dropped at the default, else fallback
        default = scanpy_params[name].default
        assert default is not inspect.Parameter.empty, (
            f"{step}: scanpy's required parameter {name!r} is unknown to the engine"
        )
        kept, why = registry._engine_params(engine, call, _scanpy_func(step))
        assert name not in kept and why == [], (step, name, why)
        kept, why = registry._engine_params(engine, {**call, name: object()}, _scanpy_func(step))
        assert len(why) == 1 and why[0].startswith(f"{name}="), (step, name, why)

    # With the installed scanpy the engine must actually run: everything it requires is
    # passed by scanpy (a parameter only the engine has needs a default).
    required = [
        n
        for n, p in engine_params.items()
        if p.default is inspect.Parameter.empty and n not in scanpy_params
    ]
    assert required == [], f"{step}: the engine requires {required}, scanpy does not pass them"


def _counts(n_obs: int = 40, n_vars: int = 30) -> ad.AnnData:
    rng = np.random.default_rng(0)
    return ad.AnnData(rng.poisson(2.0, size=(n_obs, n_vars)).astype(np.float32))


@pytest.fixture
def engine_without(monkeypatch):
    """Replace an engine implementation by one whose signature lacks ``drop`` (a parameter
    a newer scanpy added, say) and/or requires ``extra`` (one an older scanpy lacks)."""

    def install(step: str, *, drop: str | None = None, extra: str | None = None):
        real = engine_impl(step, "numpy")
        sig = inspect.signature(real)
        scanpy_params = inspect.signature(_scanpy_func(step)).parameters
        default = scanpy_params[drop].default if drop else None

        def narrowed(adata, ctx, **params):
            if drop:
                assert drop not in params, "run_step passed a parameter the engine lacks"
                params[drop] = default
            if extra:
                params.pop(extra)
            return real(adata, ctx, **params)

        params = [p for p in sig.parameters.values() if p.name != drop]
        if extra:
            params.append(inspect.Parameter(extra, inspect.Parameter.KEYWORD_ONLY))
        narrowed.__signature__ = sig.replace(parameters=params)
        old = registry._ENGINE[step]["numpy"]
        monkeypatch.setitem(
            registry._ENGINE[step], "numpy", registry._Impl(narrowed, old.chunkable)
        )

    return install


def test_unknown_parameter_at_scanpy_default_runs_on_the_engine(engine_without):
    engine_without("normalize_total", drop="exclude_highly_expressed")
    adata = _counts()
    gpu_sc.pp.normalize_total(adata, target_sum=1e4, backend="numpy")
    rec = last_record(adata)
    assert rec["backend"] == "numpy" and rec["fallback_reason"] is None
    np.testing.assert_allclose(np.asarray(adata.X).sum(1), 1e4, rtol=1e-5)


def test_unknown_parameter_with_a_value_falls_back_naming_it(engine_without, caplog):
    engine_without("normalize_total", drop="exclude_highly_expressed")
    adata, expected = _counts(), _counts()
    sc.pp.normalize_total(expected, target_sum=1e4, exclude_highly_expressed=True, max_fraction=0.9)
    with caplog.at_level(logging.WARNING, logger="gpu_sc"):
        gpu_sc.pp.normalize_total(
            adata, target_sum=1e4, exclude_highly_expressed=True, max_fraction=0.9, backend="numpy"
        )
    rec = last_record(adata)
    assert rec["backend"] == "scanpy" and rec["requested"] == "numpy"
    assert "exclude_highly_expressed=True" in rec["fallback_reason"]
    assert "does not implement parameter" in rec["fallback_reason"]
    assert "exclude_highly_expressed" in caplog.text
    np.testing.assert_array_equal(np.asarray(adata.X), np.asarray(expected.X))


def test_unknown_parameter_in_strict_mode_is_a_fallback_error(engine_without):
    engine_without("log1p", drop="base")
    with gpu_sc.settings.override(strict=True):
        with pytest.raises(gpu_sc.dispatch.FallbackError, match="base=2"):
            gpu_sc.pp.log1p(_counts(), base=2, backend="numpy")


def test_engine_parameter_the_installed_scanpy_lacks_falls_back(engine_without):
    engine_without("log1p", extra="only_in_a_newer_engine")
    adata = _counts()
    gpu_sc.pp.log1p(adata, backend="numpy")
    rec = last_record(adata)
    assert rec["backend"] == "scanpy"
    assert "only_in_a_newer_engine (not passed by the installed scanpy)" in rec["fallback_reason"]
