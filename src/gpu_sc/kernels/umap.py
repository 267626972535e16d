"""UMAP layout of a fuzzy graph, array-generic and deterministic.

Follows ``umap.umap_.simplicial_set_embedding`` as scanpy calls it: edges lighter than
``max / n_epochs`` dropped, ``epochs_per_sample`` from the weights, spectral initialisation
(noisy-scaled to 10), rescaling to ``[0, 10]``, ``n_epochs`` of attraction along sampled edges
and ``negative_sample_rate`` repulsions per sample, learning rate ``alpha * (1 - epoch / n)``
and gradients clipped to 4, with the same per-edge sampling schedule.

One difference by design: umap-learn applies the edge updates one after another (in parallel,
Hogwild style, on several threads), which is not reproducible in parallel. Here each epoch is
one deterministic vectorised step: every gradient of the epoch is computed from the positions
at the start of the epoch, and the per-vertex sums are sparse-matrix products (a fixed
reduction order, no floating-point atomics), so a seed gives the same embedding bit for bit.

Negative samples come from one of two sources (``negatives=``): ``"stream"`` draws them from
``am.random_state(seed)`` in edge order (the numpy backend's exact path, unchanged), ``"hash"``
makes each one a counter-based hash of ``(seed, epoch, edge, sample)``
(:func:`negative_samples`), which a GPU kernel can compute inside the launch: that is the
reference of the fused epoch kernel (:mod:`gpu_sc.kernels.cuda.umap`).
"""

from __future__ import annotations

import warnings

import numpy as np

from .._progress import progress
from ..dispatch.arrays import ArrayModule
from .reductions import axis_sum
from .segment import segment_ids

__all__ = [
    "LayoutState",
    "find_ab_params",
    "layout_epoch",
    "layout_state",
    "make_epochs_per_sample",
    "negative_samples",
    "optimize_layout",
    "spectral_layout",
]

_CLIP = 4.0
_MASK32 = 0xFFFFFFFF
# The multipliers of the "lowbias32" integer finaliser (Chris Wellons' hash prospector), and
# the golden-ratio constant that spreads the seed.
HASH_M1 = 0x7FEB352D
HASH_M2 = 0x846CA68B
HASH_GOLDEN = 0x9E3779B9


def _mix32(xp, x):
    """lowbias32 on uint64 arrays holding 32-bit values (wrapping products, masked to 32 bits)."""
    m = xp.uint64(_MASK32)
    x = x ^ (x >> xp.uint64(16))
    x = (x * xp.uint64(HASH_M1)) & m
    x = x ^ (x >> xp.uint64(15))
    x = (x * xp.uint64(HASH_M2)) & m
    return x ^ (x >> xp.uint64(16))


def negative_samples(am: ArrayModule, seed: int, epoch: int, edges, samples, n: int):
    """The negative-sample vertices for ``(edge, sample)`` pairs of ``epoch``: counter-based.

    ``mix(mix(mix(mix(seed * golden) ^ epoch) ^ edge) ^ sample) mod n`` with the 32-bit
    lowbias32 finaliser; a pure function of its counters, so a kernel computes the same
    vertices wherever the pair is handled (the fused UMAP epoch, one thread per vertex).
    """
    xp = am.xp
    h0 = _mix32(xp, xp.asarray([(int(seed) * HASH_GOLDEN) & _MASK32], dtype=xp.uint64))
    h1 = _mix32(xp, h0 ^ xp.uint64(int(epoch) & _MASK32))
    h = _mix32(xp, h1 ^ (xp.asarray(edges).astype(xp.uint64) & xp.uint64(_MASK32)))
    h = _mix32(xp, h ^ xp.asarray(samples).astype(xp.uint64))
    return (h % xp.uint64(n)).astype(xp.int64)


def find_ab_params(spread: float, min_dist: float) -> tuple[float, float]:
    """umap's ``find_ab_params``: fit ``1 / (1 + a x^(2b))`` to the offset exponential (host)."""
    from scipy.optimize import curve_fit

    def curve(x, a, b):
        return 1.0 / (1.0 + a * x ** (2 * b))

    xv = np.linspace(0, spread * 3, 300)
    yv = np.zeros(xv.shape)
    yv[xv < min_dist] = 1.0
    yv[xv >= min_dist] = np.exp(-(xv[xv >= min_dist] - min_dist) / spread)
    params, _ = curve_fit(curve, xv, yv)
    return float(params[0]), float(params[1])


