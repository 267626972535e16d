"""Differential expression statistics of scanpy's ``rank_genes_groups``, array-generic.

Everything is computed in blocks of genes (columns), so the matrix never has to be dense, or
on the device, at once: per-group sums, sums of squares and nonzero counts are products of a
sparse group-indicator matrix with a block; Wilcoxon ranks come from sorting the stored
values of a sparse block (its zeros are one run of ties) or the columns of a dense one.
Tie sums add integer-valued terms with ``add.reduceat`` (deterministic on both backends; CuPy
computes it as a difference of cumulative sums: exact while a block's running total of
``t^3`` stays below 2**53 ~ 9e15, else off by a relative ~1e-16 of that total, negligible
against the ``n^3`` it is divided by).
Numerics follow the installed scanpy (``scanpy/tools/_rank_genes_groups.py``): means and
variances in float64 from the data's values, whose squares scanpy 1.11 rounds to the data type
first (its numba kernel) and 1.12 does not (its float64 aggregation); the unbiased variance
``(E[x^2] - E[x]^2) n / (n - 1)``; Welch's t-test as scipy's ``ttest_ind_from_stats``;
average ranks of tied values and scipy's tie correction ``1 - sum(t^3 - t) / (n^3 - n)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._progress import progress
from .._scanpy_compat import MARKER_SQUARES_IN_DATA_DTYPE
from ..dispatch.arrays import ArrayModule
from .cuda import run_kernel

__all__ = [
    "GroupSums",
    "block_rank_sums",
    "group_codes",
    "group_sums",
    "rank_columns",
    "sparse_rank_sums",
    "t_test",
    "wilcoxon_rank_sums",
    "wilcoxon_z",
]

#: dense cells x genes elements of one Wilcoxon block (20M float64: 160 MB per array)
DEFAULT_BLOCK_ELEMENTS = 20_000_000


@dataclass
class GroupSums:
    """Per-group sums over cells, ``(n_groups, n_genes)`` float64 device arrays, plus the
    same sums over all cells (``total_*``, ``(n_genes,)``) for each group's "rest"."""

    n_cells: int
    sizes: object  # (n_groups,) cells per group
    sums: object
    sumsq: object
    nnz: object
    total_sum: object
    total_sumsq: object
    total_nnz: object

    def mean_var(self, xp):
        """Each group's mean and unbiased variance."""
        return _mean_var(xp, self.sums, self.sumsq, self.sizes[:, None])

    def rest_mean_var(self, xp):
        """Mean and unbiased variance of the cells outside each group."""
        n_rest = (self.n_cells - self.sizes)[:, None]
        return _mean_var(
            xp, self.total_sum[None, :] - self.sums, self.total_sumsq[None, :] - self.sumsq, n_rest
        )

    def pts(self):
        """Fraction of each group's cells in which a gene is nonzero."""
        return self.nnz / self.sizes[:, None]

    def pts_rest(self):
        """The same fraction among the cells outside each group."""
        return (self.total_nnz[None, :] - self.nnz) / (self.n_cells - self.sizes)[:, None]


def _mean_var(xp, sums, sumsq, n):
    """scanpy's ``_get_mean_var``: ``E[x^2] - E[x]^2``, times ``n / (n - 1)`` unless n is 1."""
    mean = sums / n
    var = sumsq / n - mean**2
    factor = xp.where(n != 1, n / xp.where(n != 1, n - 1, 1), 1.0)
    return mean, var * factor


def _special(am: ArrayModule):
    """``scipy.special`` or ``cupyx.scipy.special``: the one namespace the ArrayModule lacks."""
    if am.on_device:
        import cupyx.scipy.special as special
    else:
        import scipy.special as special
    return special


def indicator(am: ArrayModule, masks):
    """Sparse ``(n_groups, n_cells)`` float64 0/1 matrix of boolean ``masks``."""
    xp = am.xp
    masks = am.asarray(masks)
    rows, cols = xp.nonzero(masks)
    n_groups, n_cells = masks.shape
    indptr = xp.zeros(n_groups + 1, dtype=xp.int64)
    indptr[1:] = xp.cumsum(xp.bincount(rows, minlength=n_groups))
    data = xp.ones(cols.shape[0], dtype=xp.float64)
    return am.sparse.csr_matrix((data, cols.astype(xp.int64), indptr), shape=(n_groups, n_cells))


