"""One registry of engine implementations, and :func:`run_step`, the only way steps execute.

Adding an engine step is a local change: a kernel module in :mod:`gpu_sc.kernels`, an engine
function in :mod:`gpu_sc.engine` named by the step's entry in :mod:`gpu_sc.catalogue` (which
also declares the parameter values it supports: checked here before it runs), and its tests.
:func:`register` remains for implementations outside the catalogue (tests, experiments). Steps without an
engine implementation run on scanpy, with the fallback logged and recorded.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import catalogue
from .._scanpy_compat import engine_gap, engine_params
from .._settings import settings
from ..backends import Backend, canonical_backend_name, engine_names, resolve, resolve_precision
from ..catalogue import get, unsupported
from .arrays import ArrayModule, array_module, dask_info, to_host_array
from .arrays import is_device_array as on_device
from .provenance import kernel_log, record_step, summarize_kernels, writes_uns

__all__ = [
    "DaskUnsupported",
    "EngineContext",
    "EngineUnsupported",
    "FallbackError",
    "InputError",
    "engine_impl",
    "impl_for",
    "implemented_steps",
    "is_default",
    "move_to_host",
    "quiet_unusable_cuda",
    "register",
    "run_scanpy",
    "run_step",
    "strict_mode",
]

logger = logging.getLogger("gpu_sc")


class EngineUnsupported(Exception):
    """Raised by an engine implementation *before it changes anything* when a parameter
    value or input is outside what it implements; the step then runs on scanpy."""


class DaskUnsupported(ValueError):
    """A step reads a Dask array and has no Dask implementation of the requested parameters
    (scanpy cannot stand in: it would read the whole matrix into memory)."""


class InputError(ValueError):
    """The input AnnData cannot be processed as given (defined here, below the steps and the
    pipeline that both raise it; :mod:`gpu_sc.pipeline.validate` re-exports it)."""

    __module__ = "gpu_sc.pipeline.validate"  # its public home, unchanged


class FallbackError(RuntimeError):
    """A step would have fallen back to scanpy while strict mode is on
    (``strict=True``, ``gpu_sc.settings.strict`` or ``GPU_SC_STRICT=1``)."""


def strict_mode() -> bool:
    """Whether fallbacks are errors: ``settings.strict``, or ``GPU_SC_STRICT`` when it is None."""
    if settings.strict is not None:
        return bool(settings.strict)
    return os.environ.get("GPU_SC_STRICT", "").strip().lower() not in ("", "0", "false", "no")


# Set by the pipeline, which warns once that CUDA is unusable: the per-step fallbacks for that
# reason are then logged at INFO (still recorded in the provenance).
_UNUSABLE_CUDA_WARNED = contextvars.ContextVar("gpu_sc_unusable_cuda_warned", default=False)


@contextlib.contextmanager
def quiet_unusable_cuda():
    token = _UNUSABLE_CUDA_WARNED.set(True)
    try:
        yield
    finally:
        _UNUSABLE_CUDA_WARNED.reset(token)


@dataclass(frozen=True)
class EngineContext:
    """What an engine implementation is given besides AnnData and scanpy's parameters."""

    am: ArrayModule
    chunked: bool = False  # stream the matrix from host in row blocks of ``chunk_rows``
    chunk_rows: int = 200_000
    max_device_nnz: int = 2**31 - 1  # above this, a host sparse matrix is streamed in row blocks
    #: ``"exact"`` or ``"fast"`` (see ``gpu_sc.settings.precision``), resolved for the backend
    precision: str = "exact"
    #: what the implementation chose (e.g. the kNN algorithm and its parameters); recorded
    #: in the provenance's ``engine`` column beside the precision
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Impl:
    func: Callable[..., Any]
    chunkable: bool


_ENGINE: dict[str, dict[str, _Impl]] = {}
_NOT_RUN = object()  # sentinel: no implementation has produced a result yet


def register(step: str, backends: tuple[str, ...] | None = None, *, chunkable: bool = False):
    """Register ``func(adata, ctx, **scanpy_params)`` as the engine implementation of ``step``
    on ``backends`` (None: every registered engine backend, :func:`gpu_sc.backends.engine_names`).

    Contract for the function: compute everything first and write into ``adata`` last, so
    that an exception (out of memory, :class:`EngineUnsupported`) leaves ``adata`` as it was.
    ``chunkable=True`` means it honours ``ctx.chunked``; an out-of-memory error is then
    retried chunked before falling back to scanpy.
    """

    def deco(func):
        for b in engine_names() if backends is None else backends:
            _ENGINE.setdefault(step, {})[canonical_backend_name(b, allow_auto=False)] = _Impl(
                func, chunkable
            )
        return func

    return deco


