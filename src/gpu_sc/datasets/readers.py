"""Read a count matrix from a 10x directory, a 10x tarball, a 10x .h5 or an .h5ad."""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path

__all__ = ["read"]


def read(path: str | Path):
    """Read raw counts as AnnData, whichever of the usual layouts ``path`` is.

    - a 10x directory (``matrix.mtx[.gz]`` + ``genes.tsv``/``features.tsv``), or a folder
      holding exactly one such directory below it (``filtered_gene_bc_matrices/hg19``);
    - a ``.tar.gz`` of such a directory (10x's download);
    - a 10x HDF5 file (``.h5``);
    - an ``.h5ad`` file.
    """
    import anndata as ad
    import scanpy as sc

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"input not found: {path} (expected a 10x directory, .tar.gz, .h5 or .h5ad)"
        )
    name = path.name.lower()
    if path.is_dir():
        return sc.read_10x_mtx(_find_mtx_dir(path), var_names="gene_symbols", cache=False)
    if name.endswith((".tar.gz", ".tgz")):
        with tempfile.TemporaryDirectory(prefix="gpu_sc_") as tmp:
            with tarfile.open(path) as tar:
                tar.extractall(tmp, filter="data")
            adata = sc.read_10x_mtx(_find_mtx_dir(Path(tmp)), var_names="gene_symbols")
            return adata
    if name.endswith(".h5ad"):
        from ..io import read_h5ad

        return read_h5ad(path)
    if name.endswith(".h5"):
        return sc.read_10x_h5(path)
    if name.endswith((".mtx", ".mtx.gz")):
        return sc.read_10x_mtx(path.parent, var_names="gene_symbols")
    raise ValueError(
        f"cannot read {path}: unknown format; give a 10x directory, .tar.gz, .h5 or .h5ad"
    )


def _find_mtx_dir(root: Path) -> Path:
    hits = sorted({p.parent for p in root.rglob("matrix.mtx*")})
    if not hits:
        raise FileNotFoundError(f"no matrix.mtx or matrix.mtx.gz under {root}")
    if len(hits) > 1:
        raise ValueError(
            f"{root} holds several 10x matrices ({', '.join(map(str, hits))}); name one"
        )
    return hits[0]
