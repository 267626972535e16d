"""Approximate k-nearest neighbours by IVF-Flat (inverted lists), array-generic.

Exact kNN (:mod:`gpu_sc.kernels.knn`) computes all ``n^2`` distances: about ``10^16`` flop at
``10^7`` cells. IVF-Flat computes ``n * nprobe * n / nlist`` of them:

1. **Coarse quantiser**: k-means with ``nlist`` centroids on a fixed training sample (at most
   ``64 * nlist`` points drawn with a fixed seed), ``n_iter`` Lloyd iterations by GEMM. The
   assignment is ``argmin_c |c|^2 - 2 x.c`` (ties: the lower centroid); the centroid sums are a
   CSR one-hot matrix (rows: centroids, each row's members in increasing index order) times the
   data, in float64: a fixed-order reduction, so the quantiser is bitwise-deterministic for the
   same input on the same device. An empty centroid keeps its previous position.
2. **Assignment**: every point goes to its nearest centroid's list.
3. **Probing**: every point (as a query) probes its ``nprobe`` nearest centroids.
4. **Search within the lists**, list by list: the queries probing list ``c`` against its
   members, one GEMM tile, merged into the queries' running top ``k`` by the fused kernel
   ``knn_tile_topk`` (:mod:`gpu_sc.kernels.cuda.knn_topk`: distance, self exclusion and top-k
   merge in one launch on a GPU; its reference :func:`gpu_sc.kernels.knn.tile_topk` on NumPy;
   ties by the smaller index). A list's work is ``|queries| x |members|``; the tile is cut in
   row blocks of at most ``tile_elements``. A point's own list is always probed (its home
   centroid ranks first among its probes), where it is marked as itself (distance ``-inf``).

Each point is its own first neighbour (distance 0) as in exact kNN; a row left with fewer than
``k`` candidates in its probed lists (tiny lists, ``k`` close to ``n``) is searched exactly.
Output has :func:`gpu_sc.kernels.knn.knn`'s form (self first, then by increasing distance, ties
by index). Recall against exact is measured by ``scripts/ivf_recall.py``
(``benchmarks/results/ivf_recall.json``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._progress import progress
from ..dispatch.arrays import ArrayModule
from .cuda import run_kernel
from .knn import _NO_INDEX, _sort_rows, _top_k, default_tile_elements
from .knn import knn as exact_knn

__all__ = ["AUTO_IVF_CELLS", "IVFFlat", "default_nlist", "default_nprobe", "ivf_knn"]

#: ``neighbors(transformer=None)`` (the engine's "auto") runs IVF-Flat from this many cells on,
#: exact kNN below. At 2*10^5 cells IVF-Flat at the defaults (nlist 512, nprobe 64) reaches
#: recall@15 = 0.999 on the synthetic atlas's PCA (benchmarks/results/ivf_recall.json; 0.979 at
#: nprobe 32) at 1/8 of exact's distance work;
#: exact's n^2 work (8*10^11 multiply-adds at 2*10^5 x 50 dims) is still seconds on a GPU
#: below it, where the exact graph is preferable (scanpy's own exact/approximate switch is at
#: 4096 cells, which is far too early for a GPU).
AUTO_IVF_CELLS = 200_000

# Lloyd iterations of the coarse quantiser (fixed: the result must not depend on a tolerance
# reached at a different iteration on another machine).
_N_ITER = 10
# Training sample per centroid (faiss recommends 39..256).
_TRAIN_PER_LIST = 64


def default_nlist(n: int) -> int:
    """Lists for ``n`` points: the power of two nearest ``sqrt(n)``, between 1 and 65536."""
    if n < 4:
        return 1
    return int(min(65536, 2 ** round(math.log2(math.sqrt(n)))))


def default_nprobe(nlist: int) -> int:
    """Lists probed per query: ``nlist / 8``, at least 16 (all of them for small ``nlist``).

    At ``sqrt(n)`` lists each query scans about ``n / 8`` points: 8x less distance work than
    exact (the saving grows with ``nlist``: ``nlist / nprobe`` is fixed, but the k-means and
    probing are ``n * nlist`` and exact is ``n^2``). Measured recall@15 on the synthetic
    atlas's PCA (``benchmarks/results/ivf_recall.json``): 0.992 at 2*10^4 cells (nlist 128,
    nprobe 16), 0.999 at 2*10^5 (512, 64). At a fixed fraction ``nprobe / nlist`` recall rose
    with ``n`` (1/16: 0.906 at 2*10^4, 0.979 at 2*10^5), so a smaller fraction should do at
    10^7 cells; not measured, so the default stays at the measured 1/8.
    """
    return int(min(nlist, max(16, nlist // 8)))


@dataclass(frozen=True)
class IVFFlat:
    """IVF-Flat parameters; pass as ``neighbors(transformer=IVFFlat(...))`` or
    ``transformer="ivf"`` for the defaults. ``None`` takes :func:`default_nlist` /
    :func:`default_nprobe`."""

    nlist: int | None = None
    nprobe: int | None = None
    n_iter: int = _N_ITER
    seed: int = 0

    def resolved(self, n: int) -> tuple[int, int]:
        nlist = default_nlist(n) if self.nlist is None else int(self.nlist)
        nlist = max(1, min(nlist, n))
        nprobe = default_nprobe(nlist) if self.nprobe is None else int(self.nprobe)
        return nlist, max(1, min(nprobe, nlist))


def _sq_dist_to(xp, X, sq_x, C, sq_c):
    """Squared distances ``|x|^2 - 2 x.c + |c|^2`` of rows of ``X`` to rows of ``C``."""
    g = X @ C.T
    g *= -2.0
    g += sq_x[:, None]
    g += sq_c[None, :]
    return xp.maximum(g, 0.0, out=g)


def _nearest(am, X, sq_x, C, m: int, tile_elements: int):
    """Per row of ``X``: its nearest centroid (argmin, ties by the lower centroid) and, for
    ``m > 1``, its ``m`` nearest (unordered, always including the nearest), from one distance
    tile per row block of at most ``tile_elements``. Returns ``(nearest, m_nearest or None)``."""
    xp = am.xp
    n, nlist = X.shape[0], C.shape[0]
    sq_c = xp.einsum("ij,ij->i", C, C)
    rows = max(1, tile_elements // max(1, nlist))
    home = xp.empty(n, dtype=xp.int64)
    probes = xp.empty((n, m), dtype=xp.int64) if m > 1 else None
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        d = _sq_dist_to(xp, X[r0:r1], sq_x[r0:r1], C, sq_c)
        h = xp.argmin(d, axis=1)
        home[r0:r1] = h
        if m > 1 and m >= nlist:
            probes[r0:r1] = xp.arange(nlist, dtype=xp.int64)[None, :]
        elif m > 1:
            d[xp.arange(r1 - r0), h] = -xp.inf  # the home list in, whatever the ties at the cut
            probes[r0:r1] = xp.argpartition(d, m - 1, axis=1)[:, :m]
    return home, probes


def _groups(am, labels, n_groups: int):
    """``(order, offsets)``: indices sorted by label (stably: increasing index within a label)
    and the host offsets of each label's run."""
    xp = am.xp
    order = xp.argsort(labels, kind="stable")
    counts = am.to_host(xp.bincount(labels, minlength=n_groups))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return order, offsets


