"""Engine steps: embedding (named by the catalogue).

``tl.umap`` (:mod:`gpu_sc.kernels.umap`) and ``tl.tsne`` (:mod:`gpu_sc.kernels.tsne`), with
scanpy's defaults and outputs. Both are deterministic for an integer ``random_state``. Their
optimisation loops go through the fused-kernel chooser (:mod:`gpu_sc.kernels.cuda`): UMAP's
epoch (``umap_epoch``, under ``precision="fast"``: hashed negative samples) and t-SNE's
iteration (``tsne_step``) run as fused kernels on a GPU and are priced as them on the CuPy
double; numpy runs the references.
"""

from __future__ import annotations

import numpy as np

from .._scanpy_compat import init_pos_from_paga
from ..dispatch.registry import EngineUnsupported
from ..kernels import tsne as _tsne
from ..kernels import umap as _umap
from .neighbors import choose_representation

__all__ = ["tsne", "umap"]


def _seed(random_state) -> int:
    """An integer seed (:data:`gpu_sc.catalogue.SEED_POLICY`: the dispatcher has checked it)."""
    return int(random_state)


def _umap_negatives(ctx) -> str:
    """Where UMAP's negative samples come from: ``"stream"`` (a seeded generator: the exact
    path, the numpy backend's results of earlier releases) or ``"hash"`` (counter-based:
    what the fused epoch kernel computes, one launch per epoch; same statistics). The
    precision setting decides (``ctx.precision``; ``"auto"`` resolves to ``"fast"`` on cupy)."""
    return "hash" if getattr(ctx, "precision", "exact") == "fast" else "stream"


def umap(
    adata,
    ctx,
    *,
    min_dist,
    spread,
    n_components,
    maxiter,
    alpha,
    gamma,
    negative_sample_rate,
    init_pos,
    random_state,
    a,
    b,
    method,
    key_added=None,  # scanpy >= 1.11 (older ones store under the default key)
    neighbors_key,
    copy,
):
    am = ctx.am
    xp = am.xp
    seed = _seed(random_state)
    key_obsm, key_uns = ("X_umap", "umap") if key_added is None else (key_added, key_added)
    if neighbors_key is None:
        neighbors_key = "neighbors"
    if neighbors_key not in adata.uns:
        raise ValueError(f"Did not find .uns[{neighbors_key!r}]. Run `sc.pp.neighbors` first.")
    neigh = adata.uns[neighbors_key]
    conns_key = neigh.get("connectivities_key", "connectivities")
    # A copy: the pruning below works in place and must not touch adata's graph.
    graph = am.sparse.csr_matrix(am.asarray(adata.obsp[conns_key]), dtype=xp.float32, copy=True)
    n = graph.shape[0]
    neigh_params = neigh.get("params", {})

    init_given = _given_init(adata, am, init_pos, random_state, neighbors_key, (n, n_components))

    if a is None or b is None:
        a, b = _umap.find_ab_params(spread, min_dist)
    negatives = _umap_negatives(ctx)
    if isinstance(getattr(ctx, "details", None), dict):  # the provenance's engine column
        ctx.details["umap"] = {"negative_samples": negatives}
    default_epochs = 500 if n <= 10000 else 200
    n_epochs = default_epochs if maxiter is None else int(maxiter)

    # simplicial_set_embedding: drop edges too light to be sampled within n_epochs.
    graph.sum_duplicates()
    data = graph.data
    cut = data.max() / float(n_epochs if n_epochs > 10 else default_epochs)
    graph.data = xp.where(data < cut, xp.float32(0), data)
    graph.eliminate_zeros()

    rng = am.random_state(seed)
    init = (init_pos, init_given, n_components)
    embedding = _initial_layout(adata, am, graph, init, neigh_params, seed, rng)
    lo, hi = embedding.min(axis=0), embedding.max(axis=0)
    embedding = (10.0 * (embedding - lo) / (hi - lo)).astype(xp.float32)
    y = _umap.optimize_layout(
        am,
        embedding,
        graph,
        n_epochs=n_epochs,
        a=a,
        b=b,
        gamma=gamma,
        initial_alpha=alpha,
        negative_sample_rate=negative_sample_rate,
        seed=seed + 1,  # a stream apart from the one that jittered the initial layout
        negatives=negatives,
    )

    params = dict(a=np.float64(a), b=np.float64(b))
    if random_state != 0:
        params["random_state"] = random_state
    adata.uns[key_uns] = dict(params=params)
    adata.obsm[key_obsm] = y
    return None


