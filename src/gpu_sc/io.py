"""Reading and writing results: atomic h5ad output, provenance kept across the round trip."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_path", "read_h5ad", "write_h5ad"]


class atomic_path:
    """Context manager yielding a temporary path beside ``path``; renamed onto ``path`` only
    when the block succeeds, so a failure never leaves a half-written file."""

    def __init__(self, path: str | Path, suffix: str | None = None):
        self.path = Path(path)
        self.suffix = suffix if suffix is not None else self.path.suffix

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=f".tmp{self.suffix}"
        )
        os.close(fd)
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
        return False


def write_h5ad(adata, path: str | Path) -> Path:
    """Write ``adata`` atomically; ``uns['gpu_sc']`` (lists of dicts) is stored as JSON text."""
    path = Path(path)
    info = adata.uns.get("gpu_sc")
    if info is not None:
        adata.uns["gpu_sc"] = {"json": json.dumps(info, default=str)}
    try:
        with atomic_path(path) as tmp:
            adata.write_h5ad(tmp)
    finally:
        if info is not None:
            adata.uns["gpu_sc"] = info
    return path


def read_h5ad(path: str | Path):
    """Read an h5ad written by :func:`write_h5ad` (or any h5ad), restoring ``uns['gpu_sc']``."""
    import anndata as ad

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    adata = ad.read_h5ad(path)
    info = adata.uns.get("gpu_sc")
    if isinstance(info, dict) and set(info) == {"json"}:
        adata.uns["gpu_sc"] = json.loads(str(info["json"]))
    return adata
