"""Agreement measures between two backends' results, on the host (NumPy/SciPy).

Each function takes the two sides' arrays already aligned (same cells, same genes, same order)
and returns plain floats; :mod:`gpu_sc.parity.stages` does the alignment.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = [
    "abs_correlations",
    "jaccard",
    "knn_overlap",
    "marker_agreement",
    "match_clusters",
    "max_principal_angle",
    "max_rel_diff",
    "modularity",
    "neighbourhood_preservation",
    "rel_frobenius",
    "trustworthiness",
]


# -- differences of values ---------------------------------------------------------------------
def max_rel_diff(a, b, *, floor_sd: bool = False) -> float:
    """Largest elementwise relative difference ``|a - b| / max(|a|, |b|, floor)``.

    Parameters
    ----------
    a, b
        Arrays of one shape, dense or sparse (1-D or cells x genes).
    floor_sd
        For centred or residual data (regress_out, scale), whose values near zero come from
        cancellation, use each column's standard deviation (of ``a``) as the floor of the
        denominator: a difference then counts relative to the value, but never relative to
        less than one SD of that gene. Otherwise the floor is 0 (``0/0`` counts as 0).
    """
    if sp.issparse(a) or sp.issparse(b):
        if floor_sd:
            a, b = _dense(a), _dense(b)
        else:
            return _sparse_max_rel_diff(sp.csr_matrix(a), sp.csr_matrix(b))
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    denom = np.maximum(np.abs(a), np.abs(b))
    if floor_sd:
        sd = a.std(axis=0) if a.ndim == 2 else np.asarray(a.std())
        denom = np.maximum(denom, sd)
    diff = np.abs(a - b)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(diff == 0, 0.0, diff / denom)
    return float(np.nanmax(rel)) if not np.isnan(rel).all() else float("nan")


def _dense(x) -> np.ndarray:
    return x.toarray() if sp.issparse(x) else np.asarray(x)


def _sparse_max_rel_diff(a: sp.csr_matrix, b: sp.csr_matrix) -> float:
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    a, b = a.astype(np.float64), b.astype(np.float64)
    a.sort_indices()
    b.sort_indices()
    if np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices):
        # Same sparsity pattern (the usual case): compare the stored values directly.
        return max_rel_diff(a.data, b.data)
    diff = abs(a - b).tocoo()
    diff.eliminate_zeros()
    if diff.nnz == 0:
        return 0.0
    scale = abs(a).maximum(abs(b)).tocsr()
    denom = np.asarray(scale[diff.row, diff.col]).ravel()
    return float(np.max(diff.data / denom))


def rel_frobenius(a, b) -> float:
    """``||a - b||_F / ||a||_F`` (0 when both are zero)."""
    diff = a - b
    num = sp.linalg.norm(diff) if sp.issparse(diff) else np.linalg.norm(np.asarray(diff))
    den = sp.linalg.norm(a) if sp.issparse(a) else np.linalg.norm(np.asarray(a))
    if den == 0:
        return 0.0 if num == 0 else float("inf")
    return float(num / den)


def jaccard(a, b) -> float:
    """Jaccard index of two collections seen as sets (1 for two empty sets)."""
    a, b = set(a), set(b)
    union = a | b
    return 1.0 if not union else len(a & b) / len(union)


# -- PCA -------------------------------------------------------------------------------------------
def abs_correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column of ``a`` with the same column of ``b`` (signed)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    den = np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(axis=0) / den


def max_principal_angle(a: np.ndarray, b: np.ndarray) -> float:
    """Largest principal angle (radians) between the column spaces of ``a`` and ``b``."""
    from scipy.linalg import subspace_angles

    return float(np.max(subspace_angles(np.asarray(a, np.float64), np.asarray(b, np.float64))))


# -- kNN graph -----------------------------------------------------------------------------------
def knn_overlap(neighbours_a: list[np.ndarray], neighbours_b: list[np.ndarray]) -> float:
    """Mean over cells of ``|N_a(i) & N_b(i)| / |N_a(i)|`` (neighbour sets, self excluded)."""
    fractions = []
    for na, nb in zip(neighbours_a, neighbours_b, strict=True):
        if len(na) == 0:
            fractions.append(1.0 if len(nb) == 0 else 0.0)
            continue
        fractions.append(np.intersect1d(na, nb).size / len(na))
    return float(np.mean(fractions)) if fractions else float("nan")


# -- clustering ----------------------------------------------------------------------------------
def _local_modularity(adjacency, labels, resolution: float = 1.0) -> float:
    """Modularity with resolution of ``labels`` on a symmetric weighted ``adjacency``:
    ``Q = sum_c [ in_c / 2m - resolution * (tot_c / 2m)**2 ]`` (igraph's definition)."""
    A = sp.coo_matrix(adjacency)
    codes = pd.factorize(np.asarray(labels))[0]
    w = A.data.astype(np.float64)
    two_m = w.sum()
    if two_m == 0:
        return 0.0
    inside = w[codes[A.row] == codes[A.col]].sum()
    degree = np.bincount(A.row, weights=w, minlength=A.shape[0])
    tot = np.bincount(codes, weights=degree)
    return float(inside / two_m - resolution * (tot**2).sum() / two_m**2)


def modularity(adjacency, labels, resolution: float = 1.0) -> float:
    """Modularity of ``labels`` on ``adjacency``: the engine's kernel
    (:func:`gpu_sc.kernels.leiden.modularity`) when present, else a NumPy twin of it."""
    try:
        from ..dispatch.arrays import module_of
        from ..kernels.leiden import modularity as kernel
    except ImportError:
        return _local_modularity(adjacency, labels, resolution)
    return float(kernel(module_of(adjacency), adjacency, np.asarray(labels), resolution))


def match_clusters(labels_a, labels_b) -> list[tuple[object, object, int]]:
    """Pair clusters of ``a`` with clusters of ``b`` maximising the total overlap (Hungarian,
    on the contingency table). Returns ``(cluster_a, cluster_b, n_shared_cells)`` per pair."""
    from scipy.optimize import linear_sum_assignment

    table = pd.crosstab(pd.Series(np.asarray(labels_a)), pd.Series(np.asarray(labels_b)))
    rows, cols = linear_sum_assignment(-table.to_numpy())
    return [
        (table.index[r], table.columns[c], int(table.iat[r, c]))
        for r, c in zip(rows, cols, strict=True)
    ]


def marker_agreement(
    markers_a: dict, markers_b: dict, pairs: list[tuple[object, object, int]], top_n: int
) -> dict[str, float]:
    """Overlap of the top-``top_n`` genes and Spearman correlation of scores per matched pair.

    ``markers_*`` map a cluster to ``(names, scores)`` in rank order. Returns the min and mean
    over pairs of the overlap fraction and of the Spearman correlation (scores of the genes
    both sides report).
    """
    from scipy.stats import spearmanr

    overlaps, rhos = [], []
    for ca, cb, _ in pairs:
        names_a, scores_a = markers_a[str(ca)]
        names_b, scores_b = markers_b[str(cb)]
        top_a, top_b = set(names_a[:top_n]), set(names_b[:top_n])
        overlaps.append(len(top_a & top_b) / max(min(top_n, len(names_a)), 1))
        sa = pd.Series(scores_a, index=names_a)
        sb = pd.Series(scores_b, index=names_b)
        common = sa.index.intersection(sb.index)
        if len(common) >= 3:
            rho = spearmanr(sa[common].to_numpy(), sb[common].to_numpy()).statistic
            rhos.append(float(rho))
        else:
            rhos.append(float("nan"))
    rhos_arr = np.asarray(rhos, dtype=np.float64)
    has_rho = not np.isnan(rhos_arr).all()
    return {
        "overlap_min": float(np.min(overlaps)) if overlaps else float("nan"),
        "overlap_mean": float(np.mean(overlaps)) if overlaps else float("nan"),
        "spearman_min": float(np.nanmin(rhos_arr)) if has_rho else float("nan"),
        "spearman_mean": float(np.nanmean(rhos_arr)) if has_rho else float("nan"),
    }


# -- embeddings ------------------------------------------------------------------------------
def _knn_indices(X: np.ndarray, k: int) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k + 1).fit(X)
    idx = nn.kneighbors(X, return_distance=False)
    # Drop each point itself (normally column 0; with duplicates, wherever it appears).
    out = np.empty((X.shape[0], k), dtype=np.int64)
    for i, row in enumerate(idx):
        row = row[row != i]
        out[i] = row[:k]
    return out


