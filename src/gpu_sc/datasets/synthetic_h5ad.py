"""The synthetic atlas of :func:`gpu_sc.datasets.synthetic`, written to an .h5ad block by block.

The counts are drawn by the same generator, block by block of its own (each block from its
own random stream derived from the seed), and appended to resizable HDF5 datasets in
anndata's on-disk CSR layout as soon as ``chunk_rows`` rows are ready: the matrix never
exists whole in memory, and the file holds bitwise the matrix ``synthetic(...)`` returns for
the same arguments, whatever ``chunk_rows``.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from pathlib import Path

import numpy as np
import pandas as pd

# the module, not the function of the same name that the package exports
_syn = importlib.import_module("gpu_sc.datasets.synthetic")

__all__ = ["library_size_for_nnz", "write_synthetic_h5ad"]


def write_synthetic_h5ad(
    path: str | Path,
    n_cells: int,
    n_genes: int = 2000,
    nnz_per_cell: float | None = None,
    chunk_rows: int = 20_000,
    seed: int = 0,
    *,
    n_types: int = 8,
    difficulty: str = "overlapping",
    median_library_size: float = 3000.0,
    doublet_rate: float = 0.04,
    low_quality_rate: float = 0.03,
) -> dict:
    """Write a synthetic count atlas to ``path`` (.h5ad, CSR ``X``) without holding it whole.

    Parameters
    ----------
    path
        Output file; written to ``path + ".tmp"`` and renamed when complete.
    n_cells, n_genes, n_types, difficulty, seed, doublet_rate, low_quality_rate
        As :func:`gpu_sc.datasets.synthetic`.
    nnz_per_cell
        Target mean number of detected genes per cell. When given, the median library size
        is calibrated on the atlas's own first 4,096 cells (bisection on its log; see
        :func:`library_size_for_nnz`), and ``median_library_size`` is ignored.
    chunk_rows
        Rows buffered before each append to the file (memory, not content: the file is the
        same for every value).
    median_library_size
        Median UMIs of a healthy cell, when ``nnz_per_cell`` is None.

    Returns
    -------
    dict with ``path``, ``n_cells``, ``n_genes``, ``nnz``, ``median_library_size`` (used) and
    ``bytes_csr`` (size of the matrix in memory as float32 data, int32 indices, int64 indptr).
    """
    import anndata as ad

    args = {
        "n_cells": n_cells,
        "n_genes": n_genes,
        "n_types": n_types,
        "difficulty": difficulty,
        "seed": seed,
        "median_library_size": median_library_size,
        "doublet_rate": doublet_rate,
        "low_quality_rate": low_quality_rate,
    }
    median_library_size = _checked_library_size(args, nnz_per_cell, chunk_rows)
    args["median_library_size"] = median_library_size
    model, cells, blocks_seq = _design(args)
    obs, names, uns = _annotations(model, cells, args)

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    # obs, var, uns and the empty mappings through anndata; X added below in its CSR layout
    ad.AnnData(obs=obs, var=pd.DataFrame(index=pd.Index(names)), uns=uns).write_h5ad(tmp)
    try:
        nnz = _append_x(
            tmp, _count_blocks(model, cells, blocks_seq), (n_cells, n_genes), chunk_rows
        )
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return {
        "path": str(path),
        "n_cells": int(n_cells),
        "n_genes": int(n_genes),
        "nnz": int(nnz),
        "median_library_size": float(median_library_size),
        "bytes_csr": int(nnz * 8 + (n_cells + 1) * 8),
    }


def _checked_library_size(args: dict, nnz_per_cell: float | None, chunk_rows: int) -> float:
    """Check the arguments and return the median library size.

    The checks use the generator's own messages; the size is calibrated to ``nnz_per_cell``
    when given.
    """
    n_cells, n_genes, n_types = args["n_cells"], args["n_genes"], args["n_types"]
    difficulty, seed = args["difficulty"], args["seed"]
    median_library_size = args["median_library_size"]
    doublet_rate, low_quality_rate = args["doublet_rate"], args["low_quality_rate"]
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive number of rows, got {chunk_rows}")
    if n_cells < 1:
        raise ValueError(f"n_cells must be at least 1, not {n_cells}")
    # the other arguments, with the generator's own messages (a one-cell draw)
    _syn.synthetic(
        1,
        n_genes,
        n_types,
        difficulty=difficulty,
        seed=seed,
        median_library_size=median_library_size,
        doublet_rate=doublet_rate,
        low_quality_rate=low_quality_rate,
    )
    if nnz_per_cell is not None:
        median_library_size = library_size_for_nnz(
            nnz_per_cell,
            n_genes,
            n_cells,
            n_types=n_types,
            difficulty=difficulty,
            seed=seed,
            doublet_rate=doublet_rate,
            low_quality_rate=low_quality_rate,
        )
    return median_library_size


def _design(args: dict):
    """Return the gene model, cell design and count blocks' seed, as ``synthetic`` draws."""
    diff = _syn._DIFFICULTIES[args["difficulty"]]
    root = np.random.SeedSequence(args["seed"])
    model_seq, cells_seq, blocks_seq = root.spawn(3)
    model = _syn._gene_model(
        np.random.default_rng(model_seq), args["n_genes"], args["n_types"], diff
    )
    cells = _syn._cell_design(
        np.random.default_rng(cells_seq),
        model,
        args["n_cells"],
        diff,
        args["median_library_size"],
        args["doublet_rate"],
        args["low_quality_rate"],
    )
    return model, cells, blocks_seq


