"""Exact k-nearest neighbours by tiled matrix products, array-generic.

The distance matrix is never materialised: rows are processed in tiles, and for each row tile
the columns are scanned in blocks, each block's distances computed by one matrix product
(``|x|^2 + |y|^2 - 2 x.y`` for euclidean, ``1 - x.y / (|x||y|)`` for cosine) and merged into a
running per-row top ``k``. Peak memory is one ``rows x cols`` tile.

Selection without sorting the tiles: only the first (narrow) column block goes through
``argpartition``; every later block is first filtered against each row's current ``k``-th
distance, and only the few entries below it (their number falls like ``k * width / seen``) are
merged. This matters on CuPy, whose ``argpartition`` sorts whole rows: sorting every distance
would cost far more than computing it. Columns are visited in a fixed pseudo-random order
(atlases are often stored sorted by sample or cell type, and a first block of one type gives
the other types useless thresholds) and in blocks doubling in width up to the tile, so the
thresholds tighten early: a row keeps about ``k * (1 + ln(n / 1024))`` candidates in all.

Output follows scikit-learn's brute-force ``kneighbors`` on the training set, which scanpy uses
for exact neighbours: row ``i`` lists the point itself first (distance 0), then its ``k - 1``
nearest other points by increasing distance; ties are broken by the smaller index, so ties do
not depend on the order in which tiles are visited. (The tile size can change a distance's last
bit through the matrix product's shape; it is fixed per backend: :func:`default_tile_elements`.)
"""

from __future__ import annotations

import numpy as np

from .._progress import progress
from ..dispatch.arrays import ArrayModule
from .cuda import run_kernel

__all__ = ["default_tile_elements", "knn", "knn_to_csr", "tile_topk"]

#: Index of an empty slot of a running top-k (past every point: never ranks before one).
_NO_INDEX = np.iinfo(np.int64).max

# Elements of one float64 distance tile: 128 MiB on the host, 2 GiB on a device.
_HOST_TILE = 2**24
_DEVICE_TILE = 2**28