def make_epochs_per_sample(am: ArrayModule, weights, n_epochs: int):
    """umap's ``make_epochs_per_sample``: ``n_epochs / (n_epochs * w / max w)``, -1 for w = 0."""
    xp = am.xp
    n_samples = n_epochs * (weights / weights.max())
    safe = xp.where(n_samples > 0, n_samples, 1.0)
    return xp.where(n_samples > 0, float(n_epochs) / safe, -1.0)


def spectral_layout(am: ArrayModule, graph, dim: int, seed: int, data=None):
    """umap's ``spectral_layout``: the eigenvectors 2..dim+1 of the normalised Laplacian.

    The smallest eigenvalues of ``I - D^-1/2 A D^-1/2`` are the largest of
    ``D^-1/2 A D^-1/2``, found with ``eigsh(which="LA")`` (available in SciPy and CuPy).
    Disconnected graphs are laid out per component around a meta-layout of the components as
    umap's ``multi_component_layout`` does (component centroids of ``data``). Connected
    components and the meta-layout are computed on the host: an ``O(edges)`` pass and a
    ``components x components`` problem.

    Returns
    -------
    ``(n, dim)`` float64 array in ``am``'s namespace.
    """
    from scipy.sparse.csgraph import connected_components

    graph = am.sparse.csr_matrix(graph)
    n = graph.shape[0]
    n_comp, labels = connected_components(am.to_host(graph))
    if n_comp == 1:
        return _component_spectral(am, graph, dim, seed)
    rng = np.random.RandomState(seed)
    if n_comp > 2 * dim:
        meta = _component_meta_layout(data, n_comp, labels, dim, seed, rng)
    else:
        k = int(np.ceil(n_comp / 2.0))
        base = np.hstack([np.eye(k), np.zeros((k, dim - k))])
        meta = np.vstack([base, -base])[:n_comp]
    result = np.empty((n, dim))
    for label in range(n_comp):
        members = np.flatnonzero(labels == label)
        dist = np.sqrt(((meta - meta[label]) ** 2).sum(axis=1))
        data_range = dist[dist > 0].min() / 2.0
        if members.size < 2 * dim or members.size <= dim + 1:
            noise = rng.uniform(-data_range, data_range, (members.size, dim))
            result[members] = noise + meta[label]
            continue
        idx = am.asarray(members)
        emb = am.to_host(_component_spectral(am, graph[idx][:, idx], dim, seed))
        result[members] = emb * (data_range / np.abs(emb).max()) + meta[label]
    return am.asarray(result)


def _component_spectral(am: ArrayModule, graph, dim: int, seed: int):
    xp = am.xp
    linalg = am.sparse_linalg()
    n = graph.shape[0]
    # Row sums (the graph is symmetric): cupyx computes column sums as a transposed SpMV with
    # atomics, which would make the spectral start differ from run to run on the GPU.
    deg = axis_sum(am, graph, axis=1)
    inv_sqrt = 1.0 / xp.sqrt(deg)
    D = am.sparse.diags(inv_sqrt)
    M = (D @ graph.astype(xp.float64) @ D).tocsr()
    k = dim + 1
    ncv = min(n - 1, max(2 * k + 1, int(np.sqrt(n))))
    try:
        vals, vecs = linalg.eigsh(
            M, k=k, which="LA", ncv=ncv, tol=1e-4, v0=xp.ones(n), maxiter=n * 5
        )
        failure = _eigen_residual_failure(am, M, vals, vecs)
    except Exception as err:  # SciPy raises ArpackNoConvergence
        failure = f"{type(err).__name__}: {err}"
    if failure is not None:
        # umap's own behaviour: warn and start from a uniform random layout.
        warnings.warn(
            f"Spectral initialisation failed ({failure}); falling back to a random layout.",
            UserWarning,
            stacklevel=3,
        )
        return am.random_state(seed).uniform(-10.0, 10.0, (n, dim))
    order = xp.argsort(-vals)[1:k]
    return vecs[:, order]


# Largest accepted residual |M v - lambda v| of an eigenpair (unit v, |lambda| <= 1). eigsh is
# asked for tol=1e-4; a hundred times that is far outside what a converged solve leaves.
_EIGEN_RESIDUAL_MAX = 1e-2


def _eigen_residual_failure(am: ArrayModule, M, vals, vecs) -> str | None:
    """Why the eigenpairs are not usable, or ``None``.

    SciPy's ``eigsh`` raises when ARPACK does not converge; CuPy's returns whatever its last
    restart left. Checking the residuals makes both backends reject an unconverged start.
    """
    xp = am.xp
    if not bool(xp.all(xp.isfinite(vals))) or not bool(xp.all(xp.isfinite(vecs))):
        return "non-finite eigenpairs"
    norms = xp.sqrt((vecs * vecs).sum(axis=0))
    resid = xp.sqrt(((M @ vecs - vecs * vals[None, :]) ** 2).sum(axis=0)) / norms
    worst = float(resid.max())
    if worst > _EIGEN_RESIDUAL_MAX:
        return f"eigenvector residual {worst:.2g} > {_EIGEN_RESIDUAL_MAX:g}"
    return None


