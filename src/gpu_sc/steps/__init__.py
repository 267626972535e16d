"""Public step functions are scanpy's, re-exposed through the dispatcher.

Each step keeps scanpy's name, signature, defaults and output keys (so ``scanpy.pl.*`` plots
its results) and adds one keyword, ``backend=``. The signature is scanpy's own, read from the
installed scanpy, so the two cannot drift apart.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import catalogue
from ..dispatch.arrays import is_dask, module_of
from ..dispatch.registry import bind_scanpy_params, run_step

logger = logging.getLogger("gpu_sc")

# Steps that read a graph, not values: nothing to check at their boundary.
_GRAPH_STEPS = frozenset(s.name for s in catalogue.STEPS if s.graph_input)
# What a step outside the catalogue reads at the boundary: the defaults (X or a layer).
_UNCATALOGUED = catalogue.Step("")

__all__ = ["make_step"]

_BACKEND_PARAM = inspect.Parameter(
    "backend", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="str | None"
)


def make_step(name: str, scanpy_func: Callable[..., Any], namespace: str) -> Callable[..., Any]:
    """Wrap ``scanpy.<namespace>.<name>`` as a dispatched gpu_sc step."""

    @functools.wraps(scanpy_func)  # run_step reads scanpy's defaults through it
    def scanpy_impl(adata, **params):
        return scanpy_func(adata, **params)

    def call(*args, backend: str | None = None, strict: bool | None = None,
             output: str | None = None, chunk_rows: int | None = None,
             max_device_nnz: int | None = None, precision: str | None = None,
             **kwargs):  # fmt: skip
        try:
            adata, params = bind_scanpy_params(scanpy_func, args, kwargs)
        except TypeError as exc:
            raise TypeError(f"gpu_sc.{namespace}.{name}: {exc}") from None
        copy = bool(params.get("copy", False))
        if copy:
            # Run in place on a copy: engine and scanpy paths then share one code path.
            adata = adata.copy()
            params["copy"] = False
        lazy = False
        if name not in _GRAPH_STEPS:  # after the copy: a promotion must not touch the caller's
            lazy = check_step_input(f"gpu_sc.{namespace}.{name}", adata, params)
        result = run_step(name, adata, params, scanpy_impl=scanpy_impl, backend=backend,
                          strict=strict, output=output, chunk_rows=chunk_rows,
                          max_device_nnz=max_device_nnz, precision=precision,
                          lazy=lazy)  # fmt: skip
        return adata if copy else result

    @functools.wraps(scanpy_func)
    def step(*args, backend: str | None = None, **kwargs):
        return call(*args, backend=backend, **kwargs)

    #: The step with every execution option as an argument (the pipeline's runner passes
    #: ``strict``, ``output`` and the chunking this way instead of through global settings).
    step.call = call

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


def _step_values(kind: str, adata, params: dict) -> tuple[str, Any, str | None]:
    """``(description, matrix, layer)`` of what a step reads (``layer``: where it lives,
    ``"X"`` for ``adata.X``, None when it is not in X or a layer); ``kind``: its entry's
    :attr:`~gpu_sc.catalogue.Step.values`."""
    if kind == "use_rep":
        rep = params.get("use_rep")
        if rep is None and params.get("n_pcs") != 0 and adata.n_vars > 50 and "X_pca" in adata.obsm:
            rep = "X_pca"  # scanpy's choice for use_rep=None
        if rep not in (None, "X") and rep in adata.obsm:
            return f"adata.obsm[{rep!r}]", adata.obsm[rep], None
        return "adata.X", adata.X, "X"
    layer = params.get("layer")
    if layer is not None:
        if layer not in adata.layers:
            return f"adata.layers[{layer!r}]", None, None  # scanpy names the missing layer
        return f"adata.layers[{layer!r}]", adata.layers[layer], layer
    if kind == "raw_or_X":
        use_raw = params.get("use_raw")
        if adata.raw is not None and (use_raw or use_raw is None):
            return "adata.raw.X", adata.raw.X, None
    return "adata.X", adata.X, "X"


def check_step_input(step: str, adata, params: dict) -> bool:
    """The step API's boundary: a matrix the step reads must hold cells and genes and be
    finite (one reduction, on the array's own device); float16 becomes float32 (logged).
    What it reads and checks is declared by the step's catalogue entry.

    Returns whether that matrix is a Dask array (the step then runs on the Dask path; its
    values were checked where it was read, by :func:`gpu_sc.pipeline.validate_counts`, not
    here: a reduction would read the whole matrix from disk once more).

    Raises :class:`~gpu_sc.pipeline.validate.InputError` naming the step, the matrix and
    what to do.
    """
    from ..pipeline.validate import InputError

    if not hasattr(adata, "obsm"):
        return False  # not an AnnData (scanpy's array input): scanpy handles it
    entry = catalogue.get(step.split(".")[-1]) or _UNCATALOGUED
    if (adata.n_obs == 0 or adata.n_vars == 0) and not entry.empty_ok:
        raise InputError(f"{step}: the AnnData is empty ({adata.n_obs} cells x {adata.n_vars} "
                         "genes); nothing to compute, check the filters that ran before")  # fmt: skip
    if entry.components:
        n_comps, smallest = params.get("n_comps"), min(adata.shape)
        if smallest < 2:
            raise InputError(f"{step}: PCA needs at least 2 cells and 2 genes, got "
                             f"{adata.n_obs} cells x {adata.n_vars} genes; keep more cells or "
                             "genes (e.g. more highly variable genes)")  # fmt: skip
        if n_comps is not None and not 1 <= n_comps <= smallest:
            raise InputError(f"{step}: n_comps={n_comps} must be between 1 and {smallest} "
                             f"for {adata.n_obs} cells x {adata.n_vars} genes; lower it")  # fmt: skip
    what, values, where = _step_values(entry.values, adata, params)
    if values is None:
        return False
    if getattr(values, "dtype", None) == np.float16 and where is not None:
        logger.warning("%s: %s is float16; converted to float32 (float16 is not "
                       "computed correctly)", step, what)  # fmt: skip
        values = values.astype(np.float32)
        if adata.is_view:  # a view writes back into its float16 parent: make it actual first
            adata._init_as_actual(adata.copy())
        if where == "X":
            adata.X = values
        else:
            adata.layers[where] = values
    if is_dask(values):
        return True
    bad = count_nonfinite(values)
    if bad:
        raise InputError(f"{step}: {what} contains {bad} NaN or infinite value(s); "
                         "remove or impute them (e.g. numpy.nan_to_num) before this step")  # fmt: skip
    return False


def count_nonfinite(values) -> int:
    """How many NaN/Inf ``values`` (dense or sparse, host or device) holds; 0 after a single
    sum when there are none (the count is only taken when the sum is not finite)."""
    data = getattr(values, "data", values) if hasattr(values, "nnz") else values
    dtype = getattr(data, "dtype", None)
    if dtype is None:
        data = np.asarray(data)
        dtype = data.dtype
    if np.dtype(dtype).kind not in "fc":
        return 0
    xp = module_of(data).xp
    with np.errstate(over="ignore", invalid="ignore"):
        total = xp.sum(data)
    if bool(xp.isfinite(total)):
        return 0
    return int(xp.count_nonzero(~xp.isfinite(data)))  # the sum may merely have overflowed
