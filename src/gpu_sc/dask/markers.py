"""``rank_genes_groups`` on the Dask path: the engine's statistics, its matrix passes block-wise.

The engine's two passes over the matrix are made block-wise:

- Group sums (t-test, logfoldchanges, ``pts``) are accumulated over row blocks of cells and
  added by the fixed-order tree sum, so they do not depend on the number of workers.
- Wilcoxon ranks need every cell of a gene at once: the genes are taken in chunks whose
  stored values fit a budget (:data:`WILCOXON_CHUNK_NNZ`), each chunk is gathered to the
  client as one sparse matrix and ranked there by the engine's kernel.

Everything else (validation, the tests' formulas, Benjamini-Hochberg, the top-``n_genes``
records) is :func:`gpu_sc.engine.markers.rank_genes_groups_with`, shared with the in-memory
engine.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..dispatch.arrays import ArrayModule
from ..dispatch.registry import EngineContext
from ..engine.dask_rows import DaskRows, compute, row_blocks, subset_cols
from ..engine.markers import rank_genes_groups_with
from ..kernels import markers as K
from ..kernels.reductions import as_csr

__all__ = ["WILCOXON_CHUNK_NNZ", "rank_genes_groups"]

#: Stored values of one chunk of genes gathered for the Wilcoxon ranks (5·10^7 float32 values
#: and their indices: ~0.4 GB on the client).
WILCOXON_CHUNK_NNZ = 50_000_000


def _sums_block(am, b, cell_masks):
    s = K.group_sums(am, as_csr(am, b).tocsc(), cell_masks.T)
    return (s.sums, s.sumsq, s.nnz, s.total_sum, s.total_sumsq, s.total_nnz)


def group_sums(am: ArrayModule, X, masks) -> K.GroupSums:
    """Compute :func:`gpu_sc.kernels.markers.group_sums` of a Dask matrix.

    Per row block, then added by the fixed-order tree sum.
    """
    total = DaskRows(X, am.name).map_reduce(_sums_block, rows=(np.asarray(masks).T,))
    sizes = am.xp.asarray(np.asarray(masks).sum(axis=1), dtype=am.xp.float64)
    return K.GroupSums(int(X.shape[0]), sizes, *(am.asarray(t) for t in total))


def _nnz_block(am, b):
    b = as_csr(am, b)
    return am.to_host(am.xp.bincount(b.indices, minlength=b.shape[1])).astype(np.int64)


def _gene_chunks(nnz_per_gene: np.ndarray, budget: int):
    left, acc = 0, 0
    for g, n in enumerate(nnz_per_gene):
        if acc and acc + n > budget:
            yield left, g
            left, acc = g, 0
        acc += int(n)
    if left < nnz_per_gene.size:
        yield left, int(nnz_per_gene.size)


def rank_sums(am: ArrayModule, X, masks, cells=None):
    """Compute :func:`gpu_sc.kernels.markers.wilcoxon_rank_sums` of a Dask matrix.

    By chunks of genes, each gathered whole (all cells) to the client.
    """
    nnz = DaskRows(X).map_reduce(_nnz_block)
    n_genes = X.shape[1]
    rank, tie, n_ranked = None, np.zeros(n_genes), 0
    for left, right in _gene_chunks(nnz, WILCOXON_CHUNK_NNZ):
        keep = np.zeros(n_genes, dtype=bool)
        keep[left:right] = True
        blocks = compute(*row_blocks(subset_cols(X, keep)))
        chunk = sp.vstack([sp.csr_matrix(b) for b in blocks], format="csc")
        r, t, n_ranked = K.wilcoxon_rank_sums(am, chunk, masks, cells)
        if rank is None:
            rank = np.zeros((r.shape[0], n_genes))
        rank[:, left:right], tie[left:right] = am.to_host(r), am.to_host(t)
    return am.asarray(rank), am.asarray(tie), n_ranked


def rank_genes_groups(
    adata,
    ctx: EngineContext,
    *,
    groupby,
    mask_var,
    use_raw,
    groups,
    reference,
    n_genes,
    rankby_abs,
    pts,
    key_added,
    copy,
    method,
    corr_method,
    tie_correct,
    layer,
    **kwds,
):
    """Rank genes like scanpy's ``rank_genes_groups``, on a Dask matrix.

    t-test, t-test_overestim_var and wilcoxon, on ``X``, ``.raw.X`` or a layer.
    """
    return rank_genes_groups_with(
        adata,
        ctx,
        group_sums,
        rank_sums,
        groupby=groupby,
        mask_var=mask_var,
        use_raw=use_raw,
        groups=groups,
        reference=reference,
        n_genes=n_genes,
        rankby_abs=rankby_abs,
        pts=pts,
        key_added=key_added,
        method=method,
        corr_method=corr_method,
        tie_correct=tie_correct,
        layer=layer,
        **kwds,
    )
