"""10x Genomics' 3k PBMCs (the scanpy tutorial's data), from a local copy or by download."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
import warnings
from pathlib import Path

from .readers import read

__all__ = ["data_dir", "pbmc3k"]

#: The environment variable naming the folder that holds PBMC3k (and the tests' data).
DATA_ENV = "GPU_SC_DATA"
#: Its former name in the tests and scripts: still read, with a FutureWarning.
DEPRECATED_DATA_ENV = "GPU_SC_PBMC3K"

URL = "http://cf.10xgenomics.com/samples/cell-exp/1.1.0/pbmc3k/pbmc3k_filtered_gene_bc_matrices.tar.gz"
#: SHA-256 of the members of 10x's archive; the tarball's own hash depends on how it was packed,
#: so what is checked after download is the matrix itself.
MATRIX_SHA256 = "7d92358b9d29128a225c50f2a662d6ccca9c71bc665e0af82692ed1361eb94e4"
_SEARCH = ("filtered_gene_bc_matrices", "pbmc3k_filtered_gene_bc_matrices.tar.gz")


def pbmc3k(path: str | Path | None = None):
    """Load the raw PBMC3k counts (2700 cells x 32738 genes) as AnnData.

    Looks in ``path`` (a 10x directory, its parent, or the tarball), then in the folder named
    by the ``GPU_SC_DATA`` environment variable, then in the download cache
    (``~/.cache/gpu_sc``); otherwise downloads 10x's tarball, verifies the matrix's
    checksum and caches it.
    """
    for candidate in _candidates(path):
        if candidate.exists():
            return read(candidate)
    if path is not None:
        raise FileNotFoundError(f"no PBMC3k data at {path}")
    return read(_download(_cache_dir()))


def _candidates(path):
    roots = []
    if path is not None:
        roots.append(Path(path))
    else:
        env = data_dir()
        if env is not None:
            roots.append(env)
        roots.append(_cache_dir())
    for root in roots:
        if root.is_file() or (root.is_dir() and any(root.glob("matrix.mtx*"))):
            yield root
            continue
        for name in _SEARCH:
            yield root / name
            yield root / "pbmc3k" / name


def data_dir() -> Path | None:
    """Return the folder named by ``GPU_SC_DATA`` (None when unset).

    ``GPU_SC_PBMC3K``, the name the tests and scripts used, is read when ``GPU_SC_DATA`` is
    unset, with a :class:`FutureWarning`; it will be removed.

    Returns
    -------
    pathlib.Path or None
        The folder, as given (it is searched for ``filtered_gene_bc_matrices``, the 10x
        tarball, or a ``pbmc3k/`` folder holding either).
    """
    value = os.environ.get(DATA_ENV, "").strip()
    if value:
        return Path(value)
    old = os.environ.get(DEPRECATED_DATA_ENV, "").strip()
    if old:
        warnings.warn(
            f"{DEPRECATED_DATA_ENV} is deprecated; set {DATA_ENV}={old} instead",
            FutureWarning,
            stacklevel=2,
        )
        return Path(old)
    return None


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gpu_sc"


def _download(cache: Path) -> Path:
    import tarfile

    cache.mkdir(parents=True, exist_ok=True)
    target = cache / "pbmc3k_filtered_gene_bc_matrices.tar.gz"
    with tempfile.NamedTemporaryFile(dir=cache, delete=False, suffix=".part") as tmp:
        try:
            with urllib.request.urlopen(URL, timeout=60) as resp:
                shutil.copyfileobj(resp, tmp)
        except OSError as exc:
            os.unlink(tmp.name)
            raise ConnectionError(
                f"could not download PBMC3k from {URL} ({exc}); download it by hand and pass "
                "its path, or set GPU_SC_DATA to the folder that holds it"
            ) from exc
    with tarfile.open(tmp.name) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("matrix.mtx"))
        digest = hashlib.sha256(tar.extractfile(member).read()).hexdigest()
    if digest != MATRIX_SHA256:
        os.unlink(tmp.name)
        raise ValueError(f"downloaded PBMC3k matrix has sha256 {digest}, expected {MATRIX_SHA256}")
    os.replace(tmp.name, target)
    return target
