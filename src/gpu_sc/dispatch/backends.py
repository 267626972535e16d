"""Compatibility re-export: backends live in :mod:`gpu_sc.backends`."""

from __future__ import annotations

from ..backends import CudaStatus, canonical_backend_name, cuda_status, names, resolve_backend

__all__ = ["BACKENDS", "CudaStatus", "canonical_backend_name", "cuda_status", "resolve_backend"]

#: Names of the built-in backends (the registry, :func:`gpu_sc.backends.names`, has them all).
BACKENDS = names()