def _component_meta_layout(data, n_comp, labels, dim, seed, rng):
    """umap's ``component_layout``: spectral embedding of the components' centroid affinities."""
    if data is None:
        return rng.random_sample((n_comp, dim)) * 10.0
    from sklearn.manifold import SpectralEmbedding
    from sklearn.metrics import pairwise_distances

    data = np.asarray(data, dtype=np.float64)
    centroids = np.stack([data[labels == c].mean(axis=0) for c in range(n_comp)])
    affinity = np.exp(-(pairwise_distances(centroids) ** 2))
    emb = SpectralEmbedding(n_components=dim, affinity="precomputed", random_state=seed)
    emb = emb.fit_transform(affinity)
    return emb / emb.max()


def noisy_scale_coords(am: ArrayModule, coords, rng, max_coord=10.0, noise=0.0001):
    """umap's ``noisy_scale_coords``: scale to ``max_coord`` and add tiny gaussian noise."""
    xp = am.xp
    coords = (coords * (max_coord / xp.abs(coords).max())).astype(xp.float32)
    return coords + rng.normal(scale=noise, size=coords.shape).astype(xp.float32)


class LayoutState:
    """What the epochs of one layout share: the edges (CSR order: the edge ids), their
    schedule (``next_sample``, ``next_neg``: updated by every epoch), the incidence matrix of
    the reference's sums, the source of negative samples, and ``extra``: what a fused kernel
    keeps beside them (:mod:`gpu_sc.kernels.cuda.umap`)."""

    def __init__(self, **fields):
        self.extra: dict = {}
        self.__dict__.update(fields)


def layout_state(
    am: ArrayModule,
    graph,
    *,
    n_epochs: int,
    negative_sample_rate: int = 5,
    seed: int = 0,
    negatives: str = "stream",
) -> LayoutState:
    """The :class:`LayoutState` of :func:`optimize_layout` for ``graph`` (CSR, pruned)."""
    if negatives not in ("stream", "hash"):
        raise ValueError(f"negatives must be 'stream' or 'hash', not {negatives!r}")
    xp = am.xp
    f32 = xp.float32
    graph = am.sparse.csr_matrix(graph, copy=True)
    graph.sort_indices()
    n = graph.shape[0]
    coo = graph.tocoo()
    head = xp.asarray(coo.row, dtype=xp.int64)
    tail = xp.asarray(coo.col, dtype=xp.int64)
    weights = xp.asarray(coo.data, dtype=xp.float64)
    n_edges = int(head.size)
    eps = make_epochs_per_sample(am, weights, n_epochs)
    eps_neg = eps / negative_sample_rate
    next_sample = eps.copy()
    next_neg = eps_neg.copy()
    # (vertex x edge) incidence: +1 at the edge's head, -1 at its tail. One product with it
    # adds each edge's attraction to its head and subtracts it from its tail, in a fixed order.
    edge_ids = xp.arange(n_edges, dtype=xp.int64)
    incidence = am.sparse.csr_matrix(
        (
            xp.concatenate([xp.ones(n_edges, f32), -xp.ones(n_edges, f32)]),
            (xp.concatenate([head, tail]), xp.concatenate([edge_ids, edge_ids])),
        ),
        shape=(n, n_edges),
    )
    rng = am.random_state(seed) if negatives == "stream" else None
    # Edges sampled per epoch on average (each every eps epochs): the fused kernel's cost.
    mean_active = None
    if negatives == "hash":
        mean_active = float((weights / weights.max()).sum()) if n_edges else 0.0
    return LayoutState(
        n=n,
        n_edges=n_edges,
        head=head,
        tail=tail,
        indptr=graph.indptr,
        eps=eps,
        eps_neg=eps_neg,
        next_sample=next_sample,
        next_neg=next_neg,
        incidence=incidence,
        rng=rng,
        seed=int(seed),
        negatives=negatives,
        negative_sample_rate=negative_sample_rate,
        mean_active=mean_active,
    )