def impl_for(step: str, backend: str | Backend) -> _Impl | None:
    """The implementation of ``step`` on ``backend`` (one registered for it, or the
    catalogue's engine function), or None."""
    _load_engine()
    return _ENGINE.get(step, {}).get(canonical_backend_name(backend, allow_auto=False))


def engine_impl(step: str, backend: str | Backend) -> Callable[..., Any] | None:
    """The engine function registered for ``(step, backend)``, or None. Called directly, it
    checks the parameter values the catalogue declares first (as :func:`run_step` does) and
    raises :class:`EngineUnsupported` for one it does not implement."""
    impl = impl_for(step, backend)
    if impl is None:
        return None

    def checked(adata, ctx, **params):
        params = engine_params(step, params)
        entry = get(step)
        if entry is not None and entry.namespaces:  # reconciled with the installed scanpy
            params, lacking = _engine_params(impl.func, params, entry.scanpy_func())
            if lacking:
                raise EngineUnsupported(
                    f"the engine does not implement parameter(s) {', '.join(lacking)} of the "
                    "installed scanpy"
                )
        why = unsupported(step, params)
        if why is not None:
            raise EngineUnsupported(why)
        return impl.func(adata, ctx, **params)

    return functools.wraps(impl.func)(checked)


def implemented_steps(backend: str | Backend) -> list[str]:
    """Names of the steps the engine implements for ``backend``."""
    _load_engine()
    name = canonical_backend_name(backend, allow_auto=False)
    return sorted(s for s, by_backend in _ENGINE.items() if name in by_backend)


_LOADED: set[str] = set()  # engine backends the catalogue's implementations are registered for


def _load_engine() -> None:
    """Register the engine implementations the catalogue names for every engine backend
    (:func:`gpu_sc.backends.engine_names`), on first use and for a backend registered since."""
    new = [b for b in engine_names() if b not in _LOADED]
    if not new:
        return

    for entry in catalogue.engine_steps():
        func = catalogue.resolve(entry.engine)
        for b in new:
            _ENGINE.setdefault(entry.name, {}).setdefault(b, _Impl(func, entry.chunkable))
    _LOADED.update(new)


def is_gpu_resource_error(exc: BaseException) -> bool:
    """True for errors that mean 'the GPU could not do this now' rather than a bug:
    out of device memory, no device, a CUDA driver/runtime failure."""
    names = {c.__name__ for c in type(exc).__mro__}
    if names & {"OutOfMemoryError", "CUDARuntimeError", "CUDADriverError", "CompileException"}:
        return True
    return isinstance(exc, MemoryError)


def run_step(
    step: str,
    adata,
    params: dict[str, Any],
    *,
    scanpy_impl: Callable[..., Any],
    backend: str | None = None,
    strict: bool | None = None,
    output: str | None = None,
    chunk_rows: int | None = None,
    max_device_nnz: int | None = None,
    precision: str | None = None,
    lazy: bool = False,
) -> Any:
    """Run ``step`` on ``adata`` with scanpy-named ``params`` on the resolved backend.

    Falls back to ``scanpy_impl`` (logged and recorded) when the engine has no
    implementation, rejects a parameter or does not know one the installed scanpy passes
    with a value other than scanpy's default, CUDA is unusable, or a GPU resource error
    persists after a chunked retry; in strict mode raises :class:`FallbackError` instead.
    Returns whatever the implementation returns.

    The execution options are arguments; each ``None`` takes the global setting:
    ``backend`` (``settings.backend``), ``strict`` (:func:`strict_mode`), ``output``
    (``settings.output``: ``"host"`` moves engine results to host after the step,
    ``"device"`` leaves them on the GPU for the next step), ``chunk_rows`` and
    ``max_device_nnz`` (the engine's row blocks; ``settings.chunk_rows`` /
    ``settings.max_device_nnz``), ``precision`` (``settings.precision``: ``"auto"``,
    ``"exact"`` or ``"fast"``, resolved by :func:`gpu_sc.resolve_precision`; the one that ran
    is recorded in the provenance's ``engine`` column). ``lazy=True`` (the matrix the
    step reads is a Dask array) runs the step's Dask implementation from the catalogue
    instead, its blocks in CuPy when the backend resolves to a usable ``cupy``, else in
    NumPy; without one it raises :class:`DaskUnsupported`.
    """
    opts = _options(backend, strict, output, chunk_rows, max_device_nnz, precision)
    if lazy:
        return _run_lazy(
            step, adata, params, scanpy_impl, opts.requested, opts.backend, opts.why, opts.strict
        )
    impl, kept, fallback_reason, unusable = _engine_choice(step, opts.backend, params, scanpy_impl)
    t0 = time.perf_counter()
    result, why, used, engine_record = _NOT_RUN, opts.why, opts.backend.name, {}
    if impl is not None:
        _prelude(step, adata, params)
        result, t0, why, fallback_reason, engine_record = _run_engine(step, adata, impl, kept, opts)
    if result is _NOT_RUN:
        used = "scanpy"
        if fallback_reason is not None:
            _announce_fallback(step, fallback_reason, strict=opts.strict, unusable=unusable)
        move_to_host(adata)
        t0 = time.perf_counter()
        result = scanpy_impl(adata, **params)
    seconds = time.perf_counter() - t0
    record_step(
        result if _is_anndata(result) else adata,
        step=step,
        backend=used,
        requested=opts.requested,
        fallback_reason=fallback_reason,
        params=params,
        seconds=seconds,
        note=why,
        engine=engine_record,
    )
    return result