def _local_neighbourhood_preservation(X_high, Y, k: int = 15) -> float:
    """Mean fraction of each point's ``k`` nearest neighbours in ``X_high`` kept in ``Y``."""
    X_high = np.asarray(X_high, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    a, b = _knn_indices(X_high, k), _knn_indices(Y, k)
    return float(np.mean([np.intersect1d(ra, rb).size for ra, rb in zip(a, b, strict=True)]) / k)


def _local_trustworthiness(X_high, Y, k: int = 15, *, max_cells: int = 10_000, seed: int = 0):
    """scikit-learn's trustworthiness, on a fixed random subsample above ``max_cells``."""
    from sklearn.manifold import trustworthiness as sk_trustworthiness

    X_high = np.asarray(X_high, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if X_high.shape[0] > max_cells:
        keep = np.sort(np.random.default_rng(seed).choice(X_high.shape[0], max_cells, False))
        X_high, Y = X_high[keep], Y[keep]
    return float(sk_trustworthiness(X_high, Y, n_neighbors=k))


def neighbourhood_preservation(X_high, Y, k: int = 15) -> float:
    """:func:`gpu_sc.kernels.embedding_quality.neighbourhood_preservation` when present,
    else its NumPy twin here (same definition)."""
    try:
        from ..kernels.embedding_quality import neighbourhood_preservation as kernel
    except ImportError:
        kernel = _local_neighbourhood_preservation
    return float(kernel(X_high, Y, k=k))


def trustworthiness(X_high, Y, k: int = 15, *, seed: int = 0) -> float:
    """:func:`gpu_sc.kernels.embedding_quality.trustworthiness` when present, else the twin."""
    try:
        from ..kernels.embedding_quality import trustworthiness as kernel
    except ImportError:
        kernel = _local_trustworthiness
    return float(kernel(X_high, Y, k=k, seed=seed))
