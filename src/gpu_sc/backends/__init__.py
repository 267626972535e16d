"""Backends as objects: a registry of :class:`Backend` instances, resolved once per call.

``backend=`` anywhere in gpu_sc takes a registered name, an alias, ``"auto"`` or a
:class:`Backend`. Built in: ``scanpy`` (scanpy's functions), ``numpy`` (the engine on
NumPy/SciPy) and ``cupy`` (the engine on CuPy). A new backend is one module: subclass
:class:`Backend` (or a built-in one) and :func:`register` an instance; the pipeline, parity,
the CLI and the benchmark list backends from here.
"""

from __future__ import annotations

from .._settings import PRECISIONS, settings
from .base import Backend
from .cupy import CudaStatus, CupyBackend, cuda_status
from .numpy import NumpyBackend
from .scanpy import ScanpyBackend

__all__ = [
    "Backend",
    "CudaStatus",
    "available",
    "canonical_backend_name",
    "cuda_status",
    "delegates",
    "engine_names",
    "find",
    "is_gpu",
    "get",
    "names",
    "register",
    "registered",
    "resolve",
    "resolve_backend",
    "resolve_precision",
    "unregister",
    "use_backend",
]

_BACKENDS: dict[str, Backend] = {}
_ALIASES: dict[str, str] = {}


def register(backend: Backend, *, replace: bool = False) -> Backend:
    """Add ``backend`` (an instance) under its name and aliases; return it.

    A name or alias already taken raises ``ValueError`` unless ``replace``.
    """
    if not isinstance(backend, Backend):
        raise TypeError(f"register() takes a Backend instance, got {type(backend).__name__}")
    keys = [backend.name.lower(), *(a.lower() for a in backend.aliases)]
    if not backend.name or "auto" in keys:
        raise ValueError(f"invalid backend name or alias in {keys}")
    if not replace:
        taken = [k for k in keys if k in _BACKENDS or k in _ALIASES]
        if taken:
            raise ValueError(f"backend name(s) {taken} already registered")
    _BACKENDS[keys[0]] = backend
    for alias in keys[1:]:
        _ALIASES[alias] = keys[0]
    return backend


def unregister(name: str) -> None:
    """Remove the backend ``name`` and its aliases (tests; the built-ins stay registrable)."""
    backend = _BACKENDS.pop(name.lower())
    for alias in backend.aliases:
        _ALIASES.pop(alias.lower(), None)


def registered() -> list[Backend]:
    """List the registered backends, in registration order."""
    return list(_BACKENDS.values())


def delegates(name: str | Backend | None) -> bool:
    """Whether ``name`` is a backend that runs scanpy's functions (the reference)."""
    backend = find(name)
    return backend is not None and backend.delegates


def is_gpu(name: str | Backend | None) -> bool:
    """Whether ``name`` is a backend that computes on an accelerator."""
    backend = find(name)
    return backend is not None and backend.is_gpu


def names() -> tuple[str, ...]:
    """Canonical names of the registered backends, in registration order."""
    return tuple(_BACKENDS)


def engine_names() -> tuple[str, ...]:
    """Names of the backends on which gpu_sc's engine executes (those that do not delegate)."""
    return tuple(n for n, b in _BACKENDS.items() if not b.delegates)


def available() -> list[Backend]:
    """List the registered backends usable here."""
    return [b for b in _BACKENDS.values() if b.available()[0]]


def find(name: str | Backend | None) -> Backend | None:
    """Look a backend up like :func:`get`, answering None for what is not one.

    ``None``, ``"auto"``, the provenance's ``"dask"`` and ``"anndata"`` are no backends.
    """
    if isinstance(name, Backend) or name is None:
        return name
    key = str(name).strip().lower()
    return _BACKENDS.get(_ALIASES.get(key, key))


def canonical_backend_name(name: str | Backend, *, allow_auto: bool = True) -> str:
    """Map a user-facing backend name, alias or :class:`Backend` to a registered name.

    ``"auto"`` stays ``"auto"`` when ``allow_auto``; an unknown name raises ``ValueError``.
    """
    if isinstance(name, Backend):
        return name.name
    if not isinstance(name, str):
        raise TypeError(f"backend must be a string, got {type(name).__name__}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key in _BACKENDS or (allow_auto and key == "auto"):
        return key
    valid = [*_BACKENDS, *_ALIASES, *(["auto"] if allow_auto else [])]
    raise ValueError(f"unknown backend {name!r}; choose one of {valid}")


def get(name: str | Backend) -> Backend:
    """Return the registered :class:`Backend` of a name or alias (for ``"auto"``: :func:`resolve`)."""
    if isinstance(name, Backend):
        return name
    return _BACKENDS[canonical_backend_name(name, allow_auto=False)]


def resolve(name: str | Backend | None = None) -> tuple[Backend, str]:
    """Resolve a requested backend (``None`` = the global setting) to a registered one.

    Returns ``(backend, why)``. ``"auto"`` becomes the first available backend that prefers
    to be auto's choice (``cupy`` when :func:`cuda_status` is available), else the default
    (``scanpy``). An explicit backend is returned even when it cannot run here; the step then
    records a fallback (never a silent switch).
    """
    if isinstance(name, Backend):
        return name, f"requested {name.name!r}"
    requested = canonical_backend_name(settings.backend if name is None else name)
    if requested != "auto":
        return _BACKENDS[requested], f"requested {requested!r}"
    unusable = []
    for backend in _BACKENDS.values():
        if backend.auto_preferred:
            ok, reason = backend.available()
            if ok:
                return backend, f"auto: {backend.hardware} device {backend.device_name()!r} usable"
            unusable.append(f"no usable {backend.hardware} ({reason})")
    default = next(b for b in _BACKENDS.values() if b.auto_default)
    return default, f"auto: {'; '.join(unusable) or 'no preferred backend'}; using {default.name}"


def resolve_backend(name: str | Backend | None = None) -> tuple[str, str]:
    """:func:`resolve`, naming the backend: ``(name, why)``."""
    backend, why = resolve(name)
    return backend.name, why


def resolve_precision(precision: str | None, backend: str | Backend) -> str:
    """Resolve ``precision`` (``None``: ``settings.precision``) on ``backend``.

    Returns ``"exact"`` or ``"fast"``: ``"auto"`` is the backend's default (``"exact"`` on
    numpy and scanpy, ``"fast"`` on cupy).
    """
    p = settings.precision if precision is None else precision
    if p not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {p!r}")
    if p == "auto":
        return get(backend).default_precision
    return p


def use_backend(name: str | Backend):
    """Context manager: run every step inside the block on backend ``name``."""
    return settings.override(backend=canonical_backend_name(name, allow_auto=True))


for _builtin in (ScanpyBackend(), NumpyBackend(), CupyBackend()):
    register(_builtin)
del _builtin