def kmeans(
    am: ArrayModule,
    X,
    nlist: int,
    *,
    n_iter: int = _N_ITER,
    seed: int = 0,
    tile_elements: int | None = None,
):
    """Centroids ``(nlist, d)`` of a fixed-seed, fixed-iteration k-means of the rows of ``X``
    (in ``X``'s dtype; sums in float64). Trained on at most ``64 * nlist`` rows drawn with
    ``seed``; initial centroids: the first ``nlist`` of that sample."""
    xp = am.xp
    n = X.shape[0]
    tile_elements = default_tile_elements(am) if tile_elements is None else tile_elements
    rng = np.random.default_rng(seed)
    n_train = min(n, _TRAIN_PER_LIST * nlist)
    sample = np.sort(rng.permutation(n)[:n_train]) if n_train < n else np.arange(n)
    init = rng.permutation(n_train)[:nlist]
    T = X[xp.asarray(sample)] if n_train < n else X
    sq_t = xp.einsum("ij,ij->i", T, T)
    C = T[xp.asarray(init)].astype(xp.float64)
    Td = T.astype(xp.float64)
    for _ in range(n_iter):
        labels = _nearest(am, T, sq_t, C.astype(T.dtype), 1, tile_elements)[0]
        order, offsets = _groups(am, labels, nlist)
        one_hot = am.sparse.csr_matrix(
            (xp.ones(n_train, dtype=xp.float64), order, xp.asarray(offsets)),
            shape=(nlist, n_train),
        )
        sums = xp.asarray(one_hot @ Td)
        counts = xp.asarray(np.diff(offsets).astype(np.float64))
        C = xp.where((counts > 0)[:, None], sums / xp.maximum(counts, 1.0)[:, None], C)
    return C.astype(X.dtype)


