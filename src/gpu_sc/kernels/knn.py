"""Exact k-nearest neighbours by tiled matrix products, array-generic.

The distance matrix is never materialised: rows are processed in tiles, and for each row tile
the columns are scanned in tiles, each tile's distances computed by one matrix product
(``|x|^2 + |y|^2 - 2 x.y`` for euclidean, ``1 - x.y / (|x||y|)`` for cosine) and merged into a
running per-row top ``k`` with ``argpartition``. Peak memory is one ``rows x cols`` tile.

Output follows scikit-learn's brute-force ``kneighbors`` on the training set, which scanpy uses
for exact neighbours: row ``i`` lists the point itself first (distance 0), then its ``k - 1``
nearest other points by increasing distance; ties are broken by the smaller index, so the result
does not depend on the order in which tiles are visited.
"""

from __future__ import annotations

from ..dispatch.arrays import ArrayModule, module_of

__all__ = ["knn", "knn_to_csr"]

# Elements of one distance tile (float64): 2**24 elements = 128 MiB.
_TILE_ELEMENTS = 2**24


def knn(
    X,
    k: int,
    metric: str = "euclidean",
    *,
    am: ArrayModule | None = None,
    tile_elements: int = _TILE_ELEMENTS,
):
    """Exact ``k`` nearest neighbours of every row of ``X`` among the rows of ``X``.

    Parameters
    ----------
    X
        ``(n, d)`` dense array (NumPy or CuPy); computed in float64 (float32 data: squared
        distances are rounded to float32 like scikit-learn does).
    k
        Neighbours per row, including the point itself (scanpy's ``n_neighbors``).
    metric
        ``"euclidean"`` or ``"cosine"``.
    am
        Array module; inferred from ``X`` when omitted.
    tile_elements
        Upper bound on the elements of one distance tile (memory bound).

    Returns
    -------
    indices
        ``(n, k)`` int64, self first, then by increasing distance (ties: smaller index first).
    distances
        ``(n, k)`` distances matching ``indices`` (0 for the point itself); float64, except
        float32 for cosine on float32 data (scikit-learn's types).
    """
    am = am or module_of(X)
    xp = am.xp
    X = xp.asarray(X)
    # scikit-learn computes float32 data's squared distances in float64, rounds them to
    # float32 and takes the root in float32: do the same so distances match it bit for bit.
    round32 = X.dtype == xp.float32
    X = X.astype(xp.float64)
    n = X.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}] for {n} points, got {k}")
    if metric == "cosine":
        norms = xp.sqrt(xp.einsum("ij,ij->i", X, X))
        # sklearn's normalize leaves all-zero rows as they are (cosine distance 1 to anything).
        X = X / xp.where(norms > 0, norms, 1.0)[:, None]
    elif metric != "euclidean":
        raise ValueError(f"metric must be 'euclidean' or 'cosine', not {metric!r}")
    sq = xp.einsum("ij,ij->i", X, X)

    cols_per_tile = max(k, min(n, tile_elements // max(1, min(n, 4096))))
    rows_per_tile = max(1, min(n, tile_elements // cols_per_tile))
    out_idx = xp.empty((n, k), dtype=xp.int64)
    out_dist = xp.empty((n, k), dtype=xp.float64)
    for r0 in range(0, n, rows_per_tile):
        r1 = min(n, r0 + rows_per_tile)
        best_d = best_i = None
        for c0 in range(0, n, cols_per_tile):
            c1 = min(n, c0 + cols_per_tile)
            d = _tile_distances(xp, X, sq, r0, r1, c0, c1, metric)
            if round32:
                d = d.astype(xp.float32).astype(xp.float64)
            # The point itself goes first whatever the rounding of its own distance.
            rows = xp.arange(max(r0, c0), min(r1, c1))
            if rows.size:
                d[rows - r0, rows - c0] = -xp.inf
            i = xp.broadcast_to(xp.arange(c0, c1, dtype=xp.int64), d.shape)
            if best_d is not None:
                d = xp.concatenate([best_d, d], axis=1)
                i = xp.concatenate([best_i, i], axis=1)
            best_d, best_i = _top_k(xp, d, i, k)
        order = _sort_rows(xp, best_d, best_i)
        best_d = xp.take_along_axis(best_d, order, axis=1)
        best_i = xp.take_along_axis(best_i, order, axis=1)
        out_idx[r0:r1] = best_i
        out_dist[r0:r1] = xp.where(xp.isinf(best_d), 0.0, best_d)  # self: -inf -> 0
    if metric == "euclidean":
        if round32:  # scikit-learn takes the root in float32, then returns float64
            out_dist = xp.sqrt(out_dist.astype(xp.float32)).astype(xp.float64)
        else:
            out_dist = xp.sqrt(out_dist)
    elif round32:
        out_dist = out_dist.astype(xp.float32)  # sklearn's cosine distances keep float32
    return out_idx, out_dist


def _tile_distances(xp, X, sq, r0, r1, c0, c1, metric):
    """Squared euclidean (or cosine) distances between rows ``r0:r1`` and ``c0:c1``."""
    g = X[r0:r1] @ X[c0:c1].T
    if metric == "cosine":
        return xp.clip(1.0 - g, 0.0, 2.0)
    # Summed in scikit-learn's order, (|x|^2 - 2 x.y) + |y|^2, to round like it does.
    d = (sq[r0:r1, None] + (-2.0) * g) + sq[None, c0:c1]
    return xp.maximum(d, 0.0)


def _top_k(xp, d, i, k):
    """The ``k`` smallest entries per row of ``d`` (a candidate set, unordered) with indices.

    Ties at the cut are resolved by the smaller index: candidates equal to the k-th distance
    are ranked by index before cutting.
    """
    if d.shape[1] <= k:
        return d, i
    part = xp.argpartition(d, k - 1, axis=1)[:, :k]
    cand_d = xp.take_along_axis(d, part, axis=1)
    kth = cand_d.max(axis=1, keepdims=True)
    n_tied = (d == kth).sum(axis=1)
    if bool((n_tied > 1).any()):
        # Rare (duplicate points): order whole rows by (distance, index) and cut there.
        order = _sort_rows(xp, d, i)[:, :k]
        return xp.take_along_axis(d, order, axis=1), xp.take_along_axis(i, order, axis=1)
    return cand_d, xp.take_along_axis(i, part, axis=1)


def _sort_rows(xp, d, i):
    """Per-row order by (distance, index): sort by index, then stably by distance."""
    by_index = xp.argsort(i, axis=1)
    d_by_index = xp.take_along_axis(d, by_index, axis=1)
    by_dist = xp.argsort(d_by_index, axis=1, kind="stable")
    return xp.take_along_axis(by_index, by_dist, axis=1)


def knn_to_csr(indices, distances, *, am: ArrayModule | None = None):
    """scanpy's ``obsp['distances']``: CSR with the ``k - 1`` neighbours other than self per row.

    Entries keep the neighbour order (increasing distance), exactly as scanpy stores them
    (its indices are not column-sorted).
    """
    am = am or module_of(indices)
    xp = am.xp
    n, k = indices.shape
    m = k - 1
    indptr = xp.arange(0, n * m + 1, m, dtype=xp.int64)
    return am.sparse.csr_matrix(
        (xp.ascontiguousarray(distances[:, 1:]).ravel(),
         xp.ascontiguousarray(indices[:, 1:]).ravel(), indptr),
        shape=(n, n),
    )
