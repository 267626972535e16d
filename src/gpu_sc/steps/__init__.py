"""Public step functions are scanpy's, re-exposed through the dispatcher.

Each step keeps scanpy's name, signature, defaults and output keys (so ``scanpy.pl.*`` plots
its results) and adds one keyword, ``backend=``. The signature is scanpy's own, read from the
installed scanpy, so the two cannot drift apart.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from ..dispatch.registry import bind_scanpy_params, run_step

__all__ = ["make_step"]

_BACKEND_PARAM = inspect.Parameter(
    "backend", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="str | None"
)


def make_step(name: str, scanpy_func: Callable[..., Any], namespace: str) -> Callable[..., Any]:
    """Wrap ``scanpy.<namespace>.<name>`` as a dispatched gpu_sc step."""

    def scanpy_impl(adata, **params):
        return scanpy_func(adata, **params)

    @functools.wraps(scanpy_func)
    def step(*args, backend: str | None = None, **kwargs):
        adata, params = bind_scanpy_params(scanpy_func, args, kwargs)
        copy = bool(params.get("copy", False))
        if copy:
            # Run in place on a copy: engine and scanpy paths then share one code path.
            adata = adata.copy()
            params["copy"] = False
        result = run_step(name, adata, params, scanpy_impl=scanpy_impl, backend=backend)
        return adata if copy else result

    sig = inspect.signature(scanpy_func)
    params = list(sig.parameters.values())
    var_kw = [p for p in params if p.kind is inspect.Parameter.VAR_KEYWORD]
    params = [p for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD]
    step.__signature__ = sig.replace(parameters=[*params, _BACKEND_PARAM, *var_kw])
    step.__doc__ = (
        f"scanpy.{namespace}.{name}, dispatched by gpu_sc.\n\n"
        "Same parameters, defaults and outputs as scanpy's function, plus ``backend``:\n"
        "``None`` (the global ``gpu_sc.settings.backend``), ``'auto'``, ``'scanpy'``,\n"
        "``'numpy'`` or ``'cupy'``. The call is recorded in ``adata.uns['gpu_sc']``.\n\n"
        "scanpy's documentation follows.\n\n" + (scanpy_func.__doc__ or "")
    )
    step.__module__ = f"gpu_sc.{namespace}"
    return step
