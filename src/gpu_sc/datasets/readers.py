"""Read a count matrix from a 10x directory, a 10x tarball, a 10x .h5 or an .h5ad.

Every failure of the input is one line that names the file and the problem: row counts of
``genes.tsv``/``barcodes.tsv`` against the ``.mtx`` header (checked before scanpy reads), a
truncated ``.gz``/``.tar.gz``/``.mtx``/``.h5ad``, a file that is not HDF5 despite its suffix,
an ``.h5`` that is not 10x's.
"""

from __future__ import annotations

import gzip
import tarfile
import tempfile
import zlib
from pathlib import Path

__all__ = ["read"]

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# What a truncated or corrupt file raises inside gzip, tarfile, scipy/fast_matrix_market, h5py.
_READ_ERRORS = (
    EOFError,
    zlib.error,
    gzip.BadGzipFile,
    tarfile.TarError,
    OSError,
    ValueError,
    KeyError,
    IndexError,
    UnicodeDecodeError,
)


def _error(message: str):
    from ..pipeline.validate import InputError

    return InputError(" ".join(message.split()))


def _why(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def read(path: str | Path):
    """Read raw counts as AnnData, whichever of the usual layouts ``path`` is.

    - a 10x directory (``matrix.mtx[.gz]`` + ``genes.tsv``/``features.tsv``), or a folder
      holding exactly one such directory below it (``filtered_gene_bc_matrices/hg19``);
    - a ``.tar.gz`` of such a directory (10x's download);
    - a 10x HDF5 file (``.h5``);
    - an ``.h5ad`` file.

    A damaged or inconsistent input raises :class:`~gpu_sc.pipeline.validate.InputError`
    naming the file and the problem.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"input not found: {path} (expected a 10x directory, .tar.gz, .h5 or .h5ad)"
        )
    name = path.name.lower()
    if path.is_dir():
        return _read_10x_dir(_find_mtx_dir(path))
    if name.endswith((".tar.gz", ".tgz")):
        with tempfile.TemporaryDirectory(prefix="gpu_sc_") as tmp:
            try:
                with tarfile.open(path) as tar:
                    tar.extractall(tmp, filter="data")
            except _READ_ERRORS as exc:
                raise _error(
                    f"{path}: the archive is truncated or corrupt ({_why(exc)}); "
                    "download or copy it again"
                ) from None
            d = _find_mtx_dir(Path(tmp))
            return _read_10x_dir(d, label=f"{path}, member {d.relative_to(tmp)}")
    if name.endswith(".h5ad"):
        from ..io import read_h5ad

        _check_hdf5(path, ".h5ad", "an .h5ad written by anndata")
        try:
            return read_h5ad(path)
        except _READ_ERRORS as exc:
            raise _error(
                f"{path}: cannot read this .h5ad ({_why(exc)}); the file is truncated "
                "or corrupt, write or copy it again"
            ) from None
    if name.endswith(".h5"):
        import scanpy as sc

        _check_hdf5(path, ".h5", "10x Cell Ranger's filtered_feature_bc_matrix.h5")
        try:
            return sc.read_10x_h5(path)
        except _READ_ERRORS as exc:
            raise _error(
                f"{path}: not a readable 10x HDF5 matrix ({_why(exc)}); give Cell "
                "Ranger's filtered_feature_bc_matrix.h5, or an .h5ad under an "
                ".h5ad name"
            ) from None
    if name.endswith((".mtx", ".mtx.gz")):
        return _read_10x_dir(path.parent)
    raise ValueError(
        f"cannot read {path}: unknown format; give a 10x directory, .tar.gz, .h5 or .h5ad"
    )


def _check_hdf5(path: Path, suffix: str, expected: str) -> None:
    """Raise unless ``path`` carries the HDF5 signature (at 0, 512, 1024, 2048, ...)."""
    size = path.stat().st_size
    if size == 0:
        raise _error(f"{path} is empty (0 bytes); write or copy it again")
    offset = 0
    with open(path, "rb") as fh:
        while offset + len(_HDF5_SIGNATURE) <= size:
            fh.seek(offset)
            if fh.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE:
                return
            offset = 512 if offset == 0 else offset * 2
    raise _error(
        f"{path} is not an HDF5 file although its name ends in {suffix}; "
        f"give {expected}, or rename the file after its real format"
    )


def _first(d: Path, names: tuple[str, ...]) -> Path | None:
    for n in names:
        if (d / n).is_file():
            return d / n
    return None


def _open(path: Path):
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def _mtx_header(mtx: Path, label: str) -> tuple[int, int, int]:
    """``(rows, columns, entries)`` of a Matrix Market file, from its size line."""
    try:
        with _open(mtx) as fh:
            first = fh.readline()
            if not first.startswith(b"%%MatrixMarket"):
                raise ValueError("no %%MatrixMarket banner")
            for line in fh:
                if line.startswith(b"%") or not line.strip():
                    continue
                rows, cols, nnz = (int(v) for v in line.split()[:3])
                return rows, cols, nnz
        raise ValueError("no size line")
    except _READ_ERRORS as exc:
        raise _error(
            f"{label}: {mtx.name} is not a readable Matrix Market file ({_why(exc)}); "
            "the file is truncated or corrupt, extract or download it again"
        ) from None


def _count_rows(path: Path, label: str) -> int:
    n = 0
    last = b"\n"
    try:
        with _open(path) as fh:
            while chunk := fh.read(1 << 20):
                n += chunk.count(b"\n")
                last = chunk[-1:]
    except _READ_ERRORS as exc:
        raise _error(
            f"{label}: {path.name} cannot be read ({_why(exc)}); the file is truncated "
            "or corrupt, extract or download it again"
        ) from None
    return n + (last != b"\n")


def _read_10x_dir(d: Path, label: str | None = None):
    """Read with scanpy's ``read_10x_mtx`` after checking the three files agree."""
    import scanpy as sc

    label = label or str(d)
    mtx = _first(d, ("matrix.mtx.gz", "matrix.mtx"))
    if mtx is None:
        raise FileNotFoundError(f"no matrix.mtx or matrix.mtx.gz in {label}")
    genes = _first(d, ("features.tsv.gz", "genes.tsv", "features.tsv", "genes.tsv.gz"))
    barcodes = _first(d, ("barcodes.tsv.gz", "barcodes.tsv"))
    for found, what in (
        (genes, "genes.tsv or features.tsv.gz"),
        (barcodes, "barcodes.tsv or barcodes.tsv.gz"),
    ):
        if found is None:
            raise _error(
                f"{label}: no {what} beside {mtx.name}; a 10x directory holds the "
                "matrix, the genes and the barcodes of one run"
            )
    n_genes, n_cells, _ = _mtx_header(mtx, label)
    for file, n_expected, what in ((genes, n_genes, "genes"), (barcodes, n_cells, "cells")):
        rows = _count_rows(file, label)
        if rows != n_expected:
            raise _error(
                f"{file.name} has {rows} rows, {mtx.name} has {n_expected} {what} "
                f"({label}); the files are from different runs or one is "
                "truncated: use the three files of one 10x output"
            )
    try:
        return sc.read_10x_mtx(d, var_names="gene_symbols", cache=False)
    except _READ_ERRORS as exc:
        raise _error(
            f"{label}: cannot read {mtx.name} ({_why(exc)}); the file is truncated "
            "or corrupt, extract or download it again"
        ) from None


def _find_mtx_dir(root: Path) -> Path:
    hits = sorted({p.parent for p in root.rglob("matrix.mtx*")})
    if not hits:
        raise FileNotFoundError(f"no matrix.mtx or matrix.mtx.gz under {root}")
    if len(hits) > 1:
        raise ValueError(
            f"{root} holds several 10x matrices ({', '.join(map(str, hits))}); name one"
        )
    return hits[0]