def default_tile_elements(am: ArrayModule) -> int:
    """Elements of one float64 distance tile, fixed per backend.

    The tile's shape decides the matrix products' shapes, and a BLAS may round a product's
    last bit differently for another shape: a tile sized from the free memory would let the
    same input give other neighbours (at near ties) from one run to the next. So the size is
    fixed, and only shrinks when the device has too little free memory for it (about 8 tiles:
    the tile, its mask and the candidates' temporaries).
    """
    free = am.free_memory()
    if free is None:
        return _HOST_TILE
    if free >= 8 * 8 * _DEVICE_TILE:
        return _DEVICE_TILE
    return int(max(_HOST_TILE, free // (8 * 8)))


def knn(
    am: ArrayModule,
    X,
    k: int,
    metric: str = "euclidean",
    *,
    tile_elements: int | None = None,
    dtype=None,
):
    """Exact ``k`` nearest neighbours of every row of ``X`` among the rows of ``X``.

    Parameters
    ----------
    am
        Array module the search runs with (a host ``X`` is moved to its device).
    X
        ``(n, d)`` dense array (NumPy or CuPy); computed in float64 (float32 data: squared
        distances are rounded to float32 like scikit-learn does).
    k
        Neighbours per row, including the point itself (scanpy's ``n_neighbors``).
    metric
        ``"euclidean"`` or ``"cosine"``.
    tile_elements
        Upper bound on the elements of one distance tile; by default
        :func:`default_tile_elements` (fixed per backend, for reproducible results).
    dtype
        ``None`` (default, ``precision="exact"``): as described above. ``float32``
        (``precision="fast"``): the tiles' matrix products and distances in float32 (half the
        bytes, the GPU's full-rate arithmetic); distances returned as float64 all the same.

    Returns
    -------
    indices
        ``(n, k)`` int64, self first, then by increasing distance (ties: smaller index first).
    distances
        ``(n, k)`` distances matching ``indices`` (0 for the point itself); float64, except
        float32 for cosine on float32 data (scikit-learn's types).
    """
    xp = am.xp
    X = xp.asarray(X)
    if tile_elements is None:
        tile_elements = default_tile_elements(am)
    # scikit-learn computes float32 data's squared distances in float64, rounds them to
    # float32 and takes the root in float32: do the same so distances match it bit for bit.
    fast = dtype is not None and np.dtype(dtype) == np.float32
    round32 = X.dtype == xp.float32 and not fast
    X = X.astype(xp.float32 if fast else xp.float64)
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
    if fast:  # the fused kernel takes float64 norms; the tile stays float32
        sq = sq.astype(xp.float64)
    out_idx, out_dist = _search_tiles(am, X, sq, k, metric, tile_elements, round32)
    return out_idx, _final_distances(xp, out_dist, metric, fast=fast, round32=round32)


def _search_tiles(am: ArrayModule, X, sq, k: int, metric: str, tile_elements: int, round32):
    """Return the ``(n, k)`` indices and squared (or cosine) distances, tile by tile."""
    xp = am.xp
    n = X.shape[0]
    cols_per_tile = max(k, min(n, tile_elements // max(1, min(n, 4096))))
    rows_per_tile = max(1, min(n, tile_elements // cols_per_tile))
    # Columns in a fixed order drawn on the host, so every backend visits them alike.
    perm_host = np.random.default_rng(0).permutation(n)
    perm = xp.asarray(perm_host.astype(np.int64))
    position = xp.asarray(np.argsort(perm_host).astype(np.int64))  # column position of point i
    Xc, sqc = X[perm], sq[perm]
    out_idx = xp.empty((n, k), dtype=xp.int64)
    out_dist = xp.empty((n, k), dtype=xp.float64)
    for r0 in progress(range(0, n, rows_per_tile), desc="kNN", unit="tile"):
        r1 = min(n, r0 + rows_per_tile)
        best_d = xp.full((r1 - r0, k), xp.inf)
        best_i = xp.full((r1 - r0, k), _NO_INDEX, dtype=xp.int64)
        own = position[r0:r1]  # column positions of this tile's points themselves
        for c0, c1 in _column_blocks(n, k, cols_per_tile):
            g = X[r0:r1] @ Xc[c0:c1].T  # the GEMM stays a library call (cuBLAS on a GPU)
            self_col = own - c0  # outside [0, c1 - c0): the point is not in this block
            best_d, best_i = run_kernel(
                am,
                "knn_tile_topk",
                g,
                sq[r0:r1],
                sqc[c0:c1],
                perm[c0:c1],
                self_col,
                best_d,
                best_i,
                metric=metric,
                round32=round32,
            )
        out_idx[r0:r1] = best_i
        out_dist[r0:r1] = xp.where(xp.isinf(best_d), 0.0, best_d)  # self: -inf -> 0
    return out_idx, out_dist


def _final_distances(xp, out_dist, metric: str, *, fast: bool, round32: bool):
    """Return the distances from the search's squared (euclidean) or cosine ones."""
    if fast:
        out_dist = out_dist.astype(xp.float64)
        return xp.sqrt(out_dist) if metric == "euclidean" else out_dist
    if metric == "euclidean":
        if round32:  # scikit-learn takes the root in float32, then returns float64
            out_dist = xp.sqrt(out_dist.astype(xp.float32)).astype(xp.float64)
        else:
            out_dist = xp.sqrt(out_dist)
    elif round32:
        out_dist = out_dist.astype(xp.float32)  # sklearn's cosine distances keep float32
    return out_dist


# Width of the first column block: wide enough that the k-th distance among it is a useful
# threshold, narrow enough that selecting it (a full sort on CuPy) is cheap.
_FIRST_BLOCK = 1024


def _column_blocks(n: int, k: int, widest: int):
    """Column ranges ``[c0, c1)`` covering ``0..n``: the first ``max(k, 1024)`` wide (at most
    ``widest``), each next one twice as wide, capped at ``widest``."""
    width = min(widest, max(k, _FIRST_BLOCK))
    c0 = 0
    while c0 < n:
        c1 = min(n, c0 + width)
        yield c0, c1
        c0 = c1
        width = min(widest, 2 * width)


def _within_threshold(xp, d, kth, columns):
    """Entries of the tile ``d`` at most their row's current ``k``-th distance.

    ``columns`` are the point indices of the tile's columns. Returns ``(distances, indices)``
    padded per row to the largest count (with ``inf`` and an index past every point, which never
    enter the top ``k``), or ``None`` when no row has one. Equal distances are kept: the column
    may have a smaller index than the current ``k``-th and then ranks before it.
    """
    mask = d <= kth[:, None]
    counts = mask.sum(axis=1)
    width = int(counts.max())
    if width == 0:
        return None
    rows, cols = xp.nonzero(mask)  # row-major: grouped by row, columns increasing
    starts = xp.cumsum(counts) - counts
    slot = xp.arange(rows.shape[0]) - starts[rows]
    cand_d = xp.full((d.shape[0], width), xp.inf, dtype=d.dtype)
    cand_i = xp.full((d.shape[0], width), xp.iinfo(xp.int64).max, dtype=xp.int64)
    cand_d[rows, slot] = d[rows, cols]
    cand_i[rows, slot] = columns[cols]
    return cand_d, cand_i


def _distances_from_gemm(xp, g, sq_a, sq_b, metric):
    """The distances of a GEMM tile ``g = A @ B.T``, computed in place in ``g``."""
    # In place: one tile in memory instead of one per temporary, the same roundings.
    if metric == "cosine":
        xp.subtract(1.0, g, out=g)
        return xp.clip(g, 0.0, 2.0, out=g)
    # Summed in scikit-learn's order, (|x|^2 - 2 x.y) + |y|^2, to round like it does.
    g *= -2.0
    g += sq_a[:, None]
    g += sq_b[None, :]
    return xp.maximum(g, 0.0, out=g)


def tile_topk(
    am: ArrayModule,
    g,
    sq_a,
    sq_b,
    col_ids,
    self_col,
    best_d,
    best_i,
    *,
    metric: str = "euclidean",
    round32: bool = False,
):
    """Merge one GEMM tile's distances into each row's running top ``k`` (the reference of
    the fused kernel ``knn_tile_topk``, :mod:`gpu_sc.kernels.cuda.knn_topk`).

    Parameters
    ----------
    am
        Array module.
    g
        ``(r, c)`` tile of ``A @ B.T`` (float64, or float32: then computed in float32);
        consumed (overwritten) by the reference.
    sq_a, sq_b
        ``(r,)`` and ``(c,)`` squared norms of the rows of ``A`` and ``B`` (ignored for
        cosine, whose rows are normalised).
    col_ids
        ``(c,)`` int64 point index of each column: any candidate set (a range, a permutation,
        an inverted list's members).
    self_col
        ``(r,)`` int64 column of each row's own point in this tile (any value outside
        ``[0, c)``, e.g. -1: not in this tile): that entry gets distance ``-inf`` (the point
        itself ranks first).
    best_d, best_i
        ``(r, k)`` running top ``k``: distances (float64) and indices, each row sorted by
        (distance, index); empty slots hold ``inf`` and ``2**63 - 1``. A row with fewer than
        ``k`` candidates so far keeps empty slots.
    metric
        ``"euclidean"`` (squared distances) or ``"cosine"``.
    round32
        Round float64 distances to float32 first (scikit-learn's float32 data).

    Returns
    -------
    best_d, best_i
        The updated top ``k``, rows sorted by (distance, index) (ties: smaller index first).
    """
    xp = am.xp
    k = best_d.shape[1]
    d = _distances_from_gemm(xp, g, sq_a, sq_b, metric)
    if round32:
        # Kept in float32: the values are float32-exact, so comparisons and the selection
        # are the same, on half the bytes; the kept ones become float64.
        d = d.astype(xp.float32)
    rows = xp.nonzero((self_col >= 0) & (self_col < d.shape[1]))[0]
    d[rows, self_col[rows]] = -xp.inf  # the point itself first, whatever its rounding
    kth = best_d[:, k - 1]
    if bool(xp.isinf(kth).all()):  # no row has k candidates yet: all entries are candidates
        cand = (d, xp.broadcast_to(col_ids, d.shape))
    else:
        cand = _within_threshold(xp, d, kth, col_ids)
    if cand is None:
        return best_d, best_i
    merged_d = xp.concatenate([best_d, cand[0]], axis=1)
    merged_i = xp.concatenate([best_i, cand[1]], axis=1)
    top_d, top_i = _top_k(xp, merged_d, merged_i, k)
    order = _sort_rows(xp, top_d, top_i)
    return xp.take_along_axis(top_d, order, axis=1), xp.take_along_axis(top_i, order, axis=1)


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


def knn_to_csr(am: ArrayModule, indices, distances):
    """scanpy's ``obsp['distances']``: CSR with the ``k - 1`` neighbours other than self per row.

    Entries keep the neighbour order (increasing distance), exactly as scanpy stores them
    (its indices are not column-sorted).
    """
    xp = am.xp
    n, k = indices.shape
    m = k - 1
    indptr = xp.arange(0, n * m + 1, m, dtype=xp.int64)
    return am.sparse.csr_matrix(
        (
            xp.ascontiguousarray(distances[:, 1:]).ravel(),
            xp.ascontiguousarray(indices[:, 1:]).ravel(),
            indptr,
        ),
        shape=(n, n),
    )
