"""PCA through the covariance matrix, with implicit centring of sparse input.

``cov = (X^T X - n mean mean^T) / (n - 1)`` is accumulated over row blocks in float64, so a
sparse matrix is never densified or centred. Up to :data:`EIGH_MAX_FEATURES` features the
leading eigenpairs of that exact covariance are found by one of two solvers
(:func:`top_eigenpairs`):

* seeded (scanpy's default ``svd_solver``, ARPACK in scikit-learn): a Lanczos iteration
  (``eigsh``: ARPACK in SciPy, thick-restart Lanczos in CuPy) from scikit-learn's start vector
  for ``random_state`` (``_init_arpack_v0``), run to machine precision. Another seed starts
  another Krylov sequence, so, as with scanpy, it changes the last bits of the result (the
  components agree with the exact eigendecomposition to ~1e-13), and the same seed gives
  the same bits. It is also ~2x faster than ``eigh`` (PBMC3k, 1838 genes, 50 components:
  0.5 s vs 1.2 s on one thread).
* seed-free (``svd_solver="covariance_eigh"`` or ``"full"``, scanpy's sparse-Dask and chunked
  paths, tiny problems): the full eigendecomposition (``xp.linalg.eigh``).

Above, a randomized block subspace iteration on the covariance operator finds the leading
eigenpairs (seeded too).

Block products (:func:`gram_block`, :func:`t_matmul`, :func:`project_block`) and the
eigensolvers run host BLAS/LAPACK on one thread (:func:`gpu_sc.kernels.blas.one_thread`), so a block gives the same bits on a
Dask worker, on the client and in the in-memory engine, whatever their thread counts.

Sign convention: scanpy's default solver (sklearn ``PCA``, arpack) ends with
``svd_flip(U, Vt, u_based_decision=False)``: each component (row of ``Vt``) is flipped so that
its entry of largest absolute value is positive. :func:`flip_signs` applies the same rule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..dispatch.arrays import ArrayModule
from .blas import one_thread
from .reductions import axis_sum

__all__ = [
    "EIGH_MAX_FEATURES",
    "covariance",
    "exact_pca",
    "flip_signs",
    "gram_block",
    "project_block",
    "t_matmul",
    "SEED_FREE_SOLVERS",
    "top_eigenpairs",
    "top_eigh",
    "top_eigh_lanczos",
    "top_eigh_randomized",
    "zero_empty_features",
]

#: Above this many features the randomized solver replaces the dense eigendecomposition.
EIGH_MAX_FEATURES = 10_000

#: scanpy's ``svd_solver`` values whose result no ``random_state`` changes: scikit-learn's
#: full SVD and covariance eigendecomposition, dask-ml's TSQR.
SEED_FREE_SOLVERS = frozenset({"full", "covariance_eigh", "tsqr"})

#: Largest accepted Lanczos residual ``|cov v - lambda v|``, relative to the largest
#: eigenvalue. eigsh is asked for machine precision (:func:`top_eigh_lanczos`); sqrt(eps) is
#: far outside what a converged solve leaves, and CuPy's eigsh returns its last iterate
#: instead of raising.
LANCZOS_MAX_RESIDUAL = 1.5e-8


def gram_block(am: ArrayModule, x: Any) -> tuple[Any, Any]:
    """Float64 ``(column sums, X^T X)`` of one row block.

    Sparse column sums go through :func:`~gpu_sc.kernels.reductions.axis_sum` (a row
    reduction of the CSC form), not ``x.sum(axis=0)``: cupyx computes the latter as a
    transposed cuSPARSE SpMV, which scatters with atomics (run-to-run differences). A dense
    block is made C-ordered first: NumPy sums a column-major array in another order, so a
    column subset (``X[:, mask]`` is column-major) and a copy of it would differ in the last
    bits (scanpy's test_mask compares them at rtol=1e-11).
    """
    xp = am.xp
    if am.issparse(x):
        x64 = x.astype(xp.float64)
        gram = (x64.T @ x64).toarray()
        return axis_sum(am, x64, axis=0), gram
    # astype copies: a fresh, aligned, row-major float64 array, whatever the block's memory
    # (ascontiguousarray would keep a float64 block as it is, e.g. a buffer unpickled on a
    # Dask worker, and BLAS then rounds differently than on the same data elsewhere)
    x64 = x.astype(xp.float64, order="C")
    with one_thread(am):  # the same bits whatever runs the block (kernels.blas)
        return x64.sum(axis=0), x64.T @ x64


def t_matmul(am: ArrayModule, x: Any, v: Any) -> Any:
    """``X^T @ v`` in float64 for a row block ``x`` and a dense ``v``.

    A sparse ``x`` is transposed explicitly into CSR first (a permutation of its values),
    so the product is a non-transposed sparse-dense product: cuSPARSE's transposed SpMM,
    which cupyx would call for ``x.T @ v``, accumulates with atomics.
    """
    xp = am.xp
    if am.issparse(x):
        return xp.asarray(x.T.tocsr().astype(xp.float64) @ v)
    with one_thread(am):
        return x.T.astype(xp.float64) @ v


def covariance(am: ArrayModule, total: Any, gram: Any, n: int) -> tuple[Any, Any]:
    """``(mean, covariance with ddof=1)`` from accumulated sums and Gram matrix."""
    xp = am.xp
    mean = total / n
    cov = (gram - n * xp.outer(mean, mean)) / (n - 1)
    return mean, cov


def exact_pca(
    am: ArrayModule, total: Any, gram: Any, n: int, k: int, *, center: bool, seed: int | None
) -> tuple[Any, Any, Any, float, str]:
    """``(mean, eigenvalues, eigenvectors, total variance, solver)`` of the PCA from the
    accumulated column sums and Gram matrix: the leading eigenpairs of the covariance
    (``center``) or of ``X^T X`` (a truncated SVD, no centring; ``mean`` is then zero), with
    all-zero features' loadings exactly 0 and scanpy's signs. ``seed``: see
    :func:`top_eigenpairs`."""
    xp = am.xp
    mean, cov = covariance(am, total, gram, n)
    total_var = float(xp.trace(cov))
    if not center:
        mean, cov = xp.zeros_like(mean), gram
    evals, evecs, solver = top_eigenpairs(am, cov, k, seed=seed)
    evecs = zero_empty_features(am, evecs, xp.diagonal(gram))
    return mean, evals, flip_signs(am, evecs), total_var, solver


def top_eigenpairs(am: ArrayModule, cov: Any, k: int, *, seed: int | None) -> tuple[Any, Any, str]:
    """Leading ``k`` eigenpairs of the symmetric PSD ``cov`` and the solver that found them.

    ``seed=None``: :func:`top_eigh`. An integer: :func:`top_eigh_lanczos` from that seed,
    unless the problem is too small for a Krylov space of ``2k + 1`` vectors (then ``eigh``,
    as cheap) or the Lanczos iteration did not converge (then ``eigh``, and the solver says
    why: it is recorded in the step's provenance).
    """
    d = cov.shape[0]
    if seed is None:
        return (*top_eigh(am, cov, k), "eigh")
    if d <= 2 * k + 1:
        return (*top_eigh(am, cov, k), f"eigh ({d} features: too few for a Lanczos space)")
    w, v, residual = top_eigh_lanczos(am, cov, k, seed=seed)
    if residual <= LANCZOS_MAX_RESIDUAL:
        return w, v, f"lanczos (random_state={seed})"
    return (*top_eigh(am, cov, k), f"eigh (Lanczos residual {residual:.2g} did not converge)")


def top_eigh(am: ArrayModule, cov: Any, k: int) -> tuple[Any, Any]:
    """Leading ``k`` eigenvalues (descending) and eigenvectors (columns) of ``cov``."""
    xp = am.xp
    with one_thread(am):  # LAPACK's result too depends on the thread count
        w, v = xp.linalg.eigh(cov)
    return w[::-1][:k], v[:, ::-1][:, :k]


def top_eigh_lanczos(am: ArrayModule, cov: Any, k: int, *, seed: int) -> tuple[Any, Any, float]:
    """Leading ``k`` eigenpairs of ``cov`` by ``eigsh`` from scikit-learn's ARPACK start
    vector for ``seed`` (``uniform(-1, 1)`` of ``RandomState(seed)``, drawn on the host so that
    both namespaces start from the same vector), and the largest residual
    ``|cov v - lambda v|`` relative to the largest eigenvalue.

    ``eigsh``'s ``tol`` is relative to each eigenvalue in SciPy (ARPACK) but absolute on the
    Ritz residuals in CuPy, which with ``tol=0`` (machine epsilon) would iterate to
    ``maxiter`` on a covariance whose eigenvalues are ~100. Both are given the covariance
    divided by its Frobenius norm (an upper bound of the largest eigenvalue, close to it for
    a PCA's spectrum) and ``tol=1e-13``: machine precision in either reading (PBMC3k:
    components within 2e-13 of ``eigh``'s, residual 2e-15).

    Each iteration is one ``d x d`` matrix-vector product: the cost does not depend on the
    number of cells.
    """
    xp = am.xp
    d = cov.shape[0]
    norm = float(xp.sqrt((cov * cov).sum()))
    if norm == 0.0:
        return (*top_eigh(am, cov, k), 0.0)
    v0 = am.asarray(np.random.RandomState(seed).uniform(-1.0, 1.0, d))
    with one_thread(am):  # ARPACK's and the products' BLAS, as in top_eigh
        w, v = am.sparse_linalg().eigsh(cov / norm, k=k, which="LA", v0=v0, tol=1e-13)
        order = xp.argsort(-w)
        w, v = w[order] * norm, v[:, order]
        resid = xp.sqrt(((cov @ v - v * w[None, :]) ** 2).sum(axis=0))
    top = float(w[0])  # > 0: the matrix is PSD and not zero
    return w, v, float(resid.max()) / top if top > 0 else float("inf")


def top_eigh_randomized(
    am: ArrayModule,
    apply_cov: Callable[[Any], Any],
    n_features: int,
    k: int,
    *,
    seed: int = 0,
    n_oversamples: int = 20,
    n_iter: int = 30,
) -> tuple[Any, Any]:
    """Leading ``k`` eigenpairs of a symmetric PSD operator by block subspace iteration with
    QR re-orthonormalisation and a final Rayleigh-Ritz step (Halko et al. 2011)."""
    xp = am.xp
    rs = am.random_state(seed)
    with one_thread(am):
        q = rs.standard_normal((n_features, min(n_features, k + n_oversamples)))
        q, _ = xp.linalg.qr(q.astype(xp.float64))
        for _ in range(n_iter):
            q, _ = xp.linalg.qr(apply_cov(q))
        small = q.T @ apply_cov(q)
        w, u = xp.linalg.eigh((small + small.T) / 2)
        return w[::-1][:k], (q @ u)[:, ::-1][:, :k]


def zero_empty_features(am: ArrayModule, v: Any, sum_sq: Any) -> Any:
    """Set the loadings of all-zero features (``sum_sq == 0``) to exactly 0.

    Their covariance row and column are exactly zero, so every eigenvector of a non-zero
    eigenvalue is exactly zero there; the eigensolvers leave rounding noise (~1e-30) that
    depends on the last bits of the other entries, so sparse and dense input of the same
    data would disagree on it (scanpy's ARPACK on an explicit or implicit centring gives 0).
    """
    xp = am.xp
    return xp.where((sum_sq == 0)[:, None], xp.zeros((), dtype=v.dtype), v)


def flip_signs(am: ArrayModule, v: Any) -> Any:
    """Flip each column of ``v`` so that its entry of largest magnitude is positive."""
    xp = am.xp
    idx = xp.argmax(xp.abs(v), axis=0)
    signs = xp.sign(v[idx, xp.arange(v.shape[1])])
    signs = xp.where(signs == 0, 1.0, signs)
    return v * signs[None, :]


def project_block(am: ArrayModule, x: Any, mean: Any, v: Any) -> Any:
    """``(X - mean) @ V`` for one row block in float64 (sparse X stays sparse)."""
    xp = am.xp
    with one_thread(am):  # the same bits whatever runs the block (kernels.blas)
        if am.issparse(x):
            return xp.asarray(x.astype(xp.float64) @ v) - (mean @ v)[None, :]
        return (x.astype(xp.float64, order="C") - mean[None, :]) @ v  # as gram_block
