"""Lazy input: an .h5ad or 10x .h5 opened as AnnData with a Dask ``X``.

``X`` is a Dask array of CSR row blocks, read from disk inside the tasks that need them.

``obs`` and ``var`` are read into memory (they are small); the count matrix is never read by
:func:`read_lazy` itself. Each block task opens the file by path, reads its rows and closes it
again, so the graph pickles to ``distributed`` workers (h5py handles cannot travel).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["read_lazy"]

#: Default rows per block: ~10^4 cells of ~2,000 nonzeros are ~160 MB of CSR.
DEFAULT_CHUNK_ROWS = 10_000


def read_lazy(path: str | Path, chunk_rows: int = DEFAULT_CHUNK_ROWS):
    """Open a count matrix lazily: ``X`` becomes a Dask array of CSR row blocks.

    Parameters
    ----------
    path
        An ``.h5ad`` whose ``X`` is stored sparse (anndata's ``csr_matrix`` or ``csc_matrix``
        encoding; scanpy's and gpu_sc's 10x readers give CSC), or a 10x Genomics HDF5 matrix
        (``.h5``, CellRanger v2 or v3 layout).
    chunk_rows
        Rows (cells) per block. Every block is a ``scipy.sparse.csr_matrix`` with all the
        columns.

    Returns
    -------
    AnnData with ``X`` a ``dask.array.Array`` (``chunks=((chunk_rows, ...), (n_vars,))``,
    ``meta`` a CSR matrix), ``obs`` and ``var`` in memory; for an ``.h5ad`` also ``uns``.
    ``layers``, ``obsm``, ``varm``, ``obsp`` and ``varp`` of an ``.h5ad`` are not read.

    Notes
    -----
    The ``.h5ad`` path goes through anndata's own lazy reader
    (:func:`anndata.experimental.read_elem_lazy`). A CSC-stored ``X`` is read block by
    block too: each block task scans the stored values in bounded slices and keeps its rows
    (the whole matrix is never read into memory, but each block reads the file once; rewrite
    it as CSR to read each block's rows only). A 10x ``.h5`` stores the genes x cells
    matrix as CSC, which is the cells x genes matrix as CSR: its blocks are read by row range
    the same way, and cast to float32 as :func:`scanpy.read_10x_h5` does.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input not found: {path} (expected an .h5ad or a 10x .h5)")
    if int(chunk_rows) < 1:
        raise ValueError(f"chunk_rows must be a positive number of rows, got {chunk_rows}")
    chunk_rows = int(chunk_rows)
    path = path.resolve()  # the tasks open the file by this path, wherever the workers run
    name = path.name.lower()
    if name.endswith(".h5ad"):
        return _read_h5ad_lazy(path, chunk_rows)
    if name.endswith(".h5"):
        return _read_10x_h5_lazy(path, chunk_rows)
    raise ValueError(f"cannot read {path} lazily: give an .h5ad or a 10x .h5 file")


def _read_h5ad_lazy(path: Path, chunk_rows: int):
    import anndata as ad
    import h5py
    from anndata.experimental import read_elem_lazy

    with h5py.File(path, "r") as f:
        if "X" not in f:
            raise ValueError(f"{path} has no X matrix to read lazily")
        node = f["X"]
        enc = node.attrs.get("encoding-type", "array") if isinstance(node, h5py.Group) else "array"
        if enc == "csc_matrix":
            x = _csc_rows_lazy(path, node, chunk_rows)
        elif enc != "csr_matrix":
            raise ValueError(
                f"{path}: X is stored as {enc}, row blocks need sparse CSR (or CSC); rewrite "
                "it with adata.X = scipy.sparse.csr_matrix(adata.X); adata.write_h5ad(path)"
            )
        else:
            # anndata's reader stores the file's path in the graph and opens it in each task
            x = read_elem_lazy(f["X"], chunks=(chunk_rows, -1))
        obs = ad.io.read_elem(f["obs"])
        var = ad.io.read_elem(f["var"])
        uns = ad.io.read_elem(f["uns"]) if "uns" in f else {}
    return ad.AnnData(X=x, obs=obs, var=var, uns=uns)


# -- CSC-stored X (what scanpy's and gpu_sc's 10x readers write) ---------------------------------

#: Stored values a CSC block task reads at a time (~100 MB of indices and values at most).
CSC_SCAN_ENTRIES = 1 << 23


def _csc_rows_lazy(path: Path, node, chunk_rows: int):
    """Open a CSC-stored ``X`` as CSR row blocks.

    Each block task scans the stored values in slices of :data:`CSC_SCAN_ENTRIES` and keeps those of its rows, so no task holds more than
    one slice and its own block (the whole matrix is never in memory). Each block reads the
    file once: rewriting the file as CSR makes a block read only its own rows.
    """
    import dask.array as da
    import scipy.sparse as sp

    n_cells, n_genes = (int(v) for v in node.attrs["shape"])
    dtype = node["data"].dtype
    chunks = (_row_chunks(n_cells, chunk_rows), (n_genes,))
    return da.map_blocks(
        _read_csc_rows,
        str(path),
        "X",
        n_genes,
        dtype=dtype,
        chunks=chunks,
        meta=sp.csr_matrix((0, 0), dtype=dtype),
    )


def _read_csc_rows(path: str, key: str, n_genes: int, block_info=None):
    """Read the rows of ``block_info``'s range of the CSC matrix at ``key``, as CSR.

    The file is opened and closed here.
    """
    import h5py
    import scipy.sparse as sp

    (start, stop), _cols = block_info[None]["array-location"]
    rows, cols, vals = [], [], []
    with h5py.File(path, "r") as f:
        g = f[key]
        indptr = g["indptr"][:].astype(np.int64)  # one entry per gene: small
        nnz = int(indptr[-1])
        dtype = g["data"].dtype
        for lo in range(0, nnz, CSC_SCAN_ENTRIES):
            hi = min(lo + CSC_SCAN_ENTRIES, nnz)
            idx = g["indices"][lo:hi]
            hit = np.flatnonzero((idx >= start) & (idx < stop))
            if hit.size == 0:
                continue
            rows.append(idx[hit].astype(np.int64) - start)
            cols.append(np.searchsorted(indptr, lo + hit, side="right") - 1)
            vals.append(g["data"][lo:hi][hit])
    if not rows:
        return sp.csr_matrix((stop - start, n_genes), dtype=dtype)
    out = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(stop - start, n_genes),
        dtype=dtype,
    )
    out.sort_indices()
    return out