@dataclass(frozen=True)
class _Options:
    """:func:`run_step`'s execution options, each ``None`` replaced by its setting."""

    backend: Backend  # resolved
    requested: str  # as asked (a name or "auto"), for the provenance
    why: str
    strict: bool
    output: str
    chunk_rows: int
    max_device_nnz: int
    precision: str  # "exact" or "fast"


def _options(backend, strict, output, chunk_rows, max_device_nnz, precision) -> _Options:
    requested = canonical_backend_name(settings.backend if backend is None else backend)
    chosen, why = resolve(backend if isinstance(backend, Backend) else requested)
    return _Options(
        backend=chosen,
        requested=requested,
        why=why,
        strict=strict_mode() if strict is None else bool(strict),
        output=settings.output if output is None else output,
        chunk_rows=settings.chunk_rows if chunk_rows is None else int(chunk_rows),
        max_device_nnz=settings.max_device_nnz if max_device_nnz is None else int(max_device_nnz),
        precision=resolve_precision(precision, chosen),
    )


def _engine_choice(
    step: str, chosen: Backend, params: dict[str, Any], scanpy_impl: Callable[..., Any]
) -> tuple[_Impl | None, dict[str, Any], str | None, bool]:
    """``(implementation or None, the params to call it with, why not, backend unusable)``:
    whether the engine can take this call on ``chosen`` before anything runs."""
    if chosen.delegates:
        return None, {}, None, False
    impl = chosen.implementation(step)
    usable, reason = chosen.available()
    if impl is None:
        return None, {}, f"no {chosen.name} engine implementation of {step!r} yet", False
    if not usable:  # the pipeline warned once: the per-step fallbacks are then quiet
        return None, {}, f"{chosen.name} backend unusable: {reason}", True

    spelled = engine_params(step, params)  # scanpy's newer spellings of defaults
    kept, lacking = _engine_params(impl.func, spelled, scanpy_impl)
    why_not = unsupported(step, spelled) or engine_gap(step, spelled)
    if lacking:
        return (
            None,
            {},
            f"{step} on {chosen.name}: the engine does not implement parameter(s) "
            f"{', '.join(lacking)} of the installed scanpy",
            False,
        )
    if why_not is not None:  # a parameter value the engine does not implement
        return None, {}, f"{step} on {chosen.name}: {why_not}", False
    return impl, kept, None, False


def _run_engine(step: str, adata, impl: _Impl, kept: dict[str, Any], opts: _Options):
    """Run the engine implementation, retried in row chunks after a GPU resource error when
    it is chunkable. Returns ``(result or _NOT_RUN, start time of the attempt that ran, the
    note, the fallback reason, the engine record)``."""
    name, why = opts.backend.name, opts.why
    am = opts.backend.array_module()
    result, fallback_reason, first_error = _NOT_RUN, None, ""
    t0 = time.perf_counter()
    for chunked in [False, True] if impl.chunkable else [False]:
        ctx = EngineContext(
            am=am,
            chunked=chunked,
            chunk_rows=opts.chunk_rows,
            max_device_nnz=opts.max_device_nnz,
            precision=opts.precision,
        )
        try:
            t0 = time.perf_counter()
            with kernel_log() as kernels_ran:  # fused kernels: what ran, for the note
                result = impl.func(adata, ctx, **kept)
            am.synchronize()
            if kernels_ran:
                why += f"; {summarize_kernels(kernels_ran)}"
            if chunked:
                why += f"; retried in row chunks after a GPU resource error ({first_error})"
                logger.warning(
                    "gpu_sc: %s on %s succeeded in row chunks after a GPU resource error (%s)",
                    step,
                    name,
                    first_error,
                )
            break
        except EngineUnsupported as exc:
            fallback_reason = f"{step} on {name}: {exc}"
            break
        except Exception as exc:
            if not is_gpu_resource_error(exc):
                raise
            fallback_reason = f"{step} on {name}: {type(exc).__name__}: {exc}"
            first_error = first_error or f"{type(exc).__name__}: {exc}"
            am.release_memory()
    if result is _NOT_RUN:
        return result, t0, why, fallback_reason, {}
    if opts.output == "host":
        move_to_host(adata)
    am.release_memory()
    return result, t0, why, None, {"precision": opts.precision, **ctx.details}


