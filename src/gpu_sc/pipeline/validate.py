"""Input checks at the pipeline's boundary, each failure naming the problem and the remedy."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import scipy.sparse as sp

from ..dispatch.arrays import array_module, is_dask, is_device_array
from ..dispatch.registry import InputError
from ..kernels.qc import value_summary

__all__ = ["InputError", "prepare_counts", "validate_counts"]

logger = logging.getLogger("gpu_sc")


def _values(X) -> np.ndarray:
    if is_device_array(X):
        # CuPy forbids np.asarray on device arrays, and a cupyx matrix is no scipy.sparse
        # matrix (it became a 0-d object array): move it to host explicitly.
        X = X.get()
    return X.data if sp.issparse(X) else np.asarray(X).ravel()


def _on_device(X) -> bool:
    return is_device_array(X)


def validate_counts(adata, *, require_integers: bool = True, qc_on: str | None = None) -> None:
    """Check that ``adata.X`` holds a usable raw count matrix.

    Raises :class:`InputError` for an empty matrix, NaN/Inf, negative values, an all-zero
    matrix, duplicate cell names, or (``require_integers``) non-integer values.
    """
    n_obs, n_vars = adata.shape
    if n_obs == 0 or n_vars == 0:
        raise InputError(
            f"the matrix is empty ({n_obs} cells x {n_vars} genes); nothing to analyse"
        )
    X = adata.X
    if X is None:
        raise InputError("adata.X is None; put the raw count matrix in adata.X")
    if not np.issubdtype(np.dtype(X.dtype), np.number):
        raise InputError(f"adata.X has non-numeric dtype {X.dtype}; counts must be numbers")
    s = _summary(X)
    if s["nonfinite"]:
        raise InputError(
            f"adata.X contains {s['nonfinite']} NaN or infinite value(s); raw counts must be "
            "finite. Check how the matrix was produced, or drop the affected cells/genes."
        )
    if not s["nonzero"]:
        raise InputError("adata.X is all zeros; every cell has zero counts")
    if s["negative"]:
        raise InputError(
            f"adata.X contains negative values (min {s['min']:g}); the pipeline needs raw "
            "counts. Pass the unnormalised matrix (e.g. adata.raw or layers['counts'])."
        )
    if not require_integers and qc_on and s["fractional"]:
        # normalize_total and log1p are off: fine for a normalised matrix, but QC reads it too
        warnings.warn(
            f"adata.X does not look like counts (non-integer values, e.g. {s['example']:g}, "
            f"smallest {s['min']:g}) and {qc_on} run on it as given: total_counts, "
            "pct_counts_mt and the filters' thresholds then count normalised values; pass raw "
            "counts, or disable those steps",
            UserWarning,
            stacklevel=3,
        )
    if require_integers:
        if s["fractional"]:
            example = s["example"]
            raise InputError(
                f"adata.X holds non-integer values (e.g. {example:g}) but the pipeline starts "
                "from raw UMI counts. Pass raw counts, or disable normalize_total and log1p "
                "in the config if the matrix is already normalised."
            )
    if not adata.obs_names.is_unique:
        dup = adata.obs_names[adata.obs_names.duplicated()][0]
        raise InputError(
            f"duplicate cell names (e.g. {dup!r}); call adata.obs_names_make_unique() first"
        )


def _summary(X) -> dict:
    """Count what :func:`validate_counts` checks, from the stored values of ``X``.

    A Dask array: one pass over its blocks, never the whole matrix in memory.
    """
    if is_dask(X):
        from ..dask.steps import value_summary as dask_value_summary  # the Dask path, on use

        return dask_value_summary(X)
    if not (sp.issparse(X) or isinstance(X, np.ndarray) or _on_device(X)):
        X = np.asarray(X)
    return value_summary(array_module("numpy"), _values(X))  # host values, as before


def prepare_counts(adata) -> None:
    """Bring ``adata.X`` to a dtype every backend computes correctly, in place.

    float16 becomes float32, with a logged warning: the engine would otherwise compute in
    float16 (counts above 2048 lose integers, the HVG set and the clusters change) and
    scanpy's numba kernels raise ``NotImplementedError: float16``. Any other dtype is left
    as it is; idempotent, and free unless X is float16. Call it on the object the pipeline
    works on, after :func:`validate_counts` (a view is first made an actual AnnData).
    """
    X = adata.X
    if X is not None and getattr(X, "dtype", None) == np.float16:
        logger.warning(
            "gpu_sc: adata.X is float16; converted to float32 (float16 is not computed "
            "correctly: scanpy's kernels reject it and it holds integers only up to 2048)"
        )
        X = X.astype(np.float32)
        if adata.is_view:  # a view's X setter writes back into the float16 parent
            adata._init_as_actual(adata.copy())
        adata.X = X
