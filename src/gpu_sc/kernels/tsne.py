"""t-SNE, array-generic and deterministic, following scikit-learn's ``TSNE`` as scanpy calls it.

* Affinities: exact kNN with ``k = min(n - 1, 3 * perplexity + 1)`` (:mod:`.knn`), per-row
  Gaussian precisions by scikit-learn's binary search on the entropy (vectorised over rows),
  ``P = (P_cond + P_cond^T) / sum``.
* Initialisation: PCA of the input (scikit-learn's default ``init="pca"``), scaled so the first
  coordinate has standard deviation ``1e-4``.
* Optimisation: scikit-learn's ``_gradient_descent``: 250 iterations with early exaggeration
  and momentum 0.5, then momentum 0.8 up to ``max_iter``; gains ``+0.2`` / ``*0.8`` with
  ``min_gain=0.01``; the error checked every 50 iterations for progress and the gradient norm.
* Gradient: attraction over the sparse ``P`` exactly; repulsion either exactly in row tiles
  (``O(n^2)`` work, ``O(tile)`` memory) or by FFT-accelerated interpolation on a regular grid
  (FIt-SNE, Linderman et al. 2019): charges spread to a grid with Lagrange polynomials on 3
  nodes per box, convolved with the kernel by ``xp.fft``, interpolated back. scikit-learn
  approximates the repulsion by Barnes-Hut instead.

All per-point sums are sparse-matrix products or dense reductions in a fixed order, so a
given input gives the same embedding bit for bit. Each iteration (:func:`descent_step`) goes
through the fused-kernel chooser as ``tsne_step`` (:mod:`gpu_sc.kernels.cuda.tsne`).
"""

from __future__ import annotations

import math

from .._progress import progress
from ..dispatch.arrays import ArrayModule
from .knn import knn as _knn
from .segment import segment_ids

__all__ = ["TsneState", "descent_step", "joint_probabilities", "pca_init", "tsne"]

_EXPLORATION_ITER = 250
_N_ITER_CHECK = 50
_MACHINE_EPSILON = 2.220446049250313e-16  # np.finfo(np.double).eps, as sklearn uses
_FLOAT32_TINY = 1.1754943508222875e-38
_PERPLEXITY_TOLERANCE = 1e-5
_EXACT_MAX_N = 2048  # "auto": exact repulsion up to this many points, FFT above


def binary_search_perplexity(am: ArrayModule, sqdistances, perplexity: float, n_steps: int = 100):
    """scikit-learn's ``_binary_search_perplexity`` on kNN squared distances, all rows at once.

    Returns the ``(n, k)`` float64 conditional probabilities ``p_{j|i}``.
    """
    xp = am.xp
    d = xp.asarray(sqdistances, dtype=xp.float32).astype(xp.float64)
    n = d.shape[0]
    desired = math.log(perplexity)
    beta = xp.ones(n)
    beta_min = xp.full(n, -xp.inf)
    beta_max = xp.full(n, xp.inf)
    active = xp.ones(n, dtype=bool)
    P = None
    for _ in range(n_steps):
        P_try = xp.exp(-d * beta[:, None])
        sum_p = P_try.sum(axis=1)
        sum_p = xp.where(sum_p == 0.0, 1e-8, sum_p)
        P_try = P_try / sum_p[:, None]
        entropy = xp.log(sum_p) + beta * (d * P_try).sum(axis=1)
        diff = entropy - desired
        P = P_try if P is None else xp.where(active[:, None], P_try, P)
        active = active & ~(xp.abs(diff) <= _PERPLEXITY_TOLERANCE)
        if not bool(active.any()):
            break
        up = diff > 0.0
        new_min = xp.where(up, beta, beta_min)
        new_max = xp.where(up, beta_max, beta)
        doubled = xp.where(xp.isinf(beta_max), beta * 2.0, (beta + beta_max) / 2.0)
        halved = xp.where(xp.isinf(beta_min), beta / 2.0, (beta + beta_min) / 2.0)
        new_beta = xp.where(up, doubled, halved)
        beta_min = xp.where(active, new_min, beta_min)
        beta_max = xp.where(active, new_max, beta_max)
        beta = xp.where(active, new_beta, beta)
    return P


