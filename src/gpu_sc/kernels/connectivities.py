"""Connectivities of a kNN graph: UMAP's fuzzy simplicial set and the Gaussian kernel.

:func:`fuzzy_simplicial_set` reproduces ``umap.umap_.fuzzy_simplicial_set`` as scanpy calls it
(``set_op_mix_ratio=1``, ``local_connectivity=1``), vectorised over cells: the per-cell binary
search of ``smooth_knn_dist`` runs for all cells at once with the same arithmetic as umap's
compiled loop (float32 bounds, float64 sums in umap's order), the same 64 iterations,
tolerance and ``MIN_K_DIST_SCALE`` floor. On PBMC3k this reproduces umap's sigmas bit for bit
and its connectivities to within one float32 ulp.
:func:`gauss` reproduces scanpy's ``_connectivity.gauss`` for a kNN distance matrix.
"""

from __future__ import annotations

import math

import numpy as np

from ..dispatch.arrays import ArrayModule

__all__ = ["fuzzy_simplicial_set", "gauss", "smooth_knn_dist"]

# umap.umap_ constants
SMOOTH_K_TOLERANCE = 1e-5
MIN_K_DIST_SCALE = 1e-3
NPY_FLOATMAX = float(np.finfo(np.float32).max)


def _exp32(xp, x):
    """float32 ``exp`` rounded from float64: reproduces the float32 exponential of umap's numba
    code far more often than NumPy's or CUDA's own float32 ``exp`` (both may be 1 ulp off)."""
    return xp.exp(x.astype(xp.float64)).astype(xp.float32)


def smooth_knn_dist(
    am: ArrayModule,
    distances,
    k: float,
    *,
    n_iter: int = 64,
    local_connectivity: float = 1.0,
    bandwidth: float = 1.0,
):
    """Per-cell ``sigma`` and ``rho`` of umap's ``smooth_knn_dist``, for all cells at once.

    Parameters
    ----------
    distances
        ``(n, k)`` float32 distances to each cell's neighbours, self (0) first, ascending.
    k
        Target cardinality (``n_neighbors``): the search makes ``sum_j exp(-(d_j - rho) / sigma)``
        over the neighbours other than the first equal ``log2(k) * bandwidth``.

    Returns
    -------
    sigmas, rhos
        float32 arrays of length ``n``.
    """
    xp = am.xp
    f32 = xp.float32
    d = xp.asarray(distances, dtype=f32)
    target = math.log2(k) * bandwidth

    rho = _rhos(xp, d, local_connectivity)
    mid = _bisect_sigmas(xp, d, rho, target, n_iter)

    mean_all = d.mean(dtype=f32)
    mean_row = d.mean(axis=1, dtype=f32)
    floor = f32(MIN_K_DIST_SCALE) * xp.where(rho > 0, mean_row, mean_all)
    sigma = xp.where(mid < floor, floor, mid).astype(f32)
    return sigma, rho


def _rhos(xp, d, local_connectivity: float):
    """Return umap's ``rho`` per row of the ascending float32 distances ``d``."""
    f32 = xp.float32
    n, width = d.shape
    # rho: the local_connectivity-th smallest positive distance (rows are ascending, so
    # positive distances are a suffix of each row).
    n_pos = (d > 0).sum(axis=1)
    index = int(math.floor(local_connectivity))
    interpolation = f32(local_connectivity - index)
    first_pos = width - n_pos
    rows = xp.arange(n)
    if index > 0:
        at = xp.minimum(first_pos + index - 1, width - 1)
        rho = d[rows, at]
        if interpolation > SMOOTH_K_TOLERANCE:
            nxt = d[rows, xp.minimum(at + 1, width - 1)]
            rho = rho + interpolation * (nxt - rho)
    else:
        rho = interpolation * d[rows, xp.minimum(first_pos, width - 1)]
    enough = n_pos >= local_connectivity
    rho = xp.where(enough, rho, xp.where(n_pos > 0, d.max(axis=1), f32(0)))
    rho = rho.astype(f32)
    return rho


def _bisect_sigmas(xp, d, rho, target: float, n_iter: int):
    """Return umap's bisection's ``mid`` per row (the sigmas before their floor)."""
    f32 = xp.float32
    n = d.shape[0]
    lo = xp.zeros(n, dtype=f32)
    hi = xp.full(n, NPY_FLOATMAX, dtype=f32)
    mid = xp.ones(n, dtype=f32)
    active = xp.ones(n, dtype=bool)
    diff = d[:, 1:] - rho[:, None]  # float32, as umap's d = distances[i, j] - rho[i]
    positive = diff > 0
    diff64 = diff.astype(xp.float64)
    for _ in range(n_iter):
        # umap's compiled loop (despite its float32 ``psum`` declaration) evaluates the ratios,
        # their exponentials and the running sum in float64, in column order: do the same.
        ratio = diff64 / mid.astype(xp.float64)[:, None]
        # exp of the non-positive entries is discarded: clamp them so it cannot overflow (a
        # cell whose sigma halves towards 0 makes -ratio huge there)
        terms = xp.where(positive, xp.exp(-xp.maximum(ratio, 0.0)), 1.0)
        psum = xp.zeros(n, dtype=xp.float64)
        for j in range(terms.shape[1]):
            psum = psum + terms[:, j]
        done = xp.abs(psum - target) < SMOOTH_K_TOLERANCE
        active = active & ~done
        if not bool(active.any()):
            break
        above = psum > target
        new_hi = xp.where(above, mid, hi)
        new_lo = xp.where(above, lo, mid)
        halve = above | (hi < NPY_FLOATMAX)
        with np.errstate(over="ignore"):  # lo + FLOATMAX where the mid doubles instead
            halved = ((new_lo + new_hi) / f32(2.0)).astype(f32)
        new_mid = xp.where(halve, halved, mid * f32(2.0))
        lo = xp.where(active, new_lo, lo)
        hi = xp.where(active, new_hi, hi)
        mid = xp.where(active, new_mid, mid).astype(f32)
    return mid