def _annotations(model, cells, args: dict):
    """Return the atlas's ``obs``, gene names and ``uns``, as :func:`synthetic` makes them."""
    n_cells, n_genes, n_types = args["n_cells"], args["n_genes"], args["n_types"]
    types = [f"type_{t}" for t in range(n_types)]
    parents = [f"family_{p}" for p in range(model.n_parents)]
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical.from_codes(cells.label, categories=types),
            "parent_type": pd.Categorical.from_codes(
                model.parent_of[cells.label], categories=parents
            ),
            "is_doublet": cells.is_doublet,
            "is_low_quality": cells.is_low_quality,
            "pseudotime": cells.pseudotime[:n_cells],
        },
        index=pd.Index([f"cell_{i}" for i in range(n_cells)]),
    )
    width = len(str(n_genes - len(_syn.MT_GENES)))
    names = list(_syn.MT_GENES) + [
        f"GENE{i:0{width}d}" for i in range(1, n_genes - len(_syn.MT_GENES) + 1)
    ]
    uns = {
        "synthetic": {
            **args,
            "lineage": [types[model.lineage[0]], types[model.lineage[1]]],
        }
    }
    return obs, names, uns


def _append_x(tmp: Path, blocks, shape: tuple[int, int], chunk_rows: int) -> int:
    """Add the CSR ``X`` to the file ``tmp`` from the count ``blocks``; returns its nnz."""
    import h5py

    n_cells, n_genes = shape
    nnz = 0
    with h5py.File(tmp, "a") as f:
        g = f.create_group("X")
        g.attrs["encoding-type"] = "csr_matrix"
        g.attrs["encoding-version"] = "0.1.0"
        g.attrs["shape"] = np.array([n_cells, n_genes], dtype=np.int64)
        chunk = (1 << 18,)
        data = g.create_dataset("data", (0,), np.float32, maxshape=(None,), chunks=chunk)
        indices = g.create_dataset("indices", (0,), np.int32, maxshape=(None,), chunks=chunk)
        indptr = g.create_dataset("indptr", (n_cells + 1,), np.int64)
        indptr[0] = 0
        rows = 0
        for counts, cols, row_nnz in _buffered(blocks, chunk_rows):
            end = nnz + counts.size
            data.resize((end,))
            indices.resize((end,))
            data[nnz:end] = counts.astype(np.float32)
            indices[nnz:end] = cols
            indptr[rows + 1 : rows + 1 + row_nnz.size] = nnz + np.cumsum(row_nnz)
            rows += row_nnz.size
            nnz = end
    return nnz