def _given_init(adata, am, init_pos, random_state, neighbors_key, shape):
    """Return the caller's initial layout (an obsm key, ``"paga"`` or an array) as float32
    on the host, checked against ``shape``; None for ``"spectral"`` and ``"random"``."""
    init_given = None
    if isinstance(init_pos, str) and init_pos in adata.obsm:
        # obsm may hold a device array (device output): np.asarray would raise on it
        init_given = np.asarray(am.to_host(adata.obsm[init_pos]), dtype=np.float32)
    elif isinstance(init_pos, str) and init_pos == "paga":
        init_given = np.asarray(
            init_pos_from_paga(adata, random_state=random_state, neighbors_key=neighbors_key),
            dtype=np.float32,
        )
    elif hasattr(init_pos, "shape"):
        init_given = np.asarray(am.to_host(init_pos), dtype=np.float32)
    elif init_pos not in ("spectral", "random"):
        raise EngineUnsupported(f"init_pos={init_pos!r}")
    if init_given is not None:
        if init_given.shape != shape:
            raise ValueError(f"init_pos has shape {init_given.shape}, expected {shape}")
        if np.unique(init_given, axis=0).shape[0] < shape[0]:
            raise EngineUnsupported("init_pos with duplicate rows (umap would jitter them)")
    return init_given


def _initial_layout(adata, am, graph, init, neigh_params, seed, rng):
    """Return umap's starting layout (given, random or spectral), before its rescaling;
    ``init`` is ``(init_pos, init_given, n_components)``."""
    init_pos, init_given, n_components = init
    n = graph.shape[0]
    if init_given is not None:
        return am.asarray(init_given)
    if init_pos == "random":
        return rng.uniform(-10.0, 10.0, (n, n_components)).astype(am.xp.float32)
    x = choose_representation(
        adata, am, use_rep=neigh_params.get("use_rep"), n_pcs=neigh_params.get("n_pcs")
    )
    coords = _umap.spectral_layout(am, graph, n_components, seed, data=am.to_host(x))
    return _umap.noisy_scale_coords(am, coords, rng)


def tsne(
    adata,
    ctx,
    *,
    n_pcs,
    use_rep,
    perplexity,
    metric,
    early_exaggeration,
    learning_rate,
    random_state,
    use_fast_tsne,
    n_jobs,
    key_added=None,  # scanpy >= 1.11 (older ones store under the default key)
    copy,
):
    # random_state only seeds scikit-learn's PCA initialisation, which is deterministic here
    # (covariance eigendecomposition); use_fast_tsne picks another CPU implementation of the
    # same method, so neither changes what the engine computes.
    from scanpy import settings as sc_settings

    # metric, random_state: declared in the catalogue.
    am = ctx.am
    x = choose_representation(adata, am, use_rep=use_rep, n_pcs=n_pcs)
    y, kl, n_iter, _ = _tsne.tsne(
        am,
        x,
        perplexity=float(perplexity),
        early_exaggeration=float(early_exaggeration),
        learning_rate=learning_rate,
        metric=metric,
        # float32 distances under precision="fast", as the neighbors step computes them
        knn_dtype=am.xp.float32 if getattr(ctx, "precision", "exact") == "fast" else None,
    )
    n_jobs = sc_settings.n_jobs if n_jobs is None else n_jobs
    params = dict(
        perplexity=perplexity,
        early_exaggeration=early_exaggeration,
        learning_rate=learning_rate,
        n_jobs=n_jobs,
        metric=metric,
        use_rep=use_rep,
    )
    key_uns, key_obsm = ("tsne", "X_tsne") if key_added is None else (key_added, key_added)
    adata.obsm[key_obsm] = y
    adata.uns[key_uns] = dict(params={k: v for k, v in params.items() if v is not None})
    # Not written by scanpy: the objective at the end, like sklearn's TSNE.kl_divergence_.
    adata.uns[key_uns]["kl_divergence"] = kl
    adata.uns[key_uns]["n_iter"] = int(n_iter)
    return None