def fuzzy_simplicial_set(
    am: ArrayModule,
    knn_indices,
    knn_dists,
    n_obs: int,
    n_neighbors: int,
    *,
    set_op_mix_ratio: float = 1.0,
    local_connectivity: float = 1.0,
):
    """UMAP connectivities (scanpy's ``method='umap'``) as a float32 CSR matrix.

    Parameters
    ----------
    knn_indices, knn_dists
        ``(n, k)`` neighbour indices and distances, self first, ascending (see
        :func:`gpu_sc.kernels.knn.knn`).
    n_obs
        Number of cells.
    n_neighbors
        ``k`` of the fuzzy set (scanpy passes ``n_neighbors``).

    Returns
    -------
    CSR matrix
        The fuzzy union ``A + A^T - A * A^T`` (for ``set_op_mix_ratio=1``) of the membership
        strengths, explicit zeros removed, float32, sorted indices.
    """
    xp = am.xp
    f32 = xp.float32
    idx = xp.asarray(knn_indices, dtype=xp.int64)
    d = xp.asarray(knn_dists, dtype=f32)
    sigma, rho = smooth_knn_dist(
        am, d, float(n_neighbors), local_connectivity=float(local_connectivity)
    )
    n, k = idx.shape
    rows = xp.repeat(xp.arange(n, dtype=xp.int64), k)
    dr = d - rho[:, None]
    with np.errstate(over="ignore", divide="ignore"):
        strength = _exp32(xp, -(dr / sigma[:, None]))
    vals = xp.where((dr <= 0) | (sigma[:, None] == 0), f32(1.0), strength)
    vals = xp.where(idx == xp.arange(n)[:, None], f32(0.0), vals).ravel()
    keep = vals != 0
    A = am.sparse.csr_matrix(
        (vals[keep], (rows[keep], idx.ravel()[keep])), shape=(n_obs, n_obs), dtype=f32
    )
    At = A.T.tocsr()
    prod = A.multiply(At)
    if set_op_mix_ratio == 1.0:
        G = A + At - prod
    else:
        G = set_op_mix_ratio * (A + At - prod) + (1.0 - set_op_mix_ratio) * prod
    G = am.sparse.csr_matrix(G, dtype=f32)
    G.eliminate_zeros()
    G.sort_indices()
    return G


def gauss(am: ArrayModule, knn_indices, knn_dists, n_obs: int):
    """scanpy's Gaussian connectivities (``method='gauss'``, ``knn=True``) as CSR.

    Follows ``scanpy.neighbors._connectivity.gauss`` for a sparse kNN distance matrix: the width
    of cell ``i`` is the square root of the median squared distance to its ``k - 1`` neighbours,
    ``w_ij = sqrt(2 s_i s_j / (s_i^2 + s_j^2)) exp(-d_ij^2 / (s_i^2 + s_j^2))``, and the graph is
    made symmetric by adding ``w_ji = w_ij`` where ``j`` lists ``i`` but not vice versa.
    """
    xp = am.xp
    idx = xp.asarray(knn_indices[:, 1:], dtype=xp.int64)
    dist = xp.asarray(knn_dists[:, 1:])
    d_sq = dist * dist
    n, m = idx.shape
    sigmas_sq = xp.median(d_sq, axis=1)
    sigmas = xp.sqrt(sigmas_sq)
    num = 2 * sigmas[:, None] * sigmas[idx]
    den = sigmas_sq[:, None] + sigmas_sq[idx]
    w = (xp.sqrt(num / den) * xp.exp(-d_sq / den)).ravel()
    rows = xp.repeat(xp.arange(n, dtype=xp.int64), m)
    cols = idx.ravel()
    # Mirror entries whose reverse is not listed (scanpy's w[j, i] = w[i, j]).
    key = rows * n_obs + cols
    sorted_keys = xp.sort(key)
    rev = cols * n_obs + rows
    pos = xp.minimum(xp.searchsorted(sorted_keys, rev), sorted_keys.size - 1)
    missing = sorted_keys[pos] != rev
    all_rows = xp.concatenate([rows, cols[missing]])
    all_cols = xp.concatenate([cols, rows[missing]])
    all_w = xp.concatenate([w, w[missing]])
    G = am.sparse.csr_matrix((all_w, (all_rows, all_cols)), shape=(n_obs, n_obs))
    G.sort_indices()
    return G
