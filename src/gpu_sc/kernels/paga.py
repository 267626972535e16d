"""PAGA (model v1.2) connectivities between groups of cells, array-generic.

scanpy's ``PAGA._compute_connectivities_v1_2`` counts the edges of the *directed* kNN graph
(the pattern of ``distances``) inside and between groups with igraph, then scales each
inter-group count by the count expected under a random null. Every count here is one sparse
product of the 0/1 pattern with the group indicator matrix (exact integer sums, so the
result does not depend on the summation order), and the scaling is elementwise.
"""

from __future__ import annotations

from ..dispatch.arrays import ArrayModule

__all__ = ["paga_connectivities"]


def paga_connectivities(am: ArrayModule, distances, codes, n_groups: int):
    """Group sizes and PAGA v1.2 connectivities of the kNN graph ``distances``.

    Parameters
    ----------
    am
        Array module the counts are made with (``distances`` and ``codes`` are moved to it).
    distances
        ``n x n`` sparse kNN distances (only their nonzero pattern is used), host or device.
    codes
        Group code of each cell, ``0..n_groups-1`` (a categorical's ``.codes``).
    n_groups
        Number of groups (categories, including empty ones).

    Returns
    -------
    sizes, inter_edges, connectivities
        ``sizes``: cells per group (``int64``); ``inter_edges``: dense symmetric
        ``n_groups x n_groups`` count of directed edges between two groups (both ways);
        ``connectivities``: dense PAGA connectivities (0 where groups share no edge, values
        capped at 1), both ``float64`` on ``am``'s device.
    """
    xp = am.xp
    D = am.asarray(distances)
    if not am.issparse(D):
        D = am.sparse.csr_matrix(D)
    # Every stored entry is an edge, explicit zeros (distance 0 between duplicate cells)
    # included: scanpy sets a copy's data to ones. Never eliminate_zeros() here, which would
    # also change the caller's obsp["distances"] in place (tocsr() returns the same matrix).
    D = D.tocsr()
    pattern = am.sparse.csr_matrix(
        (xp.ones(D.nnz, dtype=xp.float64), D.indices, D.indptr), shape=D.shape
    )
    codes = am.asarray(codes).astype(xp.int64)
    n = codes.shape[0]
    member = am.sparse.csr_matrix(
        (xp.ones(n, dtype=xp.float64), codes, xp.arange(n + 1, dtype=xp.int64)),
        shape=(n, n_groups),
    )
    counts = (member.T @ (pattern @ member)).toarray()  # counts[i, j]: edges group i -> j
    sizes = xp.bincount(codes, minlength=n_groups).astype(xp.int64)
    inner = xp.diag(counts).copy()
    directed = counts - xp.diag(inner)
    es = inner + directed.sum(axis=1)  # edges leaving each group, inner ones included
    inter = directed + directed.T
    ns = sizes.astype(xp.float64)
    expected = (es[:, None] * ns[None, :] + es[None, :] * ns[:, None]) / (n - 1)
    safe = xp.where(expected != 0, expected, 1.0)
    scaled = xp.where(expected != 0, inter / safe, 1.0)
    connectivities = xp.where(inter != 0, xp.minimum(scaled, 1.0), 0.0)
    return sizes, inter, connectivities
