"""Engine steps: clustering — ``leiden`` and ``paga`` (named by the catalogue)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from natsort import natsorted

from .._scanpy_compat import choose_graph, warn_once
from ..dispatch.registry import EngineUnsupported
from ..kernels.leiden import leiden as _leiden_kernel
from ..kernels.paga import paga_connectivities

__all__ = ["leiden", "paga"]


def leiden(
    adata,
    ctx,
    *,
    resolution,
    restrict_to,
    random_state,
    key_added,
    adjacency,
    directed,
    use_weights,
    n_iterations,
    partition_type,
    neighbors_key,
    obsp,
    copy,
    flavor,
    **clustering_args,
):
    """Leiden on the engine: :func:`gpu_sc.kernels.leiden.leiden` on scanpy's graph.

    Optimises the objective of scanpy's ``flavor="igraph"`` (modularity with ``resolution``
    on the undirected weighted graph); ``flavor="leidenalg"`` is accepted only where it
    optimises the same objective (``directed=False``, default partition type). Labels are
    numbered by decreasing cluster size.
    """
    am = ctx.am
    # restrict_to, random_state, leidenalg's objective: declared in the catalogue; scanpy's
    # errors raised here.
    if flavor not in {"igraph", "leidenalg"}:
        raise ValueError(
            f"flavor must be either 'igraph' or 'leidenalg', but {flavor!r} was passed"
        )
    if flavor == "igraph":
        if directed:
            raise ValueError("Cannot use igraph’s leiden implementation with a directed graph.")
        if partition_type is not None:
            raise ValueError("Do not pass in partition_type argument when using igraph.")
    # leidenalg with another partition type or on the directed graph: declared unsupported in
    # the catalogue (gpu_sc.catalogue.declarations._leidenalg_objective), never reaches here
    if flavor == "leidenalg":
        warn_once(
            "In the future, the default backend for leiden will be igraph instead of leidenalg."
            '\n\n To achieve the future defaults please pass: flavor="igraph" and '
            "n_iterations=2.  directed must also be False to work with igraph's "
            "implementation.",
            FutureWarning,
            stacklevel=3,
        )
    extra = {k: v for k, v in clustering_args.items() if k != "objective_function"}
    if clustering_args.get("objective_function", "modularity") != "modularity" or extra:
        raise EngineUnsupported(f"clustering arguments {sorted(clustering_args)}")
    if adjacency is None:
        adjacency = choose_graph(adata, obsp, neighbors_key)  # scanpy's errors
    A = am.asarray(adjacency)
    if not am.issparse(A):
        A = am.sparse.csr_matrix(A)
    A = A.tocsr().astype(am.xp.float64)
    if not use_weights:
        A = am.sparse.csr_matrix((am.xp.ones_like(A.data), A.indices, A.indptr), shape=A.shape)
    gamma = 1.0 if resolution is None else float(resolution)
    labels = am.to_host(
        _leiden_kernel(
            am,
            A,
            resolution=gamma,
            n_iterations=int(n_iterations),
            random_state=int(random_state),
        )
    )
    values = labels.astype("U")
    adata.obs[key_added] = pd.Categorical(
        values=values, categories=natsorted(map(str, np.unique(labels)))
    )
    adata.uns[key_added] = {
        "params": dict(resolution=resolution, random_state=random_state, n_iterations=n_iterations)
    }
    return None


def paga(adata, ctx, *, groups, use_rna_velocity, model, neighbors_key, copy):
    """PAGA v1.2 connectivities by sparse products on the engine's graph and labels.

    Computed on the engine rather than by running scanpy's PAGA on a host copy: the counts
    are two sparse products with the group indicator (scanpy builds an igraph graph of all
    ``n * k`` edges and loops over group pairs in Python, which dominates at atlas scale).
    The spanning tree of the ``n_groups x n_groups`` result is taken on the host with
    scipy, exactly as scanpy does.
    """
    am = ctx.am
    # use_rna_velocity, model: declared in the catalogue.
    check = "neighbors" if neighbors_key is None else neighbors_key
    if check not in adata.uns:
        raise EngineUnsupported("no neighbors graph (scanpy reports the error)")
    if groups is None:
        groups = next((k for k in ("leiden", "louvain") if k in adata.obs.columns), None)
    if groups is None or groups not in adata.obs.columns:
        raise EngineUnsupported("no group labels (scanpy reports the error)")
    labels = adata.obs[groups]
    if not isinstance(labels.dtype, pd.CategoricalDtype):
        raise EngineUnsupported(f"obs[{groups!r}] is not categorical (scanpy converts it)")
    if (labels.cat.codes < 0).any():
        raise EngineUnsupported(f"obs[{groups!r}] has missing labels")
    distances_key = adata.uns[check].get("distances_key", "distances")
    distances = adata.obsp[distances_key]
    n_groups = len(labels.cat.categories)
    sizes, _inter, conn = paga_connectivities(am, distances, labels.cat.codes.to_numpy(), n_groups)
    connectivities = sp.csr_matrix(am.to_host(conn))
    tree = _spanning_tree(connectivities)
    adata.uns.setdefault("paga", {})
    adata.uns["paga"]["connectivities"] = connectivities
    adata.uns["paga"]["connectivities_tree"] = tree
    adata.uns[f"{groups}_sizes"] = am.to_host(sizes)
    adata.uns["paga"]["groups"] = groups
    return None


def _spanning_tree(connectivities):
    """scanpy's ``_get_connectivities_tree_v1_2``: the minimum spanning tree of 1/connectivity,
    carrying the connectivities of its edges."""
    from scipy.sparse.csgraph import minimum_spanning_tree

    inverse = connectivities.copy()
    inverse.data = 1.0 / inverse.data
    mst = minimum_spanning_tree(inverse).tocsr()
    tree = sp.lil_matrix(connectivities.shape, dtype=float)
    for i in range(mst.shape[0]):
        neighbors = mst[i].nonzero()[1]
        if len(neighbors) > 0:
            tree[i, neighbors] = connectivities[i, neighbors]
    return tree.tocsr()
