"""Reading and writing results: atomic h5ad output, provenance kept across the round trip."""

from __future__ import annotations

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
    """Write ``adata`` atomically: to a temporary file beside ``path``, renamed on success.

    ``uns['gpu_sc']`` is stored natively (see :mod:`gpu_sc.dispatch.provenance`), so
    ``anndata.read_h5ad`` reads the file back without gpu_sc. A block of an older form (lists
    of dicts) is first converted to that form in ``adata`` itself.
    """
    from .dispatch.provenance import UNS_KEY, to_native

    path = Path(path)
    if UNS_KEY in adata.uns:
        adata.uns[UNS_KEY] = to_native(adata.uns[UNS_KEY])
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)
    return path


def read_h5ad(path: str | Path):
    """Read an h5ad (any, including one written by :func:`write_h5ad`).

    Files from earlier gpu_sc versions, which stored ``uns['gpu_sc']`` as JSON text, are
    converted to the current form; read ``provenance`` with
    :func:`gpu_sc.dispatch.provenance.provenance`.
    """
    import anndata as ad

    from .dispatch.provenance import UNS_KEY, to_native

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    adata = ad.read_h5ad(path)
    if UNS_KEY in adata.uns:
        adata.uns[UNS_KEY] = to_native(adata.uns[UNS_KEY])
    return adata
