"""Public step functions are scanpy's, re-exposed through the dispatcher.

Each step keeps scanpy's name, signature, defaults and output keys (so ``scanpy.pl.*`` plots
its results) and adds one keyword, ``backend=``. The signature is scanpy's own, read from the
installed scanpy, so the two cannot drift apart.
"""

from __future__ import annotations

import functools
import inspect
import logging
import types
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import catalogue
from .._scanpy_compat import handle_mask_var
from ..dispatch.arrays import is_dask, module_of
from ..dispatch.registry import InputError, bind_scanpy_params, is_default, run_scanpy, run_step

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

    legacy = legacy_arguments(scanpy_func)
    entry = catalogue.get(name)

    def call(
        *args,
        backend: str | None = None,
        strict: bool | None = None,
        output: str | None = None,
        chunk_rows: int | None = None,
        max_device_nnz: int | None = None,
        precision: str | None = None,
        **kwargs,
    ):
        if legacy is not None:  # scanpy's renamed and formerly positional arguments
            args, kwargs = legacy(*args, **kwargs)
        options = dict(
            backend=backend,
            strict=strict,
            output=output,
            chunk_rows=chunk_rows,
            max_device_nnz=max_device_nnz,
            precision=precision,
        )
        data = args[0] if args else kwargs.get(_first_name(scanpy_func))
        if data is not None and not _is_anndata(data):  # a bare matrix, as scanpy takes it
            return _call_on_matrix(name, namespace, entry, scanpy_func, args, kwargs, options)
        return _call_on_anndata(name, namespace, scanpy_func, scanpy_impl, args, kwargs, options)

    @functools.wraps(scanpy_func)
    def step(*args, backend: str | None = None, **kwargs):
        return call(*args, backend=backend, **kwargs)

    #: The step with every execution option as an argument (the pipeline's runner passes
    #: ``strict``, ``output`` and the chunking this way instead of through global settings).
    step.call = call

    _dress(step, scanpy_func, name, namespace)
    return step


def _call_on_anndata(
    name: str,
    namespace: str,
    scanpy_func: Callable,
    scanpy_impl: Callable,
    args: tuple,
    kwargs: dict,
    options: dict,
) -> Any:
    """Run a step called on an AnnData: validated, copied if asked, dispatched by run_step."""
    try:
        adata, params = bind_scanpy_params(scanpy_func, args, kwargs)
    except TypeError:
        # A call scanpy's signature rejects: scanpy's own TypeError (raised by Python
        # when binding the call, before scanpy's function runs any of its code).
        return scanpy_func(*args, **kwargs)
    check_step_params(f"gpu_sc.{namespace}.{name}", adata, params)
    copy = bool(params.get("copy", False))
    if copy:
        # Run in place on a copy: engine and scanpy paths then share one code path.
        adata = adata.copy()
        params["copy"] = False
    lazy = False
    if name not in _GRAPH_STEPS:  # after the copy: a promotion must not touch the caller's
        lazy = check_step_input(f"gpu_sc.{namespace}.{name}", adata, params)
    result = run_step(name, adata, params, scanpy_impl=scanpy_impl, **options, lazy=lazy)
    return adata if copy else result


def _dress(step: Callable, scanpy_func: Callable, name: str, namespace: str) -> None:
    """Give ``step`` scanpy's signature plus ``backend``, a docstring and its module."""
    sig = inspect.signature(scanpy_func)
    params = list(sig.parameters.values())
    var_kw = [p for p in params if p.kind is inspect.Parameter.VAR_KEYWORD]
    params = [p for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD]
    step.__signature__ = sig.replace(parameters=[*params, _BACKEND_PARAM, *var_kw])  # type: ignore[attr-defined]
    step.__doc__ = (
        f"scanpy.{namespace}.{name}, dispatched by gpu_sc.\n\n"
        "Same parameters, defaults and outputs as scanpy's function, plus ``backend``:\n"
        "``None`` (the global ``gpu_sc.settings.backend``), ``'auto'``, ``'scanpy'``,\n"
        "``'numpy'`` or ``'cupy'``. The call is recorded in ``gpu_sc.provenance.history()``\n"
        "(in ``adata.uns['gpu_sc']`` too with ``gpu_sc.settings.record_steps``).\n\n"
        "scanpy's documentation follows.\n\n" + (scanpy_func.__doc__ or "")
    )
    step.__module__ = f"gpu_sc.{namespace}"


def _is_anndata(x) -> bool:
    return any(c.__name__ == "AnnData" for c in type(x).__mro__)


def _first_name(func: Callable) -> str:
    return next(iter(inspect.signature(func).parameters))