def _count_blocks(model, cells, blocks_seq):
    """Yield ``(counts, column indices, nnz per row)`` of consecutive row blocks.

    Drawn exactly as :func:`gpu_sc.datasets.synthetic._draw_counts` draws them (copies, not
    work buffers).
    """
    n, G = cells.n_cells, model.n_genes
    rows = _syn._BLOCK_ROWS
    n_blocks = -(-n // rows)
    work = _syn._BlockBuffers(min(n, rows), G)
    for b, seq in enumerate(blocks_seq.spawn(n_blocks)):
        lo, hi = b * rows, min(n, (b + 1) * rows)
        partners = cells.partner[lo:hi]
        has_partner = partners >= 0
        drawn = np.concatenate([np.arange(lo, hi), partners[has_partner]])
        local_partner = np.full(hi - lo, -1, dtype=np.int64)
        local_partner[has_partner] = (hi - lo) + np.arange(int(has_partner.sum()))
        mu = _syn._mean_block(model, cells, drawn, out=work.mu[: drawn.size])
        counts, indices, row_nnz = _syn._block_counts(
            np.random.default_rng(seq), mu, model.theta, local_partner, work
        )
        yield counts.copy(), indices.copy(), row_nnz


def _buffered(blocks, chunk_rows: int):
    """Concatenate generator blocks into pieces of about ``chunk_rows`` rows."""
    parts: list[tuple] = []
    n = 0
    for part in blocks:
        parts.append(part)
        n += part[2].size
        if n >= chunk_rows:
            yield tuple(np.concatenate(p) for p in zip(*parts, strict=True))
            parts, n = [], 0
    if parts:
        yield tuple(np.concatenate(p) for p in zip(*parts, strict=True))


def library_size_for_nnz(
    nnz_per_cell: float,
    n_genes: int,
    n_cells: int = 4096,
    *,
    n_types: int = 8,
    difficulty: str = "overlapping",
    seed: int = 0,
    doublet_rate: float = 0.04,
    low_quality_rate: float = 0.03,
    pilot_cells: int = 4096,
    rel_tol: float = 0.01,
) -> float:
    """Find the median library size that gives ``nnz_per_cell`` detected genes per cell.

    Measured on the first ``pilot_cells`` cells of the atlas of these arguments.

    Library sizes are linear in the median and the design's other draws do not depend on it,
    so the pilot draws the first generator blocks of the very atlas that will be written, at
    each trial median (bisection on its log; deterministic per seed).
    """
    if not 0 < nnz_per_cell < n_genes:
        raise ValueError(f"nnz_per_cell must be in (0, n_genes={n_genes}), not {nnz_per_cell}")
    diff = _syn._DIFFICULTIES[difficulty]
    model_seq, cells_seq, blocks_seq = np.random.SeedSequence(seed).spawn(3)
    model = _syn._gene_model(np.random.default_rng(model_seq), n_genes, n_types, diff)
    base = _syn._cell_design(
        np.random.default_rng(cells_seq), model, n_cells, diff, 1.0, doublet_rate, low_quality_rate
    )
    n_pilot = min(n_cells, pilot_cells)

    def mean_nnz(lib: float) -> float:
        cells = dataclasses.replace(
            base,
            nuclear_umis=(base.nuclear_umis * lib).astype(np.float32),
            mt_umis=(base.mt_umis * lib).astype(np.float32),
        )
        nnz, rows = 0, 0
        for counts, _cols, row_nnz in _count_blocks(model, cells, blocks_seq):
            nnz += counts.size
            rows += row_nnz.size
            if rows >= n_pilot:
                break
        return nnz / rows

    lo, hi = np.log(50.0), np.log(2e5)
    mid = np.log(3000.0)
    for _ in range(30):
        got = mean_nnz(float(np.exp(mid)))
        if abs(got - nnz_per_cell) <= rel_tol * nnz_per_cell:
            break
        if got < nnz_per_cell:
            lo = mid
        else:
            hi = mid
        mid = (lo + hi) / 2
    return float(np.exp(mid))
