"""Leiden community detection on a weighted undirected graph, array-generic.

The quality optimised is the one scanpy's ``flavor="igraph"`` optimises
(``igraph.Graph.community_leiden(objective_function="modularity", weights, resolution)``):

.. math:: Q = \\frac{1}{2m} \\sum_{ij} \\Big(A_{ij} - \\gamma \\frac{k_i k_j}{2m}\\Big)
          \\delta(c_i, c_j)

with :math:`k_i = \\sum_j A_{ij}` and :math:`2m = \\sum_{ij} A_{ij}`. scanpy builds the igraph
graph from *every* stored entry of the symmetric connectivities, so igraph sees each edge twice
(weights doubled); modularity is invariant to that scaling, so :func:`modularity` of the
matrix itself equals igraph's ``modularity`` of scanpy's graph.
"""

from __future__ import annotations

from ..dispatch.arrays import ArrayModule, module_of

__all__ = ["modularity"]


def modularity(adjacency, labels, resolution: float = 1.0, *, am: ArrayModule | None = None):
    """Modularity with resolution of the partition ``labels`` of ``adjacency``.

    Parameters
    ----------
    adjacency
        Square symmetric sparse (or dense) weighted adjacency matrix, host or device.
    labels
        Community of each node: integers, or any values ``xp.unique`` can encode
        (strings/categories on host are converted with pandas).
    resolution
        :math:`\\gamma` in the formula above (scanpy's ``resolution``).
    am
        Array module; inferred from ``adjacency`` when omitted.

    Returns
    -------
    float
        :math:`Q` as defined in the module docstring (0.0 for a graph without edges).
    """
    am = am or module_of(adjacency)
    xp = am.xp
    A = am.asarray(adjacency)
    if not am.issparse(A):
        A = am.sparse.csr_matrix(A)
    A = A.tocoo()
    codes = _label_codes(am, labels)
    if codes.shape[0] != A.shape[0]:
        raise ValueError(f"labels has {codes.shape[0]} entries for a graph of {A.shape[0]} nodes")
    data = A.data.astype(xp.float64)
    two_m = float(data.sum())
    if two_m == 0.0:
        return 0.0
    same = codes[A.row] == codes[A.col]
    inside = float(data[same].sum())
    degree = _node_sums(am, A.row, data, A.shape[0])
    n_comm = int(codes.max()) + 1
    comm_degree = _node_sums(am, codes, degree, n_comm)
    return inside / two_m - resolution * float((comm_degree * comm_degree).sum()) / two_m**2


def _label_codes(am: ArrayModule, labels):
    """Integer community codes ``0..C-1`` of ``labels`` on ``am``'s device."""
    xp = am.xp
    if type(labels).__module__.startswith("cupy"):
        arr = labels
    else:
        import numpy as np
        import pandas as pd

        arr = np.asarray(labels)
        if arr.dtype.kind not in "iub":
            arr = pd.factorize(arr)[0]
        arr = am.asarray(arr)
    _, codes = xp.unique(arr, return_inverse=True)
    return codes.ravel().astype(xp.int64)


def _node_sums(am: ArrayModule, ids, values, n: int):
    """``out[g] = sum(values[ids == g])`` in a fixed order (a CSR row sum, no atomics)."""
    xp = am.xp
    order = xp.argsort(ids, kind="stable")
    counts = xp.bincount(ids, minlength=n)
    indptr = xp.concatenate([xp.zeros(1, dtype=xp.int64), xp.cumsum(counts)])
    cols = xp.arange(ids.shape[0], dtype=xp.int64)
    S = am.sparse.csr_matrix((values[order], cols, indptr), shape=(n, ids.shape[0]))
    return xp.asarray(S.sum(axis=1)).ravel()