def gene_blocks(n_genes: int, block: int):
    """``(left, right)`` bounds of consecutive blocks of ``block`` genes."""
    block = max(1, int(block))
    for left in range(0, n_genes, block):
        yield left, min(left + block, n_genes)


def column_block(am: ArrayModule, X, left: int, right: int):
    """Columns ``left:right`` of ``X`` moved to ``am`` (sparse as CSR, explicit zeros dropped
    as scanpy's ``eliminate_zeros`` does before counting nonzeros)."""
    blk = am.asarray(X[:, left:right])
    if am.issparse(blk):
        blk = blk.tocsr()
        blk.eliminate_zeros()
    return blk


def _dense(am: ArrayModule, x):
    return x.toarray() if am.issparse(x) else x


def group_sums(am: ArrayModule, X, masks, *, gene_block: int = 2000) -> GroupSums:
    """Sums, sums of squares and nonzero counts per group and gene, by blocks of genes.

    Parameters
    ----------
    X
        ``(n_cells, n_genes)`` matrix: CSC (cheapest to slice by genes), CSR or dense, host
        or device.
    masks
        ``(n_groups, n_cells)`` boolean group membership.
    gene_block
        Genes per block moved to the device at once.
    """
    xp = am.xp
    G = indicator(am, masks)
    n_cells, n_genes = X.shape
    n_groups = G.shape[0]
    out = xp.zeros((3, n_groups, n_genes), dtype=xp.float64)
    total = xp.zeros((3, n_genes), dtype=xp.float64)
    ones = am.sparse.csr_matrix(xp.ones((1, n_cells), dtype=xp.float64))
    for left, right in gene_blocks(n_genes, gene_block):
        blk = column_block(am, X, left, right)
        for i, mat in enumerate(_moments(am, blk)):
            out[i, :, left:right] = _dense(am, G @ mat)
            total[i, left:right] = _dense(am, ones @ mat).ravel()
    sizes = xp.asarray(am.asarray(masks).sum(axis=1), dtype=xp.float64)
    return GroupSums(n_cells, sizes, out[0], out[1], out[2], total[0], total[1], total[2])


def _moments(am: ArrayModule, blk):
    """Values, squares and nonzero indicators of a block, as float64 matrices of the block's
    kind; the squares are rounded in the data's precision where the installed scanpy does so
    (:data:`gpu_sc._scanpy_compat.MARKER_SQUARES_IN_DATA_DTYPE`), else squared in float64."""
    xp = am.xp
    if am.issparse(blk):
        values, squares, nonzero = blk.copy(), blk.copy(), blk.copy()
        values.data = blk.data.astype(xp.float64)
        squares.data = _squares(blk.data, values.data)
        nonzero.data = xp.ones(blk.data.shape[0], dtype=xp.float64)
        return values, squares, nonzero
    values = blk.astype(xp.float64)
    return values, _squares(blk, values), (blk != 0).astype(xp.float64)


def _squares(x, x64):
    """``x**2`` in float64: from ``x``'s own dtype (scanpy < 1.12) or from its float64 copy."""
    if MARKER_SQUARES_IN_DATA_DTYPE:
        return (x * x).astype(x64.dtype)
    return x64 * x64


def t_test(am: ArrayModule, mean1, var1, n1, mean2, var2, n2):
    """Welch's t-test as scanpy calls ``scipy.stats.ttest_ind_from_stats``.

    Standard deviations go through ``sqrt`` and back (as scanpy passes ``std=sqrt(var)``);
    undefined scores become 0 and undefined p-values 1, as scanpy sets them.
    The two-sided p-value ``2 * stdtr(df, -|t|)`` is evaluated as the regularised incomplete
    beta ``I_{df/(df+t^2)}(df/2, 1/2)``, which both scipy and cupyx provide.
    """
    xp = am.xp
    with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 is expected; handled below
        v1 = xp.sqrt(var1) ** 2
        v2 = xp.sqrt(var2) ** 2
        vn1, vn2 = v1 / n1, v2 / n2
        df = (vn1 + vn2) ** 2 / (vn1**2 / (n1 - 1) + vn2**2 / (n2 - 1))
        df = xp.where(xp.isnan(df), 1.0, df)
        t = (mean1 - mean2) / xp.sqrt(vn1 + vn2)
        pvals = _special(am).betainc(df / 2.0, 0.5, df / (df + t * t))
    scores = xp.where(xp.isnan(t), 0.0, t)
    pvals = xp.where(xp.isnan(pvals), 1.0, pvals)
    return scores, pvals