def ivf_knn(
    am: ArrayModule,
    X,
    k: int,
    metric: str = "euclidean",
    *,
    params: IVFFlat | None = None,
    dtype=None,
    tile_elements: int | None = None,
):
    """Approximate ``k`` nearest neighbours of every row of ``X`` by IVF-Flat.

    Parameters
    ----------
    am
        Array module the search runs with.
    X
        ``(n, d)`` dense array.
    k
        Neighbours per row, including the point itself.
    metric
        ``"euclidean"`` or ``"cosine"`` (rows normalised, then euclidean: the same order).
    params
        :class:`IVFFlat` (``None``: the defaults).
    dtype
        Compute dtype of the distances (``float32`` under ``precision="fast"``); ``None``:
        float64.
    tile_elements
        Upper bound on the elements of one distance tile.

    Returns
    -------
    indices, distances, info
        As :func:`gpu_sc.kernels.knn.knn` (float64 distances), and
        ``{"algorithm": "ivf_flat", "nlist", "nprobe", "n_iter", "seed"}``.
    """
    xp = am.xp
    params = IVFFlat() if params is None else params
    X = xp.asarray(X)
    n = X.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}] for {n} points, got {k}")
    dtype = xp.float64 if dtype is None else dtype
    X = X.astype(dtype)
    if metric == "cosine":
        norms = xp.sqrt(xp.einsum("ij,ij->i", X, X))
        X = X / xp.where(norms > 0, norms, 1.0)[:, None]
    elif metric != "euclidean":
        raise ValueError(f"metric must be 'euclidean' or 'cosine', not {metric!r}")
    tile_elements = default_tile_elements(am) if tile_elements is None else tile_elements
    nlist, nprobe = params.resolved(n)
    info = {
        "algorithm": "ivf_flat",
        "nlist": nlist,
        "nprobe": nprobe,
        "n_iter": params.n_iter,
        "seed": params.seed,
    }
    sq = xp.einsum("ij,ij->i", X, X)
    sq64 = sq.astype(xp.float64)  # the fused kernel's norms (the tiles keep X's dtype)
    C = kmeans(am, X, nlist, n_iter=params.n_iter, seed=params.seed, tile_elements=tile_elements)
    home, probes = _nearest(am, X, sq, C, nprobe, tile_elements)
    probes = home[:, None] if probes is None else probes
    lists = (nlist, nprobe)
    best_d, best_i = _search_lists(am, X, sq64, k, home, probes, lists, tile_elements)
    short = xp.nonzero(xp.isinf(best_d[:, -1]) & (best_d[:, -1] > 0))[0]
    if int(short.shape[0]) > 0:  # fewer than k candidates in the probed lists: exact search
        info["exact_rows"] = int(short.shape[0])
        ei, ed = _exact_rows(am, X, short, k)
        best_i[short] = ei
        best_d[short] = ed
    best_d[:, 0] = 0.0
    if metric == "euclidean":
        dist = xp.sqrt(xp.maximum(best_d, 0.0))
    else:
        dist = xp.clip(best_d / 2.0, 0.0, 2.0)  # unit vectors: 1 - x.y = |x - y|^2 / 2
    return best_i, dist, info


def _search_lists(am: ArrayModule, X, sq64, k: int, home, probes, lists, tile_elements):
    """Return each point's running top ``k`` over its probed lists: ``(best_d, best_i)``,
    squared distances sorted by (distance, index); empty slots inf / ``_NO_INDEX``.
    ``lists`` is ``(nlist, nprobe)``."""
    xp = am.xp
    n = X.shape[0]
    nlist, nprobe = lists
    members, m_off = _groups(am, home, nlist)
    # Each point's column in its own list (members are sorted by list, then by index).
    m_off_dev = xp.asarray(m_off[:-1])
    own_col = xp.empty(n, dtype=xp.int64)
    own_col[members] = xp.arange(n, dtype=xp.int64) - m_off_dev[home[members]]
    # Queries per list: (query, probed list) pairs sorted by list, queries increasing within.
    queries, q_off = _groups(am, probes.ravel(), nlist)
    queries = queries // nprobe

    # Running top k per point (float64, sorted by (distance, index)), empty: inf / _NO_INDEX.
    best_d = xp.full((n, k), xp.inf, dtype=xp.float64)
    best_i = xp.full((n, k), _NO_INDEX, dtype=xp.int64)
    for c in progress(range(nlist), desc="IVF kNN", unit="list"):
        m0, m1, q0, q1 = m_off[c], m_off[c + 1], q_off[c], q_off[c + 1]
        if m1 == m0 or q1 == q0:
            continue
        midx = members[m0:m1]
        M, sq_m = X[midx], sq64[midx]
        rows = max(1, tile_elements // int(m1 - m0))
        for r0 in range(q0, q1, rows):
            qidx = queries[r0 : min(q1, r0 + rows)]
            g = X[qidx] @ M.T  # the GEMM stays a library call (cuBLAS on a GPU)
            self_col = xp.where(home[qidx] == c, own_col[qidx], -1)
            bd, bi = run_kernel(
                am,
                "knn_tile_topk",
                g,
                sq64[qidx],
                sq_m,
                midx,
                self_col,
                best_d[qidx],
                best_i[qidx],
                metric="euclidean",
                round32=False,
            )
            best_d[qidx] = bd
            best_i[qidx] = bi
    return best_d, best_i


def _exact_rows(am, X, rows, k):
    """Exact squared-distance top ``k`` of the points ``rows`` among all points (self first)."""
    xp = am.xp
    sq = xp.einsum("ij,ij->i", X, X)
    d = _sq_dist_to(xp, X[rows], sq[rows], X, sq).astype(xp.float64)
    d[xp.arange(rows.shape[0]), rows] = -xp.inf
    i = xp.broadcast_to(xp.arange(X.shape[0], dtype=xp.int64), d.shape)
    bd, bi = _top_k(xp, d, i, k)
    order = _sort_rows(xp, bd, bi)
    return xp.take_along_axis(bi, order, axis=1), xp.take_along_axis(bd, order, axis=1)


# The exact search, for callers that pick one of the two by name.
exact = exact_knn