def joint_probabilities(
    am: ArrayModule, X, perplexity: float, metric: str = "euclidean", *, knn_dtype=None
):
    """Symmetric joint probabilities ``P`` (CSR, float64, sums to 1) from the exact kNN of ``X``.

    Like scikit-learn's ``_joint_probabilities_nn`` with ``k = min(n - 1, 3 * perplexity + 1)``
    neighbours other than self and squared distances. ``knn_dtype``: the kNN's distance
    dtype (:func:`gpu_sc.kernels.knn.knn`; float32 under ``precision="fast"``).
    """
    xp = am.xp
    n = X.shape[0]
    k = min(n - 1, int(3.0 * perplexity + 1))
    idx, dist = _knn(am, X, k + 1, metric, dtype=knn_dtype)
    idx, dist = idx[:, 1:], dist[:, 1:].astype(xp.float64)
    # sklearn reads the neighbours in column order (it sorts the graph's indices); the search
    # result does not depend on the order, the sums it makes do, so follow it.
    order = xp.argsort(idx, axis=1)
    idx = xp.take_along_axis(idx, order, axis=1)
    dist = xp.take_along_axis(dist, order, axis=1)
    cond = binary_search_perplexity(am, dist * dist, perplexity)
    indptr = xp.arange(0, n * k + 1, k, dtype=xp.int64)
    P = am.sparse.csr_matrix((cond.ravel(), idx.ravel(), indptr), shape=(n, n))
    P = (P + P.T).tocsr()
    P = P * (1.0 / max(float(P.sum()), _MACHINE_EPSILON))
    P.sort_indices()
    return P


def pca_init(am: ArrayModule, X, n_components: int = 2):
    """scikit-learn's ``init="pca"``: PCA scores (sign by svd_flip on the components), float32,
    scaled so that column 0 has standard deviation 1e-4."""
    xp = am.xp
    X = xp.asarray(X, dtype=xp.float64)
    Xc = X - X.mean(axis=0)
    cov = Xc.T @ Xc
    vals, vecs = xp.linalg.eigh(cov)
    comps = vecs[:, xp.argsort(-vals)[:n_components]].T  # (n_components, d)
    # svd_flip(u_based_decision=False): the largest-magnitude loading of each component > 0.
    pivot = xp.argmax(xp.abs(comps), axis=1)
    signs = xp.sign(comps[xp.arange(n_components), pivot])
    comps = comps * signs[:, None]
    Y = (Xc @ comps.T).astype(xp.float32)
    return Y / xp.std(Y[:, 0]) * xp.float32(1e-4)


def _attraction(am, P, y, rows=None):
    """``sum_j p_ij w_ij (y_i - y_j)`` with ``w = 1 / (1 + |y_i - y_j|^2)``, and ``w`` per entry.

    ``rows`` (the row of every stored entry of ``P``) may be passed to save recomputing it.
    """
    xp = am.xp
    if rows is None:
        rows = _entry_rows(am, P)
    d2 = None
    for c in range(y.shape[1]):  # column by column: contiguous gathers
        delta = y[:, c][rows] - y[:, c][P.indices]
        d2 = delta * delta if d2 is None else d2 + delta * delta
    w = 1.0 / (1.0 + d2)
    # Row sums as a CSR product with P's own structure: a fixed order, no scatter-add.
    Pw = P.copy()
    Pw.data = P.data * w
    both = Pw @ xp.concatenate([y, xp.ones((y.shape[0], 1), y.dtype)], axis=1)
    return y * both[:, -1:] - both[:, :-1], w


def _entry_rows(am, P):
    return segment_ids(am, am.xp.diff(P.indptr))