def rank_columns(am: ArrayModule, dense):
    """Average ranks (1-based, ties averaged) of each column, and each column's tie sum
    ``sum(t^3 - t)`` over groups of ``t`` tied values; both float64.

    Works on the transposed block (one contiguous row per gene): a stable argsort per row,
    then runs of equal sorted values found on the flattened order; all vectorised, the same
    on NumPy and CuPy. Returns ranks transposed, ``(n_cols, n)``.
    """
    xp = am.xp
    n, n_cols = dense.shape
    rows = xp.ascontiguousarray(dense.T)
    order = xp.argsort(rows, axis=1, kind="stable")
    flat = (order + (xp.arange(n_cols, dtype=order.dtype) * n)[:, None]).ravel()
    s = rows.ravel()[flat].reshape(n_cols, n)
    new = xp.ones((n_cols, n), dtype=bool)
    new[:, 1:] = s[:, 1:] != s[:, :-1]
    new = new.ravel()
    run = xp.cumsum(new, dtype=xp.int64) - 1
    starts = xp.nonzero(new)[0]
    lengths = xp.diff(starts, append=n * n_cols).astype(xp.float64)
    average = (starts % n).astype(xp.float64) + (lengths + 1.0) / 2.0
    ranks = xp.empty(n * n_cols, dtype=xp.float64)
    ranks[flat] = average[run]
    tie_sum = xp.add.reduceat(lengths**3 - lengths, run[xp.arange(n_cols) * n])
    return ranks.reshape(n_cols, n), tie_sum


def sparse_rank_sums(am: ArrayModule, blk, G):
    """Rank sums per group and tie sums per column of a sparse block, ranking every column
    over all its ``n`` rows, without densifying it.

    The implicit zeros of a column are one run of ties: they rank after its negative
    values and before its positive ones, at their average rank. Only the stored values are
    sorted (``lexsort`` by column, then value); each group's sum is the sparse product of
    its indicator row with the rank matrix plus its zero count times the zeros' rank. The
    ranks are half-integers, so the sums are exact in float64 whatever the summation order.
    """
    xp = am.xp
    blk = blk.tocsc()
    blk.sum_duplicates()
    n, n_cols = blk.shape
    indptr = blk.indptr.astype(xp.int64)
    values = blk.data
    nnz_col = xp.diff(indptr)
    col = xp.searchsorted(indptr, xp.arange(values.shape[0], dtype=xp.int64), side="right") - 1
    order = xp.lexsort(xp.stack([values, col.astype(values.dtype)]))
    v, c = values[order], col[order]
    zeros = (n - nnz_col).astype(xp.float64)
    negatives = xp.bincount(col[values < 0], minlength=n_cols).astype(xp.float64)
    # 0-based position of each sorted value within its column, the zeros' run included
    pos = xp.arange(v.shape[0], dtype=xp.int64) - indptr[c]
    pos = pos.astype(xp.float64) + xp.where(v > 0, zeros[c], 0.0)
    new = xp.ones(v.shape[0], dtype=bool)
    new[1:] = (v[1:] != v[:-1]) | (c[1:] != c[:-1])
    run = xp.cumsum(new, dtype=xp.int64) - 1
    starts = xp.nonzero(new)[0]
    lengths = xp.diff(starts, append=v.shape[0]).astype(xp.float64)
    average = pos[starts] + (lengths + 1.0) / 2.0
    ranks = xp.empty(v.shape[0], dtype=xp.float64)
    ranks[order] = average[run]
    R = am.sparse.csc_matrix((ranks, blk.indices, indptr), shape=blk.shape)
    P = am.sparse.csc_matrix((xp.ones_like(ranks), blk.indices, indptr), shape=blk.shape)
    zero_rank = negatives + (zeros + 1.0) / 2.0
    group_zeros = xp.asarray(G.sum(axis=1)).reshape(-1, 1) - _dense(am, G @ P)
    rank_sums = _dense(am, G @ R) + group_zeros * zero_rank[None, :]
    # ties: runs of stored values, summed per column in a fixed order, plus the zeros' run
    run_col = c[starts]
    tie_sums = zeros**3 - zeros
    if starts.shape[0]:
        first = xp.ones(starts.shape[0], dtype=bool)
        first[1:] = run_col[1:] != run_col[:-1]
        heads = xp.nonzero(first)[0]
        tie_sums[run_col[heads]] += xp.add.reduceat(lengths**3 - lengths, heads)
    return rank_sums, tie_sums