def layout_epoch(am: ArrayModule, y, state: LayoutState, epoch: int, alpha: float, a, b, gamma):
    """One epoch of :func:`optimize_layout`: the new float32 positions (``state`` updated).

    Every gradient from the positions at the epoch's start; the attractions summed per vertex
    by the incidence product, the repulsions of the negative samples by a second product.
    """
    xp = am.xp
    f32 = xp.float32
    n, n_edges = state.n, state.n_edges
    head, tail, eps, eps_neg = state.head, state.tail, state.eps, state.eps_neg
    next_sample, next_neg = state.next_sample, state.next_neg
    a32, b32 = f32(a), f32(b)
    active = (next_sample <= epoch) & (eps > 0)
    act = xp.flatnonzero(active)
    if act.size:
        h, t = head[act], tail[act]
        diff = y[h] - y[t]
        d2 = (diff * diff).sum(axis=1)
        pos = d2 > 0
        safe = xp.where(pos, d2, f32(1.0))
        coeff = (-2.0 * a32 * b32 * safe ** (b32 - 1.0)) / (a32 * safe**b32 + 1.0)
        coeff = xp.where(pos, coeff, f32(0.0)).astype(f32)
        grad = xp.clip(coeff[:, None] * diff, -_CLIP, _CLIP).astype(f32)
        full = xp.zeros((n_edges, y.shape[1]), dtype=f32)
        full[act] = grad
        update = state.incidence @ full

        # Negative samples: as many per active edge as umap's schedule owes it.
        n_neg = xp.floor((epoch - next_neg[act]) / eps_neg[act]).astype(xp.int64)
        n_neg = xp.maximum(n_neg, 0)
        next_neg[act] += n_neg * eps_neg[act]
        next_sample[act] += eps[act]
        total = int(n_neg.sum())
        if total:
            seg = segment_ids(am, n_neg)
            src = h[seg]  # sorted, as heads are
            if state.negatives == "stream":
                k = state.rng.randint(0, n, size=total).astype(xp.int64)
            else:
                first = xp.cumsum(n_neg) - n_neg
                within = xp.arange(total, dtype=xp.int64) - first[seg]
                k = negative_samples(am, state.seed, epoch, act[seg], within, n)
            diff = y[src] - y[k]
            d2 = (diff * diff).sum(axis=1)
            pos = d2 > 0
            safe = xp.where(pos, d2, f32(1.0))
            coeff = (2.0 * f32(gamma) * b32) / ((f32(0.001) + safe) * (a32 * safe**b32 + 1.0))
            coeff = xp.where(pos, coeff, f32(0.0)).astype(f32)
            rep = xp.clip(coeff[:, None] * diff, -_CLIP, _CLIP).astype(f32)
            counts = xp.bincount(src, minlength=n)
            indptr = xp.concatenate([xp.zeros(1, xp.int64), xp.cumsum(counts)])
            gather = am.sparse.csr_matrix(
                (xp.ones(total, f32), xp.arange(total, dtype=xp.int64), indptr),
                shape=(n, total),
            )
            update = update + gather @ rep
        y = y + f32(alpha) * xp.asarray(update, dtype=f32)
    return y


def optimize_layout(
    am: ArrayModule,
    embedding,
    graph,
    *,
    n_epochs: int,
    a: float,
    b: float,
    gamma: float = 1.0,
    initial_alpha: float = 1.0,
    negative_sample_rate: int = 5,
    seed: int = 0,
    negatives: str = "stream",
):
    """Optimise ``embedding`` (``(n, dim)``) for the fuzzy ``graph`` (CSR) over ``n_epochs``.

    ``graph`` holds the edges to sample (already pruned of weights below ``max / n_epochs``).
    ``negatives``: ``"stream"`` (a seeded generator, in edge order; :func:`layout_epoch` runs
    each epoch) or ``"hash"`` (:func:`negative_samples`): then each epoch goes through the
    fused-kernel chooser as ``umap_epoch`` (:mod:`gpu_sc.kernels.cuda.umap`: the kernel on a
    GPU, :func:`layout_epoch` on NumPy, priced as the kernel on the CuPy double). Returns the
    float32 embedding.
    """
    xp = am.xp
    state = layout_state(
        am,
        graph,
        n_epochs=n_epochs,
        negative_sample_rate=negative_sample_rate,
        seed=seed,
        negatives=negatives,
    )
    y = xp.asarray(embedding, dtype=xp.float32).copy()
    step = layout_epoch
    if negatives == "hash":
        from .cuda import run_kernel

        def step(am, y, state, epoch, alpha, a, b, gamma):
            return run_kernel(am, "umap_epoch", y, state, epoch, alpha, a, b, gamma)

    alpha = float(initial_alpha)
    for epoch in progress(range(n_epochs), desc="UMAP", unit="epoch"):
        y = step(am, y, state, epoch, alpha, a, b, gamma)
        alpha = initial_alpha * (1.0 - float(epoch) / float(n_epochs))
    return y
