"""Fused kernel ``wilcoxon_rank_sums``: a block of genes ranked (ties averaged) and its rank
sums per group and tie sums, in one launch after the library sort.

The reference, :func:`gpu_sc.kernels.markers.block_rank_sums`, ranks a sparse block through
``lexsort``, run detection (cumulative sums, ``nonzero``, ``diff``), a scatter, two sparse
products and ``add.reduceat``; a dense block through ``argsort`` and a GEMM. The fused path
sorts the stored values within each column with the array library (a segmented sort: CuPy's
``lexsort``/``argsort`` on a GPU), then one kernel launch does the rest (see
:mod:`gpu_sc.kernels.cuda._wilcoxon_src`). Groups must be disjoint (``codes`` from
:func:`gpu_sc.kernels.markers.group_codes`); at most 256 of them.
"""

from __future__ import annotations

import numpy as np

from ..markers import block_rank_sums
from ._registry import launch_stream
from ._spec import KernelCost, KernelSpec

__all__ = ["SPEC"]

_BLOCK = 128  # = _wilcoxon_src.BLOCK (not imported: that module imports numba.cuda)
_GMAX = 256  # = _wilcoxon_src.GMAX


def _is_sparse(blk) -> bool:
    return hasattr(blk, "tocsc")  # scipy.sparse / cupyx.scipy.sparse matrices


def _sorted_columns(xp, blk):
    """``(values, rows, indptr, n_rows)``: the stored values of each column sorted, with
    their rows; a dense block stores every entry."""
    if _is_sparse(blk):
        blk = blk.tocsc()
        blk.sum_duplicates()
        indptr = blk.indptr.astype(xp.int64)
        values = blk.data
        col = xp.searchsorted(indptr, xp.arange(values.shape[0], dtype=xp.int64), side="right") - 1
        order = xp.lexsort(xp.stack([values, col.astype(values.dtype)]))
        return values[order], blk.indices.astype(xp.int64)[order], indptr, blk.shape[0]
    n, c = blk.shape
    cols = xp.ascontiguousarray(blk.T)
    order = xp.argsort(cols, axis=1, kind="stable")
    values = xp.take_along_axis(cols, order, axis=1).ravel()
    indptr = xp.arange(c + 1, dtype=xp.int64) * n
    return values, order.astype(xp.int64).ravel(), indptr, n


def _launch(xp, kernels, blk, G, codes):
    kern = kernels["wilcoxon_rank_sums"]
    n_groups, c = G.shape[0], blk.shape[1]
    values, rows, indptr, n = _sorted_columns(xp, blk)
    if values.dtype not in (np.float32, np.float64):
        values = values.astype(xp.float64)
    sizes = xp.asarray(G.sum(axis=1), dtype=xp.float64).ravel()
    rank_sums = xp.zeros((n_groups, c), dtype=xp.float64)
    tie_sums = xp.zeros(c, dtype=xp.float64)
    if c == 0:
        return rank_sums, tie_sums
    stream = launch_stream(xp)
    config = kern[c, _BLOCK] if stream is None else kern[c, _BLOCK, stream]
    config(values, rows, indptr, n, codes, sizes, rank_sums, tie_sums)
    return rank_sums, tie_sums


def _supports(blk, G, codes):
    if codes is None:
        return "groups overlap (a cell in two groups)"
    if G.shape[0] > _GMAX:
        return f"{G.shape[0]} groups > {_GMAX}"
    return None


def _cost(blk, G, codes) -> KernelCost:
    """Declared: the library sort as an 8-pass radix sort of (value, row) pairs plus its
    gathers, then the kernel reading each sorted value and row once (its binary searches hit
    the caches), gathering each row's group code, and writing the sums."""
    n, c = blk.shape
    g = G.shape[0]
    sparse = _is_sparse(blk)
    nnz = int(blk.nnz) if sparse else n * c
    s = np.dtype(blk.dtype).itemsize
    pair = s + 8
    sort = 8 * 2 * nnz * pair + 2 * nnz * pair  # radix passes (read + write), then gathers
    prep = nnz * 8 if sparse else 0  # column of each stored value (searchsorted)
    kernel_read = nnz * pair + nnz * 4 + (c + 1) * 8 + g * 8
    return KernelCost(
        read=sort // 2 + prep + kernel_read,
        written=sort // 2 + prep + (g + 1) * c * 8,
        flops=6 * nnz,  # average ranks and sums (the searches' compares not counted)
        flop_dtype="float64",
        launches=(5 if sparse else 3) + 1,
    )


def _example(xp, scale: int = 0):
    """A CSC block of ``n`` cells x ``c`` genes at 10% density, 8 disjoint groups."""
    import scipy.sparse as sp

    n, c = {0: (300, 4), 1: (200_000, 200), 2: (1_000_000, 100)}[scale]
    rng = np.random.default_rng(0)
    m = sp.random(n, c, density=0.1, format="csc", random_state=rng, dtype=np.float64)
    m.data = np.round(m.data * 5) / 5  # ties
    labels = rng.integers(0, 8, size=n)
    masks = np.stack([labels == k for k in range(8)])
    G = sp.csr_matrix(masks.astype(np.float64))
    codes = labels.astype(np.int32)
    if xp is not np:
        import cupyx.scipy.sparse as csp

        return (csp.csc_matrix(m), csp.csr_matrix(G), xp.asarray(codes)), {}
    return (m, G, codes), {}


_ARGS = "int64[:], int64[:], int64, int32[:], float64[:], float64[:, :], float64[:]"

SPEC = KernelSpec(
    name="wilcoxon_rank_sums",
    source="gpu_sc.kernels.cuda._wilcoxon_src",
    signatures={"wilcoxon_rank_sums": [f"void(float64[:], {_ARGS})", f"void(float32[:], {_ARGS})"]},
    reference=block_rank_sums,
    launch=_launch,
    cost=_cost,
    supports=_supports,
    example=_example,
    doc=__doc__,
)
