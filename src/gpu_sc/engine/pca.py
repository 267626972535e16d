"""Engine step: ``pca``.

Each function has scanpy's parameter names, computes with the array-generic kernels of
:mod:`gpu_sc.kernels` on ``ctx.am`` and writes into ``adata`` only after everything is computed;
matrix access and row-block streaming are shared in :mod:`gpu_sc.engine._matrix`.
"""

from __future__ import annotations

import numpy as np

from .._scanpy_compat import handle_mask_var
from ..dispatch.registry import EngineContext, EngineUnsupported
from ..kernels import pca as pca_k
from ..kernels import scale as scale_k
from ..kernels.blas import one_thread
from ._matrix import _actual, _get_x, _host, executor

__all__ = ["pca", "resolve_n_comps", "write_pca"]


def pca(
    adata,
    ctx: EngineContext,
    *,
    n_comps,
    layer,
    zero_center,
    svd_solver,
    chunked,
    chunk_size,
    random_state,
    return_info,
    mask_var,
    use_highly_variable,
    dtype,
    key_added=None,  # scanpy >= 1.11 (older ones store under the default key)
    copy,
):
    if layer is not None and chunked:
        raise NotImplementedError("Cannot use `layer` and `chunked` at the same time.")  # scanpy's
    # scanpy's chunked=True is an incremental PCA, which approximates the exact PCA on the
    # covariance that the engine computes anyway (streamed in row blocks when needed); like
    # scanpy it then centres whatever zero_center says (and ignores svd_solver).
    center = bool(zero_center or chunked)
    mask_param, mask = handle_mask_var(adata, mask_var, use_highly_variable=use_highly_variable)
    x = _get_x(adata, layer)
    ex = executor(ctx, x)
    if ex.lazy and ex.sparse and not center:
        raise TypeError(  # scanpy's error
            "`zero_center=False` is not supported for sparse Dask arrays (yet). "
            "See <https://github.com/dask/dask-ml/issues/123>."
        )
    n_obs = x.shape[0]
    n_feat = int(mask.sum()) if mask is not None else x.shape[1]
    n_comps = resolve_n_comps(n_comps, n_obs, n_feat)
    float_dtype = ex.dtype if np.issubdtype(ex.dtype, np.floating) else np.dtype(np.float64)
    am = ex.am
    cols = None if mask is None or mask.all() else np.flatnonzero(mask)
    seed = eigen_seed(svd_solver, random_state, chunked=chunked, sparse_dask=ex.lazy and ex.sparse)
    mean, evals, evecs, total_var, solver = _eigenpairs(
        ex, cols, n_obs, n_feat, n_comps, center, seed=seed, random_state=random_state
    )
    ctx.details["pca"] = {"solver": solver}
    # the Dask path casts on the workers, so that the client receives the coordinates at
    # their final size (the same values as casting after concatenation)
    cast = np.dtype(dtype) if ex.lazy else None
    x_pca = ex.map_rows(_project_block, cols, mean, evecs, cast)
    variance, variance_ratio = explained_variance(
        _host(am, evals), x_pca, total_var, n_obs, center=center, dtype=float_dtype
    )
    if x_pca.dtype.descr != np.dtype(dtype).descr:
        x_pca = x_pca.astype(dtype)
    components = _host(am, evecs).T.astype(float_dtype)

    write_pca(
        adata,
        x_pca,
        components,
        variance,
        variance_ratio,
        mask=mask,
        mask_param=mask_param,
        zero_center=zero_center,
        layer=layer,
        key_added=key_added,
    )
    return None


def _eigenpairs(ex, cols, n_obs, n_feat, n_comps, center, *, seed, random_state):
    """``(mean, eigenvalues, eigenvectors, total variance, solver)``: from the exact covariance
    up to :data:`gpu_sc.kernels.pca.EIGH_MAX_FEATURES` features, by randomized subspace
    iteration over the blocks above (in memory only)."""
    am = ex.am
    if n_feat <= pca_k.EIGH_MAX_FEATURES:
        total, gram = ex.map_reduce(_gram_block, cols)
        return pca_k.exact_pca(
            am, am.asarray(total), am.asarray(gram), n_obs, n_comps, center=center, seed=seed
        )
    if ex.lazy:
        raise EngineUnsupported(
            f"{n_feat} features: the dask PCA handles up to {pca_k.EIGH_MAX_FEATURES}; "
            "select highly variable genes first"
        )
    seed = int(random_state)  # seeded whatever the solver (scanpy's would be randomized too)
    mean, evals, evecs, total_var = _randomized(ex, cols, n_obs, n_feat, n_comps, center, seed=seed)
    return mean, evals, evecs, total_var, f"randomized subspace iteration (random_state={seed})"