def wilcoxon_rank_sums(am: ArrayModule, X, masks, cells=None, *, block_elements=None):
    """Rank sums of each group (rows of ``masks``) and tie sums per gene, ranking each gene
    over ``cells`` (a boolean mask; all cells when None), in blocks of genes: sparse blocks
    by :func:`sparse_rank_sums`, dense ones by :func:`rank_columns`.

    Returns ``(rank_sums (n_groups, n_genes), tie_sums (n_genes,), n_ranked)``.
    """
    xp = am.xp
    masks = am.asarray(masks)
    n_cells, n_genes = X.shape
    if cells is None:
        rows = None
        n_ranked = n_cells
    else:
        rows = xp.nonzero(am.asarray(cells))[0]
        n_ranked = int(rows.shape[0])
        masks = masks[:, rows]
    G = indicator(am, masks)
    codes = group_codes(am, masks)
    budget = block_elements or DEFAULT_BLOCK_ELEMENTS
    if hasattr(X, "nnz"):  # sparse blocks cost their stored values, not cells x genes
        block = max(1, int(budget * n_genes // max(int(X.nnz), 1)))
    else:
        block = max(1, budget // max(n_ranked, 1))
    rank_sums = xp.zeros((masks.shape[0], n_genes), dtype=xp.float64)
    tie_sums = xp.zeros(n_genes, dtype=xp.float64)
    blocks = list(gene_blocks(n_genes, block))
    for left, right in progress(blocks, desc="wilcoxon", unit="gene block"):
        blk = column_block(am, X, left, right)
        if rows is not None:
            blk = blk[rows]
        rank_sums[:, left:right], tie_sums[left:right] = run_kernel(
            am, "wilcoxon_rank_sums", blk, G, codes
        )
    return rank_sums, tie_sums, n_ranked


def group_codes(am: ArrayModule, masks):
    """``(n_cells,)`` int32 group of each cell (-1: none) when the groups of ``masks`` are
    disjoint (scanpy's groups are the categories of one column), else None."""
    xp = am.xp
    if masks.shape[0] == 0 or bool((masks.sum(axis=0) > 1).any()):
        return None
    member = masks.any(axis=0)
    return xp.where(member, xp.argmax(masks, axis=0), -1).astype(xp.int32)


def block_rank_sums(am: ArrayModule, blk, G, codes=None):
    """Rank sums per group (rows of the indicator ``G``) and tie sums per column of one
    block, each column ranked over all its rows: sparse blocks by :func:`sparse_rank_sums`,
    dense ones by :func:`rank_columns` (the reference of the fused kernel
    ``wilcoxon_rank_sums``, :mod:`gpu_sc.kernels.cuda.wilcoxon`, which reads the groups as
    ``codes`` from :func:`group_codes` instead of ``G``; unused here).
    """
    if am.issparse(blk):
        return sparse_rank_sums(am, blk, G)
    ranks, tie_sums = rank_columns(am, blk)
    return _dense(am, G @ ranks.T), tie_sums


def wilcoxon_z(am: ArrayModule, rank_sums, tie_sums, n_group, n_ranked, *, tie_correct: bool):
    """scanpy's normal approximation of the rank-sum statistic and its two-sided p-value.

    ``n_group`` broadcasts against ``rank_sums`` (cells of each group among the ranked);
    the other sample is the remaining ``n_ranked - n_group`` ranked cells.
    """
    xp = am.xp
    n_other = n_ranked - n_group
    if tie_correct:
        coef = 1.0 - tie_sums / (float(n_ranked) ** 3 - n_ranked) if n_ranked >= 2 else 1.0
    else:
        coef = 1.0
    std = xp.sqrt(coef * n_group * n_other * (n_group + n_other + 1) / 12.0)
    with np.errstate(divide="ignore", invalid="ignore"):  # all values tied: 0/0, set to 0
        z = (rank_sums - n_group * ((n_group + n_other + 1) / 2.0)) / std
    z = xp.where(xp.isnan(z), 0.0, z)
    pvals = 2.0 * _special(am).ndtr(-xp.abs(z))
    return z, pvals