def _announce_fallback(step: str, fallback_reason: str, *, strict: bool, unusable: bool) -> None:
    """Strict mode: raise :class:`FallbackError`; else log the fallback (at INFO when the
    pipeline already warned that the backend is unusable here)."""
    if strict:
        raise FallbackError(
            f"{step}: strict mode forbids falling back to scanpy: {fallback_reason}"
        )
    quiet = _UNUSABLE_CUDA_WARNED.get() and unusable
    logger.log(
        logging.INFO if quiet else logging.WARNING,
        "gpu_sc: falling back to scanpy for %s: %s",
        step,
        fallback_reason,
    )


def run_scanpy(
    step: str,
    call: Callable[[], Any],
    params: dict[str, Any],
    *,
    reason: str,
    backend: str | None = None,
    strict: bool | None = None,
    target: Any = None,
) -> Any:
    """Run ``call()`` (scanpy's function, with the caller's own arguments) for ``step``: a
    fallback for ``reason`` (logged, recorded, a :class:`FallbackError` in strict mode),
    unless the backend resolves to scanpy anyway. ``target``: the AnnData the record may
    go to (None: the record is only logged)."""
    requested = canonical_backend_name(settings.backend if backend is None else backend)
    chosen, why = resolve(backend if isinstance(backend, Backend) else requested)
    strict = strict_mode() if strict is None else bool(strict)
    fallback_reason = None if chosen.delegates else f"{step} on {chosen.name}: {reason}"
    if fallback_reason is not None:
        if strict:
            raise FallbackError(
                f"{step}: strict mode forbids falling back to scanpy: {fallback_reason}"
            )
        logger.warning("gpu_sc: falling back to scanpy for %s: %s", step, fallback_reason)
    t0 = time.perf_counter()
    result = call()
    record_step(
        target,
        step=step,
        backend="scanpy",
        requested=requested,
        fallback_reason=fallback_reason,
        params=params,
        seconds=time.perf_counter() - t0,
        note=why,
    )
    return result


def _run_lazy(step, adata, params, scanpy_impl, requested, chosen, why, strict) -> Any:
    """:func:`run_step` for a step whose input matrix is a Dask array: the catalogue's Dask
    implementation, recorded with backend ``"dask"`` and where its blocks ran."""

    entry = catalogue.get(step)
    if entry is None or entry.dask is None:
        on_dask = ", ".join(s.name for s in catalogue.STEPS if s.dask is not None)
        raise DaskUnsupported(
            f"{step}: its input is a Dask array and {step} has no Dask implementation (the "
            f"Dask path runs {on_dask}); compute the matrix first (adata.X = "
            "adata.X.compute()) if it fits in memory"
        )
    func = catalogue.resolve(entry.dask)
    spelled = engine_params(step, params)
    kept, lacking = _engine_params(func, spelled, scanpy_impl)
    why_not = (
        f"parameter(s) {', '.join(lacking)} of the installed scanpy"
        if lacking
        else catalogue.unsupported(step, spelled)
    )
    if why_not is not None:
        raise DaskUnsupported(
            f"{step} on the Dask path: {why_not} is not implemented there; "
            "compute the matrix first (adata.X = adata.X.compute()) to run "
            "it in memory, or change the parameter"
        )
    blocks, fallback_reason = "numpy", None
    if not chosen.delegates:
        usable, reason = chosen.available()
        if usable:
            blocks = chosen.array_module_name
        else:
            fallback_reason = f"{chosen.name} backend unusable: {reason}; blocks in numpy"
            if strict:
                raise FallbackError(f"{step}: strict mode forbids {fallback_reason}")
            quiet = _UNUSABLE_CUDA_WARNED.get()
            logger.log(
                logging.INFO if quiet else logging.WARNING,
                "gpu_sc: %s on dask: %s",
                step,
                fallback_reason,
            )

    _prelude(step, adata, params)
    t0 = time.perf_counter()
    try:
        result = func(adata, EngineContext(am=array_module(blocks)), **kept)
    except EngineUnsupported as exc:
        raise DaskUnsupported(f"{step} on the Dask path: {exc}") from None
    seconds = time.perf_counter() - t0
    info = dask_info(adata.X)
    if writes_uns():
        adata.uns.setdefault("gpu_sc", {})["dask"] = info
    note = (
        f"dask: {info['scheduler']}, {info['n_workers']} workers, {info.get('n_blocks')} "
        f"blocks of <= {info.get('chunk_rows')} rows, blocks in {blocks}"
    )
    if chosen.delegates:  # "auto" without CUDA, or "scanpy"
        note += f" (backend {chosen.name} ({why}): the Dask path runs NumPy blocks)"
    record_step(
        adata,
        step=step,
        backend="dask",
        requested=requested,
        fallback_reason=fallback_reason,
        params=params,
        seconds=seconds,
        note=note,
    )
    return result


