"""Per-row and per-column reductions of dense and sparse matrices, array-generic.

Sums are accumulated in float64 (as scanpy's numba kernels do). A row reduction of a CSR
matrix is a sparse matrix-vector product with a vector of ones (one row per segment); a column
reduction first converts the matrix to the other compressed format (a sort) and then reduces
its rows the same way. No floating-point scatter-add is used here; on CuPy the row reduction
is cuSPARSE's CSR SpMV (its run-to-run reproducibility is pinned by the GPU test
``test_results_are_bitwise_reproducible[cupy]``).
"""

from __future__ import annotations

from typing import Any

from ..dispatch.arrays import ArrayModule

__all__ = [
    "as_csr",
    "axis_nnz",
    "axis_sum",
    "axis_sum_sq",
    "with_data",
]


def with_data(am: ArrayModule, x: Any, data: Any) -> Any:
    """A sparse matrix with the structure of CSR/CSC ``x`` and new ``data`` (same length)."""
    cls = am.sparse.csr_matrix if x.format == "csr" else am.sparse.csc_matrix
    return cls((data, x.indices, x.indptr), shape=x.shape)


def as_csr(am: ArrayModule, x: Any) -> Any:
    """``x`` as CSR when sparse (CSC is converted; dense is returned unchanged)."""
    if am.issparse(x) and x.format != "csr":
        return x.tocsr()
    return x


def _major_sum(am: ArrayModule, x: Any, values: Any) -> Any:
    """Sum ``values`` (aligned with ``x.data``) over each major segment (row of CSR, column
    of CSC), in float64, as a sparse matrix-vector product."""
    xp = am.xp
    m = am.sparse.csr_matrix(
        (values.astype(xp.float64, copy=False), x.indices, x.indptr),
        shape=(x.indptr.size - 1, x.shape[1] if x.format == "csr" else x.shape[0]),
    )
    return xp.asarray(m @ xp.ones(m.shape[1], dtype=xp.float64)).ravel()


def _oriented(am: ArrayModule, x: Any, axis: int) -> Any:
    """``x`` in the compressed format whose major segments are the ones reduced for ``axis``
    (``axis=1``: rows, so CSR; ``axis=0``: columns, so CSC)."""
    want = "csr" if axis == 1 else "csc"
    return x if x.format == want else x.asformat(want)


def axis_sum(am: ArrayModule, x: Any, axis: int, transform=None) -> Any:
    """Float64 sum of ``transform(x)`` along ``axis`` (``transform`` maps the stored values,
    it must map 0 to 0). Dense input is summed by the array library's reduction."""
    xp = am.xp
    if am.issparse(x):
        xo = _oriented(am, x, axis)
        data = xo.data.astype(xp.float64)
        return _major_sum(am, xo, data if transform is None else transform(data))
    data = x if transform is None else transform(x)
    return xp.sum(data, axis=axis, dtype=xp.float64)


def axis_sum_sq(am: ArrayModule, x: Any, axis: int) -> Any:
    """Float64 sum of squares along ``axis``, squared the way scanpy's ``_get_mean_var`` squares:
    sparse values in float64, dense values in their own dtype (``elem_mul(x, x)``)."""
    xp = am.xp
    if am.issparse(x):
        return axis_sum(am, x, axis, transform=lambda d: d * d)
    return xp.sum(x * x, axis=axis, dtype=xp.float64)


def axis_nnz(am: ArrayModule, x: Any, axis: int) -> Any:
    """Number of nonzero values along ``axis`` (explicit zeros not counted), int64."""
    xp = am.xp
    if am.issparse(x):
        xo = _oriented(am, x, axis)
        return _major_sum(am, xo, (xo.data != 0)).astype(xp.int64)
    return xp.count_nonzero(x, axis=axis).astype(xp.int64)