def legacy_arguments(scanpy_func: Callable) -> Callable[..., tuple[tuple, dict]] | None:
    """scanpy's own handling of deprecated calls to ``scanpy_func``, as a function that
    returns the call's ``(args, kwargs)`` in today's form (None if it has no such wrapper).

    scanpy wraps a function whose API changed in decorators that translate the old call and
    warn (``renamed_arg``: ``log1p(X=...)`` -> ``log1p(data, ...)`` with a FutureWarning;
    ``old_positionals``: formerly positional parameters, with a DeprecationWarning). Each
    wrapper calls the function it wraps from its closure: rebuilt with the innermost function
    replaced by one that returns its arguments, the chain translates a call exactly as
    scanpy does, with scanpy's warnings, before gpu_sc binds it to scanpy's signature.
    """
    chain = []
    func = scanpy_func
    while (inner := getattr(func, "__wrapped__", None)) is not None:
        cells = getattr(func, "__closure__", None) or ()
        if not any(_cell_holds(c, inner) for c in cells):
            break  # not a translating wrapper (e.g. singledispatch's): the call's target
        chain.append((func, inner))
        func = inner
    if not chain:
        return None

    def arguments(*args, **kwargs):
        return args, kwargs

    arguments.__name__ = chain[-1][1].__name__  # scanpy's messages name the function
    rebuilt: Callable = arguments
    for wrapper, inner in reversed(chain):
        cells = tuple(
            types.CellType(rebuilt) if _cell_holds(c, inner) else c for c in wrapper.__closure__
        )
        new = types.FunctionType(
            wrapper.__code__, wrapper.__globals__, wrapper.__name__, wrapper.__defaults__, cells
        )
        new.__kwdefaults__ = wrapper.__kwdefaults__
        rebuilt = new
    return rebuilt


def _cell_holds(cell, value) -> bool:
    try:
        return cell.cell_contents is value
    except ValueError:  # an empty cell
        return False


def _call_on_matrix(
    name: str,
    namespace: str,
    entry,
    scanpy_func: Callable,
    args: tuple,
    kwargs: dict,
    options: dict,
) -> Any:
    """A step called on a bare matrix (ndarray, scipy sparse, Dask array) instead of an
    AnnData, returning what scanpy returns for it.

    The engine runs it on a temporary AnnData holding the matrix, where the step's catalogue
    entry declares an array form (:attr:`~gpu_sc.catalogue.Step.array_returns`) and the
    call uses only the parameters that form honours; otherwise scanpy's function runs with
    exactly the caller's arguments (a fallback, logged and recorded, unless scanpy's
    function takes an AnnData only: it then reports the error itself).
    """
    data = args[0] if args else kwargs[_first_name(scanpy_func)]

    def scanpy_call():
        return scanpy_func(*args, **kwargs)

    form = entry.array_returns if entry is not None else None
    if form is None:
        return scanpy_call()  # scanpy's function takes an AnnData only: its error
    params, why = _matrix_fallback_reason(entry, scanpy_func, args, kwargs, data)
    if why is not None:
        return run_scanpy(
            name,
            scanpy_call,
            params,
            reason=why,
            backend=options["backend"],
            strict=options["strict"],
        )
    import anndata as ad

    copy = bool(params.get("copy"))
    matrix = data.copy() if copy else data
    if not isinstance(matrix, np.ndarray) and not hasattr(matrix, "nnz"):
        matrix = matrix.tocsr()  # a sparse array of another format, as scanpy's check_array
    tmp = ad.AnnData(matrix)
    return_info = bool(params.get("return_info"))
    params = dict(params, copy=False)
    if form == "mask":
        params["inplace"] = False
    if form == "pca":
        params["return_info"] = False
    check_step_input(f"gpu_sc.{namespace}.{name}", tmp, params)

    @functools.wraps(scanpy_func)
    def scanpy_impl(adata, **p):  # the engine's fallback: scanpy on the temporary AnnData
        return scanpy_func(adata, **p)

    result = run_step(name, tmp, params, scanpy_impl=scanpy_impl, **options)
    if form == "mask":
        return result
    if form == "pca":
        return _pca_result(tmp, params, return_info)
    out = tmp.X
    if copy or out is data:
        return out
    return _write_back(data, out)


def _matrix_fallback_reason(entry, scanpy_func: Callable, args: tuple, kwargs: dict, data):
    """Return the bound parameters of a bare-matrix call and why scanpy must run it (None:
    the engine's array form takes it); a string mask without an AnnData raises scanpy's error.
    """
    try:
        _, params = bind_scanpy_params(scanpy_func, args, kwargs)
    except TypeError:  # arguments of scanpy's array function only (scale's return_mean_std)
        return dict(kwargs), "arguments only scanpy's array function takes"
    defaults = inspect.signature(scanpy_func).parameters
    other = [
        f"{k}={_short(v)}"
        for k, v in params.items()
        if k not in entry.array_params and not is_default(v, defaults[k].default)
    ]
    for key in ("mask_obs", "mask_var"):
        if key in entry.array_params and isinstance(params.get(key), str):
            # scanpy's own error (a column name means nothing without an AnnData): the
            # input is wrong, not a gap of the engine, so no fallback
            msg = "Cannot refer to mask with string without providing anndata object as argument"
            raise ValueError(msg)
    why = (
        f"{', '.join(other)} with a bare matrix"
        if other
        else "a bare Dask array (scanpy returns its lazy result)"
        if is_dask(data)
        else None
        if isinstance(data, np.ndarray) or hasattr(data, "tocsr")
        else f"a bare {type(data).__name__}"
    )
    return params, why


