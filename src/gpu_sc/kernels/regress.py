"""``regress_out`` as one batched least-squares solve for all genes, array-generic.

Continuous covariates: scanpy solves ``coeff = inv(R^T R) @ (R^T X)`` for all genes at once
in float64 and subtracts ``R @ coeff`` from the float32 data; we do the same with the normal
equations accumulated over row blocks (``R^T R`` and ``R^T X``).

One categorical covariate: scanpy fits, per gene, a Gaussian GLM on ``[1, m]`` where ``m`` is
each cell's category mean of that gene (float32). The closed-form simple regression
``b = cov(y, m) / var(m)``, ``a = mean(y) - b mean(m)`` gives the same fit; every sum it needs
follows from per-category gene sums, so all genes are solved at once here too. Constant genes
are returned unchanged (scanpy skips them).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..dispatch.arrays import ArrayModule
from .blas import one_thread

__all__ = [
    "categorical_fit",
    "categorical_residuals",
    "dense",
    "group_sums",
    "normal_equations",
    "ols_residuals",
]


def dense(am: ArrayModule, x: Any) -> Any:
    """Dense version of a block (scanpy densifies sparse input for regress_out)."""
    return x.toarray() if am.issparse(x) else x


def normal_equations(am: ArrayModule, x: Any, r: Any) -> tuple[Any, Any]:
    """``(R^T R, R^T X)`` in float64 for one row block (``r``: float64 regressors)."""
    xp = am.xp
    with one_thread(am):  # the same bits whatever runs the block (kernels.blas)
        return r.T @ r, r.T @ dense(am, x).astype(xp.float64)


def ols_residuals(am: ArrayModule, x: Any, r: Any, coeff: Any, out_dtype) -> Any:
    """``x - r @ coeff`` computed in float64 and stored in ``out_dtype`` (scanpy's get_resid)."""
    xp = am.xp
    with one_thread(am):
        return (dense(am, x).astype(xp.float64) - r @ coeff).astype(out_dtype)


def group_sums(am: ArrayModule, x: Any, codes: Any, n_groups: int) -> dict[str, Any]:
    """Per category and gene: float64 sums and counts; per gene: first value, min and max
    (for the constant-gene test)."""
    xp = am.xp
    xd = dense(am, x)
    sums = xp.stack(
        [xp.sum(xd[xp.flatnonzero(codes == g)], axis=0, dtype=xp.float64) for g in range(n_groups)]
    )
    counts = xp.stack([xp.count_nonzero(codes == g) for g in range(n_groups)]).astype(xp.int64)
    return {"sum": sums, "n": counts, "min": xd.min(axis=0), "max": xd.max(axis=0)}


def categorical_fit(sums: np.ndarray, counts: np.ndarray, n_obs: int) -> dict[str, np.ndarray]:
    """Per-gene intercept ``a`` and slope ``b`` of ``y ~ 1 + m`` from category sums (host,
    float64); ``m`` is the float32 category mean as scanpy builds it."""
    safe = np.maximum(counts, 1)[:, None]
    means = (sums / safe).astype(np.float32).astype(np.float64)  # (n_groups, n_genes)
    w = counts[:, None].astype(np.float64)
    sum_y = sums.sum(axis=0)
    sum_m = (w * means).sum(axis=0)
    sum_mm = (w * means * means).sum(axis=0)
    sum_ym = (sums * means).sum(axis=0)
    sxx = sum_mm - sum_m**2 / n_obs
    sxy = sum_ym - sum_y * sum_m / n_obs
    ok = sxx > 0
    b = np.where(ok, sxy / np.where(ok, sxx, 1.0), 0.0)
    a = (sum_y - b * sum_m) / n_obs
    return {"means": means, "a": a, "b": b}


def categorical_residuals(
    am: ArrayModule, x: Any, codes: Any, means: Any, a: Any, b: Any, constant: Any
) -> Any:
    """``y - a - b * m`` per cell and gene in float64; constant genes keep their values."""
    xp = am.xp
    y = dense(am, x).astype(xp.float64)
    m = means[codes]
    resid = y - a[None, :] - b[None, :] * m
    return xp.where(constant[None, :], y, resid)