def eigen_seed(svd_solver, random_state, *, chunked: bool, sparse_dask: bool) -> int | None:
    """The seed of the eigensolver, or None where scanpy's own result does not depend on
    ``random_state`` (:data:`gpu_sc.kernels.pca.SEED_FREE_SOLVERS`; chunked=True, an
    incremental PCA; a sparse Dask matrix, where scanpy ignores the seed with a warning).
    Elsewhere scanpy's solver (ARPACK, randomized) is seeded, and so is the engine's."""
    if chunked or sparse_dask or svd_solver in pca_k.SEED_FREE_SOLVERS:
        return None
    return int(random_state)


def _sub(am, b, cols):
    return b if cols is None else b[:, am.asarray(cols)]


def _gram_block(am, b, cols):
    return pca_k.gram_block(am, _sub(am, b, cols))


def _project_block(am, b, cols, mean, evecs, dtype):
    out = pca_k.project_block(am, _sub(am, b, cols), am.asarray(mean), am.asarray(evecs))
    return out if dtype is None else out.astype(dtype, copy=False)


def _randomized(ex, cols, n_obs, n_feat, n_comps, center, *, seed):
    """Top eigenpairs of the covariance by randomized subspace iteration over the blocks
    (in memory: more features than :data:`gpu_sc.kernels.pca.EIGH_MAX_FEATURES`)."""
    am, xp = ex.am, ex.am.xp
    cols = None if cols is None else am.asarray(cols)
    total, total_sq = None, None
    for _, _, b in ex:
        s, q = scale_k.col_accumulators(am, _sub(am, b, cols))
        total = s if total is None else total + s
        total_sq = q if total_sq is None else total_sq + q
    mean = total / n_obs
    total_var = float(((total_sq - n_obs * mean**2) / (n_obs - 1)).sum())
    if not center:  # truncated SVD: the operator X^T X / (n - 1), no centring
        mean = xp.zeros_like(mean)

    def apply_cov(v):
        acc = None
        for _, _, b in ex:
            bs = _sub(am, b, cols)
            with one_thread(am):  # the same bits whatever the thread count
                xv = bs.astype(xp.float64) @ v
            part = pca_k.t_matmul(am, bs, xv)
            acc = part if acc is None else acc + part
        return (acc - n_obs * xp.outer(mean, mean @ v)) / (n_obs - 1)

    evals, evecs = pca_k.top_eigh_randomized(am, apply_cov, n_feat, n_comps, seed=seed)
    evecs = pca_k.flip_signs(am, pca_k.zero_empty_features(am, evecs, total_sq))
    return mean, evals, evecs, total_var


def resolve_n_comps(n_comps, n_obs: int, n_feat: int) -> int:
    """scanpy's default number of components, and the range the engine computes."""
    from scanpy import settings as sc_settings

    if n_comps is None:
        min_dim = min(n_feat, n_obs)
        n_comps = min_dim - 1 if min_dim <= sc_settings.N_PCS else sc_settings.N_PCS
    if not 1 <= n_comps < min(n_obs, n_feat):
        raise EngineUnsupported(f"n_comps={n_comps} must be in [1, min(n_obs, n_vars))")
    return n_comps


def explained_variance(evals, x_pca, total_var: float, n_obs: int, *, center: bool, dtype):
    """``(variance, variance_ratio)`` as scanpy stores them (host arrays of ``dtype``).

    Centred: the covariance's eigenvalues over its trace. Not centred: scikit-learn's
    TruncatedSVD, the variance (ddof=0) of each projected column over the total variance
    (ddof=0) of the features (``total_var`` is the covariance's trace, ddof=1).
    """
    if center:
        variance = np.asarray(evals)
        variance_ratio = variance / total_var
    else:
        variance = np.asarray(x_pca, dtype=np.float64).var(axis=0)
        variance_ratio = variance / (total_var * (n_obs - 1) / n_obs)
    return variance.astype(dtype), variance_ratio.astype(dtype)


def write_pca(
    adata,
    x_pca,
    components,
    variance,
    variance_ratio,
    *,
    mask,
    mask_param,
    zero_center,
    layer,
    key_added,
) -> None:
    """Store a PCA under scanpy's keys (``obsm``, ``varm`` loadings of all genes, ``uns``);
    shared by the engine and the Dask path. ``components``: ``(n_comps, n_features)``."""
    key_obsm, key_varm, key_uns = ("X_pca", "PCs", "pca") if key_added is None else [key_added] * 3
    if mask is not None:
        loadings = np.zeros(shape=(adata.n_vars, components.shape[0]))
        loadings[mask] = components.T
    else:
        loadings = components.T
    params = dict(
        zero_center=zero_center,
        use_highly_variable=mask_param == "highly_variable",
        mask_var=mask_param,
    )
    if layer is not None:
        params["layer"] = layer
    _actual(adata)
    adata.obsm[key_obsm] = x_pca
    adata.varm[key_varm] = loadings
    adata.uns[key_uns] = dict(params=params, variance=variance, variance_ratio=variance_ratio)
