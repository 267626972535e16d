"""Engine steps: neighbors (named by the catalogue).

``pp.neighbors`` with exact kNN (:mod:`gpu_sc.kernels.knn`) or IVF-Flat
(:mod:`gpu_sc.kernels.ivf`) and UMAP or Gaussian connectivities
(:mod:`gpu_sc.kernels.connectivities`), written where and how scanpy writes them.

The kNN algorithm follows scanpy's ``transformer`` parameter:

- ``None`` (scanpy's default, "auto"): exact below
  :data:`gpu_sc.kernels.ivf.AUTO_IVF_CELLS` cells (2*10^5), IVF-Flat at its defaults from
  there on (scanpy itself switches to approximate pynndescent above 4096 cells, too early for
  a GPU, whose exact search stays cheap well beyond);
- ``"sklearn"`` (scanpy's exact brute force): exact;
- ``"ivf"`` or an :class:`gpu_sc.kernels.ivf.IVFFlat` (``nlist``, ``nprobe``): IVF-Flat.

The choice (``algorithm``, with ``nlist`` and ``nprobe`` for IVF-Flat) is recorded in the
provenance's ``engine`` column. Under ``precision="fast"`` the distances are computed in
float32.
"""

from __future__ import annotations

import logging

from .._scanpy_compat import scanpy_pca
from ..dispatch.registry import EngineContext, EngineUnsupported
from ..kernels import connectivities as _conn
from ..kernels.ivf import AUTO_IVF_CELLS, IVFFlat, ivf_knn
from ..kernels.knn import knn as _knn
from ..kernels.knn import knn_to_csr
from .pca import pca

__all__ = ["choose_representation", "knn_algorithm", "neighbors"]

logger = logging.getLogger("gpu_sc")

_N_PCS = 50  # scanpy.settings.N_PCS


def choose_representation(adata, am, *, use_rep: str | None, n_pcs: int | None):
    """The dense matrix scanpy's ``_choose_representation`` would use, in ``am``'s namespace.

    Where scanpy computes a PCA on the fly (more than 50 genes, no ``obsm['X_pca']``), so
    does the engine, with scanpy's warning and defaults, and stores it in ``adata`` as scanpy
    does; raises ``ValueError`` where scanpy does.
    """
    if use_rep is None and n_pcs == 0:
        use_rep = "X"
    if use_rep is None:
        if adata.n_vars <= _N_PCS:
            x = adata.X
        elif "X_pca" in adata.obsm:
            if n_pcs is not None and n_pcs > adata.obsm["X_pca"].shape[1]:
                raise ValueError(
                    "`X_pca` does not have enough PCs. Rerun `sc.pp.pca` with adjusted `n_comps`."
                )
            x = adata.obsm["X_pca"][:, :n_pcs]
        else:
            x = _pca_on_the_fly(adata, am, n_pcs)
    elif use_rep in adata.obsm:
        x = adata.obsm[use_rep]
        if n_pcs is not None:
            if n_pcs > x.shape[1]:
                raise ValueError(
                    f"{use_rep} does not have enough Dimensions. Provide a Representation with "
                    "equal or more dimensions than`n_pcs` or lower `n_pcs` "
                )
            x = x[:, :n_pcs]
    elif use_rep == "X":
        x = adata.X
    else:
        raise ValueError(f"Did not find {use_rep} in `.obsm.keys()`. You need to compute it first.")
    if x is None:
        raise EngineUnsupported("the chosen representation is empty (adata.X is None)")
    if hasattr(x, "columns"):  # an obsm DataFrame
        x = x.to_numpy()
    x = am.asarray(x)
    if am.issparse(x):
        x = x.toarray()
    return x


def _pca_on_the_fly(adata, am, n_pcs: int | None):
    """scanpy's ``_get_pca_or_small_x`` without ``obsm['X_pca']``: warn, run ``pp.pca`` with
    its defaults (here the engine's) and use (and keep) ``obsm['X_pca']``."""
    import inspect
    import warnings

    warnings.warn(
        f"You’re trying to run this on {adata.n_vars} dimensions of `.X`, "
        "if you really want this, set `use_rep='X'`.\n         "
        "Falling back to preprocessing with `sc.pp.pca` and default params.",
        UserWarning,
        stacklevel=2,
    )
    params = {
        name: p.default
        for name, p in inspect.signature(scanpy_pca()).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    params["n_comps"] = n_pcs if n_pcs is not None else _N_PCS
    accepted = inspect.signature(pca).parameters
    pca(adata, EngineContext(am=am), **{k: v for k, v in params.items() if k in accepted})
    return adata.obsm["X_pca"]


def knn_algorithm(transformer, n_obs: int) -> str:
    """``"exact"`` or ``"ivf"`` for scanpy's ``transformer`` value on ``n_obs`` cells."""
    if transformer is None:
        return "ivf" if n_obs >= AUTO_IVF_CELLS else "exact"
    if isinstance(transformer, IVFFlat) or transformer == "ivf":
        return "ivf"
    return "exact"  # "sklearn"; other values are rejected by the catalogue's rule


def neighbors(
    adata,
    ctx,
    *,
    n_neighbors,
    n_pcs,
    use_rep,
    knn,
    method,
    transformer,
    metric,
    metric_kwds,
    random_state,
    key_added,
    copy,
):
    # transformer, knn, method, metric, metric_kwds: supported values are declared in the
    # catalogue and checked by the dispatcher.
    am = ctx.am
    x = choose_representation(adata, am, use_rep=use_rep, n_pcs=n_pcs)
    n_obs = adata.n_obs
    if n_neighbors > n_obs:  # scanpy: very small data sets, with scanpy's warning
        n_neighbors = 1 + int(0.5 * n_obs)
        logger.warning("gpu_sc: n_obs too small: adjusting to n_neighbors = %d", n_neighbors)
    # scanpy's brute-force transformer asks for min(n_obs - 1, n_neighbors) others plus self,
    # then keeps the first n_neighbors columns.
    k = min(n_neighbors, n_obs)
    algorithm = knn_algorithm(transformer, n_obs)
    dtype = am.xp.float32 if ctx.precision == "fast" else None
    if algorithm == "exact":
        indices, dists = _knn(am, x, k, metric, dtype=dtype)
        ctx.details["knn"] = {"algorithm": "exact"}
    else:
        ivf = transformer if isinstance(transformer, IVFFlat) else IVFFlat()
        indices, dists, info = ivf_knn(am, x, k, metric, params=ivf, dtype=dtype)
        ctx.details["knn"] = info
    ctx.details["knn"]["auto"] = transformer is None
    distances = knn_to_csr(am, indices, dists)
    if method == "umap":
        conns = _conn.fuzzy_simplicial_set(am, indices, dists, n_obs, n_neighbors)
    else:
        conns = _conn.gauss(am, indices, dists, n_obs)

    if key_added is None:
        key_added, conns_key, dists_key = "neighbors", "connectivities", "distances"
    else:
        conns_key, dists_key = f"{key_added}_connectivities", f"{key_added}_distances"
    params = dict(n_neighbors=n_neighbors, method=method, random_state=random_state, metric=metric)
    if use_rep is not None:
        params["use_rep"] = use_rep
    if n_pcs is not None:
        params["n_pcs"] = n_pcs
    adata.uns[key_added] = {
        "connectivities_key": conns_key,
        "distances_key": dists_key,
        "params": params,
    }
    adata.obsp[dists_key] = distances
    adata.obsp[conns_key] = conns
    return None