def _repulsion_exact(am, y, tile_elements: int = 2**22):
    """``sum_j w_ij^2 (y_i - y_j)`` and ``Z = sum_{i != j} w_ij``, exactly, in row tiles."""
    xp = am.xp
    n = y.shape[0]
    rows_per_tile = max(1, tile_elements // max(n, 1))
    rep = xp.empty_like(y)
    z = 0.0
    for r0 in range(0, n, rows_per_tile):
        r1 = min(n, r0 + rows_per_tile)
        d2 = xp.zeros((r1 - r0, n), dtype=y.dtype)
        for c in range(y.shape[1]):
            delta = y[r0:r1, c, None] - y[None, :, c]
            d2 += delta * delta
        w = 1.0 / (1.0 + d2)
        local = xp.arange(r1 - r0)
        w[local, local + r0] = 0.0
        z += float(w.sum(dtype=xp.float64))
        w2 = w * w
        rep[r0:r1] = y[r0:r1] * w2.sum(axis=1)[:, None] - w2 @ y
    return rep, z


def _lagrange_weights(xp, t, p):
    """Lagrange basis values at local coordinates ``t`` (in [0, 1]) for ``p`` equispaced nodes
    at ``(k + 0.5) / p``; shape ``(len(t), p)``."""
    nodes = [(k + 0.5) / p for k in range(p)]
    cols = []
    for k in range(p):
        v = xp.ones_like(t)
        for m in range(p):
            if m != k:
                v = v * (t - nodes[m]) / (nodes[k] - nodes[m])
        cols.append(v)
    return xp.stack(cols, axis=1)


def _repulsion_fft(
    am,
    y,
    *,
    n_interp: int = 3,
    min_boxes: int = 50,
    max_boxes: int = 200,
    boxes_per_unit: float = 1.0,
    info: dict | None = None,
):
    """FIt-SNE-style interpolation-based repulsion for 2-D embeddings (same outputs as
    :func:`_repulsion_exact`, approximately).

    Unit charges are spread to a regular grid (Lagrange interpolation on ``n_interp`` nodes
    per box), convolved by FFT with the translation-invariant kernels ``w = 1 / (1 + |d|^2)``
    (for ``Z``) and ``w^2 d`` (the repulsive force itself), and interpolated back. Convolving
    the force kernel directly (rather than ``w^2`` with charges ``1, y, |y|^2`` as FIt-SNE
    does) keeps the interpolation error independent of where the embedding sits.
    """
    xp = am.xp
    n, dim = y.shape
    yd = y.astype(xp.float64)
    lo = yd.min(axis=0)
    span = float((yd.max(axis=0) - lo).max()) * (1 + 1e-6) + 1e-12
    n_boxes = int(min(max_boxes, max(min_boxes, math.ceil(span * boxes_per_unit))))
    if info is not None:
        info["n_boxes"] = n_boxes
    h = span / n_boxes
    m = n_boxes * n_interp
    spacing = h / n_interp

    rel = (yd - lo) / h
    box = xp.minimum(xp.floor(rel).astype(xp.int64), n_boxes - 1)
    weights = [_lagrange_weights(xp, rel[:, c] - box[:, c], n_interp) for c in range(dim)]
    base = [box[:, c] * n_interp for c in range(dim)]
    # The n_interp^2 grid nodes of each point, and their interpolation weights.
    kx, ky = xp.meshgrid(xp.arange(n_interp), xp.arange(n_interp), indexing="ij")
    kx, ky = kx.ravel(), ky.ravel()
    node = (base[0][:, None] + kx[None, :]) * m + (base[1][:, None] + ky[None, :])
    wgt = weights[0][:, kx] * weights[1][:, ky]
    # Interpolation (points x grid) and spreading (its transpose, made CSR) as sparse
    # products: a fixed summation order instead of atomic scatter-adds.
    per = n_interp**dim
    W = am.sparse.csr_matrix(
        (wgt.ravel(), node.ravel(), xp.arange(0, n * per + 1, per)), shape=(n, m * m)
    )
    charges = W.T.tocsr() @ xp.ones(n)

    offs = xp.arange(2 * m)
    offs = xp.where(offs < m, offs, offs - 2 * m).astype(xp.float64) * spacing
    dx, dy = offs[:, None], offs[None, :]
    w = 1.0 / (1.0 + dx * dx + dy * dy)
    kernels = xp.stack([w, w * w * dx, w * w * dy])
    padded = xp.zeros((2 * m, 2 * m))
    padded[:m, :m] = charges.reshape(m, m)
    conv = xp.fft.irfft2(xp.fft.rfft2(padded)[None] * xp.fft.rfft2(kernels), s=(2 * m, 2 * m))
    pot = xp.ascontiguousarray(conv[:, :m, :m].reshape(3, m * m).T)
    at = W @ pot  # (n, 3): sum_j w_ij, and the force
    z = float(at[:, 0].sum()) - n  # drop the self terms w_ii = 1
    return at[:, 1:].astype(y.dtype), z


def tsne(
    am: ArrayModule,
    X,
    *,
    perplexity: float = 30.0,
    early_exaggeration: float = 12.0,
    learning_rate: float | str = "auto",
    max_iter: int = 1000,
    n_iter_without_progress: int = 300,
    min_grad_norm: float = 1e-7,
    metric: str = "euclidean",
    repulsion: str = "auto",
    P=None,
    knn_dtype=None,
):
    """Embed ``X`` in 2-D with t-SNE.

    Parameters
    ----------
    X
        ``(n, d)`` input (e.g. PCA scores).
    repulsion
        ``"exact"`` (row tiles), ``"fft"`` (grid interpolation) or ``"auto"`` (exact up to
        2048 points).
    P
        Precomputed joint probabilities (from :func:`joint_probabilities`); computed if None.
    knn_dtype
        Distance dtype of the kNN behind ``P`` (float32 under ``precision="fast"``; None:
        float64, the exact path).

    Returns
    -------
    Y, kl, n_iter, P
        The float32 ``(n, 2)`` embedding, the KL divergence at the last error check (as
        scikit-learn's ``kl_divergence_``), the index of the last iteration, and ``P``.
    """
    xp = am.xp
    X = xp.asarray(X)
    n = X.shape[0]
    if P is None:
        P = joint_probabilities(am, X, perplexity, metric, knn_dtype=knn_dtype)
    if repulsion == "auto":
        repulsion = "exact" if n <= _EXACT_MAX_N else "fft"
    if repulsion not in ("exact", "fft"):
        raise ValueError(f"repulsion must be 'auto', 'exact' or 'fft', not {repulsion!r}")
    if learning_rate == "auto":
        learning_rate = max(n / early_exaggeration / 4.0, 50.0)
    y = pca_init(am, X)
    state = TsneState(P=P * float(early_exaggeration), rows=_entry_rows(am, P), repulsion=repulsion)
    y, _, it = _gradient_descent(
        am,
        state,
        y,
        0,
        _EXPLORATION_ITER,
        momentum=0.5,
        learning_rate=learning_rate,
        n_iter_without_progress=_EXPLORATION_ITER,
        min_grad_norm=min_grad_norm,
    )
    kl = None
    if it < _EXPLORATION_ITER or max_iter - _EXPLORATION_ITER > 0:
        state.P = P
        y, kl, it = _gradient_descent(
            am,
            state,
            y,
            it + 1,
            max_iter,
            momentum=0.8,
            learning_rate=learning_rate,
            n_iter_without_progress=n_iter_without_progress,
            min_grad_norm=min_grad_norm,
        )
    return y, kl, it, P


class TsneState:
    """What the iterations of one t-SNE run share: the current ``P`` (exaggerated, then not),
    the row of each of its entries, the repulsion (``"exact"``/``"fft"``), and ``extra``: what
    a fused kernel keeps beside them (:mod:`gpu_sc.kernels.cuda.tsne`)."""

    def __init__(self, P, rows, repulsion: str):
        self.P, self.rows, self.repulsion = P, rows, repulsion
        self.extra: dict = {}


def descent_step(
    am: ArrayModule,
    y,
    update,
    gains,
    state: TsneState,
    momentum: float,
    learning_rate: float,
    compute_error: bool,
):
    """One iteration of scikit-learn's ``_gradient_descent``: the gradient at ``y`` (attraction
    over ``state.P``, repulsion, ``Z``), the gains, the momentum step.

    Returns ``(y, update, gains, grad, error)``: the new arrays, the gain-scaled gradient
    and the KL error at ``y`` (``None`` unless ``compute_error``).
    """
    xp = am.xp
    P_eff = state.P
    attr, w = _attraction(am, P_eff, y, state.rows)
    if state.repulsion == "exact":
        rep, z = _repulsion_exact(am, y)
    else:  # the grid's size is recorded: the next step's declared cost reads it
        rep, z = _repulsion_fft(am, y, info=state.extra)
    grad = (4.0 * (attr - rep / z)).astype(xp.float32)
    error = None
    if compute_error:
        q = xp.maximum(w / z, _FLOAT32_TINY)
        p = P_eff.data
        error = float((p * xp.log(xp.maximum(p, _FLOAT32_TINY) / q)).sum())
    inc = update * grad < 0.0
    gains = xp.where(inc, gains + xp.float32(0.2), gains * xp.float32(0.8))
    gains = xp.maximum(gains, xp.float32(0.01))
    grad = grad * gains
    update = xp.float32(momentum) * update - xp.float32(learning_rate) * grad
    y = y + update
    return y, update, gains, grad, error


def _gradient_descent(
    am,
    state,
    y,
    it,
    max_iter,
    *,
    momentum,
    learning_rate,
    n_iter_without_progress,
    min_grad_norm,
):
    """scikit-learn's ``_gradient_descent`` (momentum, gains, progress checks every 50).

    Each iteration is :func:`descent_step`, through the fused-kernel chooser as ``tsne_step``
    (:mod:`gpu_sc.kernels.cuda.tsne`: the kernels on a GPU, the reference on NumPy, priced as
    the kernels on the CuPy double).
    """
    from .cuda import run_kernel

    xp = am.xp
    y = y.copy()
    update = xp.zeros_like(y)
    gains = xp.ones_like(y)
    best_error = error = float("inf")
    best_iter = i = it
    for i in progress(range(it, max_iter), desc="t-SNE", unit="iter"):
        check = (i + 1) % _N_ITER_CHECK == 0
        y, update, gains, grad, e = run_kernel(
            am,
            "tsne_step",
            y,
            update,
            gains,
            state,
            momentum,
            learning_rate,
            check or i == max_iter - 1,
        )
        if e is not None:
            error = e
        if check:
            grad_norm = float(xp.sqrt((grad.astype(xp.float64) ** 2).sum()))
            if error < best_error:
                best_error, best_iter = error, i
            elif i - best_iter > n_iter_without_progress:
                break
            if grad_norm <= min_grad_norm:
                break
    return y, error, i