def _prelude(step: str, adata, params: dict[str, Any]) -> None:
    """The step's catalogued prelude: scanpy's warnings and argument errors for this call."""

    entry = catalogue.get(step)
    if entry is not None and entry.prelude is not None:
        catalogue.resolve(entry.prelude)(adata, params)


def _engine_params(
    func: Callable[..., Any], params: dict[str, Any], scanpy_impl: Callable[..., Any]
) -> tuple[dict[str, Any], list[str]]:
    """Split scanpy-named ``params`` by what the engine function ``func`` accepts.

    Returns ``(the params to call it with, names it cannot honour)``. The engine's signature
    is written against one scanpy release; the installed one may pass a parameter the engine
    does not know (a newer scanpy's addition, an older one's since removed). Such a parameter
    at scanpy's default is dropped (the engine's behaviour is scanpy's default behaviour);
    at any other value it is named, and the step falls back to scanpy: never a TypeError.
    An engine function with ``**kwargs`` accepts every name (and rejects what it cannot do
    with :class:`EngineUnsupported`).
    """
    accepted = inspect.signature(func).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        return params, []
    defaults: Mapping[str, inspect.Parameter]
    try:  # scanpy's defaults: ``scanpy_impl`` is scanpy's function or wraps it
        defaults = inspect.signature(scanpy_impl).parameters
    except (TypeError, ValueError):
        defaults = {}
    kept, lacking = {}, []
    for name, value in params.items():
        if name in accepted:
            kept[name] = value
        elif name not in defaults or not is_default(value, defaults[name].default):
            lacking.append(f"{name}={value!r}")
    # A parameter the engine requires but this scanpy does not pass (an older scanpy).
    lacking += [
        f"{name} (not passed by the installed scanpy)"
        for i, (name, p) in enumerate(accepted.items())
        if i >= 2  # (adata, ctx)
        and name not in params
        and p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    return kept, lacking


def is_default(value: Any, default: Any) -> bool:
    if value is default:
        return True
    if default is inspect.Parameter.empty:
        return False
    try:
        return type(value) is type(default) and bool(value == default)
    except Exception:  # arrays and other values without a single truth value
        return False


def _is_anndata(x) -> bool:
    return type(x).__name__ == "AnnData"


def move_to_host(adata) -> None:
    """Replace device arrays in ``adata`` by host copies (scanpy and h5ad need host arrays)."""
    if not _is_anndata(adata):
        return
    if on_device(adata.X):
        adata.X = to_host_array(adata.X, None)
    for mapping in (adata.layers, adata.obsm, adata.varm, adata.obsp):
        for key in list(mapping.keys()):
            if on_device(mapping[key]):
                mapping[key] = to_host_array(mapping[key], None)


def bind_scanpy_params(func: Callable, args: tuple, kwargs: dict) -> tuple[Any, dict]:
    """Bind a call to scanpy's signature of ``func``: ``(adata, params with defaults)``."""
    bound = inspect.signature(func).bind(*args, **kwargs)
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    first = next(iter(arguments))
    adata = arguments.pop(first)
    # scanpy functions with ``**kwargs`` (leiden's clustering_args): flatten them back.
    for name, p in inspect.signature(func).parameters.items():
        if p.kind is inspect.Parameter.VAR_KEYWORD and name in arguments:
            arguments.update(arguments.pop(name))
    return adata, arguments
