"""Fault catalogue, readers: a damaged or inconsistent input is one line naming the file and
the problem (and what to do), never a library's own traceback."""

from __future__ import annotations

import gzip
import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

import gpu_sc
from gpu_sc.cli import main
from gpu_sc.io import write_h5ad
from gpu_sc.pipeline import InputError
from tests._faults import assert_one_line, small_counts


@pytest.fixture(scope="module")
def tiny():
    return small_counts(40, 100, seed=2)[:, :30].copy()


def write_10x(d: Path, adata, *, v3: bool = False, genes_delta: int = 0, cells_delta: int = 0):
    """A 10x directory of ``adata`` (v2: plain files; v3: gzipped, features.tsv.gz)."""
    d.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    scipy.io.mmwrite(buf, sp.csr_matrix(adata.X.T).astype(np.int64), field="integer")
    genes = [
        f"ENSG{i}\t{g}\tGene Expression" if v3 else f"ENSG{i}\t{g}"
        for i, g in enumerate(adata.var_names)
    ]
    genes = genes[: len(genes) + genes_delta] if genes_delta < 0 else genes + ["X\tY"] * genes_delta
    cells = list(adata.obs_names)
    cells = cells[: len(cells) + cells_delta] if cells_delta < 0 else cells + ["Z"] * cells_delta
    files = {
        "matrix.mtx": buf.getvalue(),
        "barcodes.tsv": "\n".join(cells).encode() + b"\n",
        ("features.tsv" if v3 else "genes.tsv"): "\n".join(genes).encode() + b"\n",
    }
    for name, data in files.items():
        if v3:
            (d / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (d / name).write_bytes(data)
    return d


def make_tar(path: Path, d: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        tar.add(d, arcname="filtered_gene_bc_matrices/hg19")
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _v2(tmp, a):
    return write_10x(tmp / "v2", a)


def _v3(tmp, a):
    return write_10x(tmp / "v3", a, v3=True)


CASES = []


def case(name, *words, error=InputError):
    def deco(build):
        CASES.append(pytest.param(build, words, error, id=name))
        return build

    return deco


@case("genes_tsv_short", "genes.tsv has 29 rows", "matrix.mtx has 30 genes", "one 10x output")
def _(tmp, a):
    return write_10x(tmp / "d", a, genes_delta=-1)


@case("barcodes_tsv_long", "barcodes.tsv has 41 rows", "matrix.mtx has 40 cells")
def _(tmp, a):
    return write_10x(tmp / "d", a, cells_delta=1)


@case("features_tsv_gz_short_v3", "features.tsv.gz has 28 rows", "matrix.mtx.gz has 30 genes")
def _(tmp, a):
    return write_10x(tmp / "d", a, v3=True, genes_delta=-2)


@case("barcodes_missing", "no barcodes.tsv", "matrix, the genes and the barcodes")
def _(tmp, a):
    d = _v2(tmp, a)
    (d / "barcodes.tsv").unlink()
    return d


@case("genes_missing", "no genes.tsv or features.tsv.gz")
def _(tmp, a):
    d = _v2(tmp, a)
    (d / "genes.tsv").unlink()
    return d


@case("matrix_mtx_gz_truncated", "matrix.mtx.gz", "truncated or corrupt", "again")
def _(tmp, a):
    d = _v3(tmp, a)
    truncate(d / "matrix.mtx.gz", 0.6)
    return d


@case("matrix_mtx_truncated", "matrix.mtx", "truncated or corrupt", "again")
def _(tmp, a):
    d = _v2(tmp, a)
    truncate(d / "matrix.mtx", 0.6)
    return d


@case("matrix_mtx_garbage", "matrix.mtx is not a readable Matrix Market file")
def _(tmp, a):
    d = _v2(tmp, a)
    (d / "matrix.mtx").write_text("hello\n1 2 3\n")
    return d


@case(
    "matrix_gz_not_gzip",
    "matrix.mtx.gz is not a readable Matrix Market file",
    "truncated or corrupt",
)
def _(tmp, a):
    d = _v3(tmp, a)
    (d / "matrix.mtx.gz").write_bytes(b"this is not gzip at all" * 10)
    return d


@case("barcodes_gz_truncated", "barcodes.tsv.gz cannot be read", "truncated or corrupt")
def _(tmp, a):
    d = _v3(tmp, a)
    truncate(d / "barcodes.tsv.gz", 0.5)
    return d


@case("tar_gz_truncated", "tar.gz", "archive is truncated or corrupt", "download")
def _(tmp, a):
    return truncate(make_tar(tmp / "m.tar.gz", _v2(tmp, a)), 0.5)


@case("tar_gz_garbage", "tar.gz", "archive is truncated or corrupt")
def _(tmp, a):
    p = tmp / "m.tar.gz"
    p.write_bytes(b"\x1f\x8b\x08garbage" * 50)
    return p


@case("tar_gz_with_genes_short", "genes.tsv has 29 rows", "m.tar.gz, member")
def _(tmp, a):
    return make_tar(tmp / "m.tar.gz", write_10x(tmp / "d", a, genes_delta=-1))


@case("h5ad_not_hdf5", "not an HDF5 file", ".h5ad", "rename")
def _(tmp, a):
    p = tmp / "x.h5ad"
    p.write_text("cell,gene,count\n")
    return p


@case("h5ad_empty", "is empty (0 bytes)")
def _(tmp, a):
    p = tmp / "x.h5ad"
    p.write_bytes(b"")
    return p


@case("h5ad_truncated", "cannot read this .h5ad", "truncated or corrupt")
def _(tmp, a):
    p = tmp / "x.h5ad"
    write_h5ad(a, p)
    return truncate(p, 0.5)


@case("h5_not_hdf5", "not an HDF5 file", ".h5")
def _(tmp, a):
    p = tmp / "x.h5"
    p.write_bytes(b"\x00" * 4096)
    return p


@case("h5_not_10x", "not a readable 10x HDF5 matrix", "filtered_feature_bc_matrix.h5")
def _(tmp, a):
    p = tmp / "x.h5"
    write_h5ad(a, tmp / "y.h5ad")
    shutil.move(tmp / "y.h5ad", p)
    return p


@case("missing_file", "input not found", error=FileNotFoundError)
def _(tmp, a):
    return tmp / "nothing_here.h5ad"


@case("unknown_suffix", "unknown format", ".h5ad", error=ValueError)
def _(tmp, a):
    p = tmp / "counts.csv"
    p.write_text("a,b\n")
    return p


@case("two_matrices", "several 10x matrices", "name one", error=ValueError)
def _(tmp, a):
    write_10x(tmp / "root" / "a", a)
    write_10x(tmp / "root" / "b", a)
    return tmp / "root"


@case("no_matrix", "no matrix.mtx", error=FileNotFoundError)
def _(tmp, a):
    (tmp / "empty_dir").mkdir()
    return tmp / "empty_dir"


@pytest.mark.parametrize("build,words,error", CASES)
def test_reader_names_file_and_problem(tmp_path, tiny, build, words, error):
    path = build(tmp_path, tiny)
    with pytest.raises(error) as err:
        gpu_sc.datasets.read(path)
    assert_one_line(err.value, *words)


@pytest.mark.parametrize("layout", ["v2_dir", "v3_dir_gz", "tar_gz", "h5ad"])
def test_reader_good_inputs_read_correctly(tmp_path, tiny, layout):
    if layout == "h5ad":
        path = tmp_path / "ok.h5ad"
        write_h5ad(tiny, path)
    elif layout == "tar_gz":
        path = make_tar(tmp_path / "ok.tar.gz", _v2(tmp_path, tiny))
    else:
        path = (_v2 if layout == "v2_dir" else _v3)(tmp_path, tiny)
    got = gpu_sc.datasets.read(path)
    assert got.shape == tiny.shape
    assert (sp.csr_matrix(got.X) != tiny.X).nnz == 0


def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, tiny, capsys):
    bad = tmp_path / "x.h5ad"
    bad.write_text("not hdf5")
    out = tmp_path / "out" / "res.h5ad"
    out.parent.mkdir()
    assert main(["run", str(bad), "-o", str(out), "--backend", "numpy"]) == 1
    err = capsys.readouterr().err
    assert_one_line(err, "gpu-sc run: error", str(bad), "not an HDF5 file")
    assert list(out.parent.iterdir()) == []