# -- 10x .h5 -------------------------------------------------------------------------------------
def _read_10x_h5_lazy(path: Path, chunk_rows: int):
    import anndata as ad
    import dask.array as da
    import h5py
    import pandas as pd
    import scipy.sparse as sp

    with h5py.File(path, "r") as f:
        if "matrix" in f:  # CellRanger v3
            group = "matrix"
            g = f[group]
            feats = g["features"]
            var = pd.DataFrame(
                {
                    "gene_ids": _strings(feats["id"][:]),
                    "feature_types": _strings(feats["feature_type"][:]),
                    "genome": _strings(feats["genome"][:]),
                },
                index=pd.Index(_strings(feats["name"][:])),
            )
        else:  # CellRanger v2: one group per genome
            genomes = [k for k in f if isinstance(f[k], h5py.Group)]
            if len(genomes) != 1:
                raise ValueError(
                    f"{path}: expected one genome group in a v2 10x .h5, found {genomes}; "
                    "read it with scanpy.read_10x_h5(path, genome=...)"
                )
            group = genomes[0]
            g = f[group]
            var = pd.DataFrame(
                {"gene_ids": _strings(g["genes"][:])},
                index=pd.Index(_strings(g["gene_names"][:])),
            )
        n_genes, n_cells = (int(v) for v in g["shape"][:])
        obs = pd.DataFrame(index=pd.Index(_strings(g["barcodes"][:])))
        data_dtype = g["data"].dtype
    dtype = np.float32 if data_dtype.kind in "iu" else data_dtype
    chunks = (_row_chunks(n_cells, chunk_rows), (n_genes,))
    x = da.map_blocks(
        _read_10x_block,
        str(path),
        group,
        n_genes,
        np.dtype(dtype).str,
        dtype=dtype,
        chunks=chunks,
        meta=sp.csr_matrix((0, 0), dtype=dtype),
    )
    return ad.AnnData(X=x, obs=obs, var=var)


def _row_chunks(n: int, chunk_rows: int) -> tuple[int, ...]:
    if n == 0:
        return (0,)
    full, rest = divmod(n, chunk_rows)
    return (chunk_rows,) * full + ((rest,) if rest else ())


def _read_10x_block(path: str, group: str, n_genes: int, dtype: str, block_info=None):
    """Rows ``block_info``'s row range of a 10x .h5 matrix, as CSR (opened and closed here)."""
    import h5py
    import scipy.sparse as sp

    (start, stop), _cols = block_info[None]["array-location"]
    with h5py.File(path, "r") as f:
        g = f[group]
        indptr = g["indptr"][start : stop + 1].astype(np.int64)
        lo, hi = int(indptr[0]), int(indptr[-1])
        data = g["data"][lo:hi].astype(dtype)
        indices = g["indices"][lo:hi]
    return sp.csr_matrix((data, indices, indptr - lo), shape=(stop - start, n_genes))


def _strings(values: np.ndarray) -> np.ndarray:
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in values], dtype=object)
