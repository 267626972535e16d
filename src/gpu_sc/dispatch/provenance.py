"""Per-step provenance in ``adata.uns["gpu_sc"]``: what ran where, how, and how long."""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["environment", "provenance", "record_step"]

UNS_KEY = "gpu_sc"


def record_step(
    adata,
    *,
    step: str,
    backend: str,
    requested: str,
    fallback_reason: str | None,
    params: Mapping[str, Any],
    seconds: float,
    note: str = "",
) -> None:
    """Append one step to ``adata.uns["gpu_sc"]["provenance"]``."""
    info = adata.uns.setdefault(UNS_KEY, {})
    info.setdefault("provenance", [])
    if not isinstance(info["provenance"], list):  # read back from h5ad as JSON text
        info["provenance"] = json.loads(str(info["provenance"]))
    info["provenance"].append(
        {
            "step": step,
            "backend": backend,
            "requested": requested,
            "fallback_reason": fallback_reason,
            "params": jsonable(dict(params)),
            "seconds": float(seconds),
            "note": note,
        }
    )
    info.update(environment(backend))


def provenance(adata) -> list[dict[str, Any]]:
    """The list of executed steps recorded on ``adata`` (empty when none)."""
    prov = adata.uns.get(UNS_KEY, {}).get("provenance", [])
    if isinstance(prov, str):
        return json.loads(prov)
    return list(prov)


def environment(backend: str | None = None) -> dict[str, Any]:
    """Versions of the libraries that produce results, and the GPU's name if one is used."""
    from importlib.metadata import PackageNotFoundError, version

    from .. import __version__

    def _v(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"
    from .backends import cuda_status

    versions = {
        "gpu_sc": __version__,
        "scanpy": _v("scanpy"),
        "anndata": _v("anndata"),
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    status = cuda_status() if backend == "cupy" else None
    if status is not None and status.cupy_version:
        versions["cupy"] = status.cupy_version
    out = {"versions": versions, "machine": platform.node() or "unknown"}
    if status is not None and status.device_name:
        out["device"] = status.device_name
    return out


def jsonable(value: Any) -> Any:
    """Parameters as plain JSON-able values (for h5ad and the report)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray) and value.size <= 64:
        return value.tolist()
    if isinstance(value, type):
        return value.__name__
    return f"<{type(value).__name__}>"
