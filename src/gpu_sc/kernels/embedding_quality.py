"""How faithfully a low-dimensional embedding keeps the high-dimensional neighbourhoods.

Two scores shared by the engine tests and the parity suite, computed on the host:

* :func:`neighbourhood_preservation`: the fraction of each point's ``k`` nearest neighbours in
  the input space that are also among its ``k`` nearest neighbours in the embedding, averaged.
* :func:`trustworthiness`: scikit-learn's trustworthiness (penalises embedding neighbours that
  are far apart in the input space), on a fixed random subsample above ``max_cells`` cells,
  because it builds the full pairwise distance matrix.

Both are deterministic for given inputs (and ``seed`` when subsampling).
"""

from __future__ import annotations

import numpy as np

from ..dispatch.arrays import to_host_array

__all__ = ["kl_divergence", "neighbourhood_preservation", "trustworthiness"]


def _host(x) -> np.ndarray:
    x = to_host_array(x, None)
    if hasattr(x, "toarray"):
        x = x.toarray()
    return np.ascontiguousarray(x, dtype=np.float64)


def _knn_indices(X: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` nearest other points of every row of ``X`` (exact, euclidean)."""
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k + 1, algorithm="auto").fit(X)
    idx = nn.kneighbors(X, return_distance=False)
    # Drop each point itself; with duplicate points it may not come first, so drop it by value.
    n = X.shape[0]
    is_self = idx == np.arange(n)[:, None]
    no_self = ~is_self.any(axis=1)
    is_self[no_self, -1] = True  # self not found: drop the farthest instead
    return idx[~is_self].reshape(n, k)


def neighbourhood_preservation(X_high, Y, k: int = 15) -> float:
    """Mean fraction of the ``k`` nearest neighbours in ``X_high`` kept among those in ``Y``.

    Parameters
    ----------
    X_high
        ``(n, d)`` points in the input space (e.g. ``obsm["X_pca"]``); host or device array.
    Y
        ``(n, e)`` embedding of the same points (e.g. ``obsm["X_umap"]``).
    k
        Neighbourhood size, excluding the point itself.

    Returns
    -------
    float
        A value in ``[0, 1]``; 1 means every neighbourhood is preserved exactly.
    """
    X_high, Y = _host(X_high), _host(Y)
    if X_high.shape[0] != Y.shape[0]:
        raise ValueError(f"X_high has {X_high.shape[0]} points but Y has {Y.shape[0]}")
    if not 0 < k < X_high.shape[0]:
        raise ValueError(f"k must be in [1, n_points - 1], got {k} for {X_high.shape[0]} points")
    a = np.sort(_knn_indices(X_high, k), axis=1)
    b = np.sort(_knn_indices(Y, k), axis=1)
    kept = [np.intersect1d(ra, rb, assume_unique=True).size for ra, rb in zip(a, b, strict=True)]
    return float(np.mean(kept) / k)


def trustworthiness(X_high, Y, k: int = 15, *, max_cells: int = 10_000, seed: int = 0) -> float:
    """scikit-learn's trustworthiness of ``Y`` as an embedding of ``X_high``.

    Parameters
    ----------
    X_high, Y
        Input points and their embedding, ``(n, d)`` and ``(n, e)``.
    k
        Neighbourhood size.
    max_cells
        Above this many points, score a fixed random subsample of ``max_cells`` points (the
        exact computation needs ``n x n`` distances).
    seed
        Seed of that subsample.

    Returns
    -------
    float
        Trustworthiness in ``[0, 1]``.
    """
    from sklearn.manifold import trustworthiness as _sk_trustworthiness

    X_high, Y = _host(X_high), _host(Y)
    if X_high.shape[0] != Y.shape[0]:
        raise ValueError(f"X_high has {X_high.shape[0]} points but Y has {Y.shape[0]}")
    n = X_high.shape[0]
    if n > max_cells:
        keep = np.sort(np.random.default_rng(seed).choice(n, size=max_cells, replace=False))
        X_high, Y = X_high[keep], Y[keep]
    return float(_sk_trustworthiness(X_high, Y, n_neighbors=k))


def kl_divergence(P, Y) -> float:
    """t-SNE's objective ``KL(P || Q)`` of embedding ``Y`` for the joint affinities ``P``.

    ``P`` is the symmetric ``(n, n)`` sparse joint probability matrix (summing to 1) as t-SNE
    builds it; ``Q`` is the Student-t similarity of ``Y`` (exact, in row blocks). One function
    for both embeddings, so two t-SNE implementations are compared on the same objective.
    """
    import scipy.sparse as sp

    P = sp.csr_matrix(to_host_array(P, None), dtype=np.float64)
    Y = _host(Y)
    n = Y.shape[0]
    sq = np.einsum("ij,ij->i", Y, Y)
    z = 0.0  # sum over i != j of (1 + |y_i - y_j|^2)^-1
    block = max(1, min(n, 2**24 // max(n, 1)))
    for start in range(0, n, block):
        stop = min(n, start + block)
        d2 = sq[start:stop, None] + sq[None, :] - 2.0 * (Y[start:stop] @ Y.T)
        np.maximum(d2, 0.0, out=d2)
        w = 1.0 / (1.0 + d2)
        w[np.arange(stop - start), np.arange(start, stop)] = 0.0
        z += w.sum()
    P = P.tocoo()
    mask = P.data > 0
    rows, cols, p = P.row[mask], P.col[mask], P.data[mask]
    d2 = np.sum((Y[rows] - Y[cols]) ** 2, axis=1)
    q = np.maximum(1.0 / (1.0 + d2) / z, np.finfo(np.float64).tiny)
    return float(np.sum(p * np.log(np.maximum(p, np.finfo(np.float64).tiny) / q)))