def _pca_result(tmp, params: dict, return_info: bool):
    """Return scanpy's array-form PCA result from the temporary AnnData ``tmp``."""
    x_pca = tmp.obsm["X_pca"]
    if not return_info:
        return x_pca

    info = tmp.uns["pca"]
    _, mask = handle_mask_var(
        tmp, params["mask_var"], use_highly_variable=params["use_highly_variable"]
    )
    loadings = tmp.varm["PCs"] if mask is None else tmp.varm["PCs"][mask]
    components = np.ascontiguousarray(loadings.T, dtype=info["variance"].dtype)
    return x_pca, components, info["variance_ratio"], info["variance"]


def _short(value) -> str:
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"<{type(value).__name__} of shape {tuple(value.shape)}>"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _write_back(data, out):
    """``out`` written into the caller's matrix ``data`` where scanpy transforms it in place
    (same type, shape, dtype and, for sparse, the same stored positions); else ``out``."""
    if type(out) is not type(data) or out.shape != data.shape or out.dtype != data.dtype:
        return out
    if isinstance(data, np.ndarray):
        if not data.flags.writeable:
            return out
        data[...] = out
        return data
    if (
        hasattr(data, "indptr")
        and data.nnz == out.nnz
        and np.array_equal(data.indptr, out.indptr)
        and np.array_equal(data.indices, out.indices)
    ):
        data.data[...] = out.data
        return data
    return out


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


def check_step_params(step: str, adata, params: dict) -> None:
    """The boundary's checks of a call's parameters, declared in the catalogue: one warning
    line per :attr:`~gpu_sc.catalogue.Step.cautions` rule that fires, and an
    :class:`~gpu_sc.pipeline.validate.InputError` when the AnnData has too few cells for the
    call (:attr:`~gpu_sc.catalogue.Step.too_few`), on every backend."""
    import warnings

    name = step.split(".")[-1]
    for text in catalogue.cautions(name, params):
        warnings.warn(f"{step}: {text}", UserWarning, stacklevel=4)
    entry = catalogue.get(name)
    if entry is not None and entry.too_few is not None and hasattr(adata, "n_obs"):
        why = entry.too_few(adata.n_obs, params)
        if why:
            raise InputError(f"{step}: {why}")


def check_step_input(step: str, adata, params: dict) -> bool:
    """The step API's boundary: a matrix the step reads must hold cells and genes and be
    finite unless its entry says otherwise (one reduction, on the array's own device); float16 becomes float32 (logged).
    What it reads and checks is declared by the step's catalogue entry.

    Returns whether that matrix is a Dask array (the step then runs on the Dask path; its
    values were checked where it was read, by :func:`gpu_sc.pipeline.validate_counts`, not
    here: a reduction would read the whole matrix from disk once more).

    Raises :class:`~gpu_sc.pipeline.validate.InputError` naming the step, the matrix and
    what to do.
    """
    if not hasattr(adata, "obsm"):
        return False  # not an AnnData (scanpy's array input): scanpy handles it
    entry = catalogue.get(step.split(".")[-1]) or _UNCATALOGUED
    if (adata.n_obs == 0 or adata.n_vars == 0) and not entry.empty_ok:
        raise InputError(
            f"{step}: the AnnData is empty ({adata.n_obs} cells x {adata.n_vars} "
            "genes); nothing to compute, check the filters that ran before"
        )
    if entry.components:
        n_comps, smallest = params.get("n_comps"), min(adata.shape)
        if smallest < 2:
            raise InputError(
                f"{step}: PCA needs at least 2 cells and 2 genes, got "
                f"{adata.n_obs} cells x {adata.n_vars} genes; keep more cells or "
                "genes (e.g. more highly variable genes)"
            )
        if n_comps is not None and not 1 <= n_comps <= smallest:
            solver = params.get("svd_solver") or "arpack"  # scanpy's default; sklearn's text
            raise InputError(
                f"{step}: n_components={n_comps} must be between 1 and "
                f"min(n_samples, n_features)={smallest} with svd_solver={solver!r} "
                f"({adata.n_obs} cells x {adata.n_vars} genes); lower n_comps"
            )
    what, values, where = _step_values(entry.values, adata, params)
    if values is None:
        return False
    if getattr(values, "dtype", None) == np.float16 and where is not None:
        logger.warning(
            "%s: %s is float16; converted to float32 (float16 is not computed correctly)",
            step,
            what,
        )
        values = values.astype(np.float32)
        if adata.is_view:  # a view writes back into its float16 parent: make it actual first
            adata._init_as_actual(adata.copy())
        if where == "X":
            adata.X = values
        else:
            adata.layers[where] = values
    if is_dask(values):
        return True
    if not entry.finite_only:
        return False
    bad = count_nonfinite(values)
    if bad:
        raise InputError(
            f"{step}: {what} contains {bad} NaN or infinite value(s); "
            "remove or impute them (e.g. numpy.nan_to_num) before this step"
        )
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
