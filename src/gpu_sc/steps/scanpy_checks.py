"""What scanpy's functions warn about and reject before they compute, for the engine.

Each function here is one step's prelude, named by the step's catalogue entry
(:attr:`gpu_sc.catalogue.Step.prelude`) and called by the dispatcher just before the engine
(or the Dask path) runs the step, with the AnnData and scanpy-named parameters: it emits the
warnings scanpy 1.11 emits for those arguments (same category, same text) and raises the
exceptions scanpy raises for bad ones (same type, same text). Where scanpy has a helper that
does it, the helper itself is called, so the text cannot drift. A step that falls back to
scanpy does not run its prelude: scanpy's own function then warns.
"""

from __future__ import annotations

import warnings
from typing import Any

from .._scanpy_compat import handle_sklearn_args, validate_hvg_cutoffs, view_to_actual, warn_once
from ..dispatch.arrays import is_dask

__all__ = [
    "calculate_qc_metrics",
    "highly_variable_genes",
    "leiden",
    "normalize_total",
    "pca",
    "transforms_in_place",
    "tsne",
]


def transforms_in_place(adata, params: dict[str, Any]) -> None:
    """normalize_total, log1p, regress_out, scale: scanpy makes a view actual, warning
    "Received a view of an AnnData. Making a copy." (``scanpy._utils.view_to_actual``)."""
    view_to_actual(adata)


def normalize_total(adata, params: dict[str, Any]) -> None:
    max_fraction = params.get("max_fraction", 0.05)
    if max_fraction < 0 or max_fraction > 1:
        msg = "Choose max_fraction between 0 and 1."
        raise ValueError(msg)
    transforms_in_place(adata, params)


def calculate_qc_metrics(adata, params: dict[str, Any]) -> None:
    if params.get("parallel") is not None:
        warnings.warn(
            "Argument `parallel` is deprecated, and currently has no effect.",
            FutureWarning,
            stacklevel=4,
        )


def highly_variable_genes(adata, params: dict[str, Any]) -> None:
    """Cutoffs given together with ``n_top_genes`` are ignored, with scanpy's warning."""
    if params.get("flavor") in ("seurat_v3", "seurat_v3_paper"):
        return

    validate_hvg_cutoffs(
        **{
            k: params[k]
            for k in ("n_top_genes", "min_disp", "max_disp", "min_mean", "max_mean")
            if k in params
        }
    )


def pca(adata, params: dict[str, Any]) -> None:
    """scanpy's handling of ``svd_solver``: a solver its implementation for this input does
    not offer (PCA's, or TruncatedSVD's with ``zero_center=False``) is ignored with a warning
    (``_handle_sklearn_args``); ``lobpcg`` on sparse input
    is deprecated (FutureWarning); a sparse Dask matrix ignores ``random_state`` and
    ``svd_solver`` with warnings. The engine's eigensolver follows the solver only in whether
    ``random_state`` matters (:func:`gpu_sc.engine.pca.eigen_seed`)."""

    if params.get("chunked"):
        return  # scanpy's chunked path (the engine does not run it)
    layer = params.get("layer")
    if layer is not None and layer not in adata.layers:
        return  # the step reports the missing layer
    x = adata.X if layer is None else adata.layers[layer]
    svd_solver, random_state = params.get("svd_solver"), params.get("random_state")
    sparse = hasattr(x, "nnz") or hasattr(x, "tocsr")
    if not params.get("zero_center", True):
        # scanpy's TruncatedSVD path: a solver it does not offer is ignored with a warning
        if not is_dask(x):
            from sklearn.decomposition import TruncatedSVD

            handle_sklearn_args(svd_solver, TruncatedSVD)
        return
    if is_dask(x):
        meta_sparse = hasattr(getattr(x, "_meta", None), "nnz")
        if meta_sparse or svd_solver == "covariance_eigh":
            if random_state != 0:
                msg = f"Ignoring {random_state=} when using a sparse dask array"
                warnings.warn(msg, UserWarning, stacklevel=4)
            if svd_solver not in {None, "covariance_eigh"}:
                msg = f"Ignoring {svd_solver=} when using a sparse dask array"
                warnings.warn(msg, UserWarning, stacklevel=4)
        return
    if sparse and svd_solver == "lobpcg":
        msg = (
            f"{svd_solver=} for sparse relies on legacy code and will not be supported in the "
            "future. Also the lobpcg solver has been observed to be inaccurate. Please use "
            "'arpack' instead."
        )
        warnings.warn(msg, FutureWarning, stacklevel=4)
        return
    from sklearn.decomposition import PCA

    handle_sklearn_args(svd_solver, PCA, sparse=sparse)


def tsne(adata, params: dict[str, Any]) -> None:
    """scanpy's notes on ``n_jobs`` and ``use_fast_tsne`` (the engine computes the same
    embedding whatever they are)."""
    from scanpy import settings as sc_settings

    n_jobs = params.get("n_jobs")
    n_jobs = sc_settings.n_jobs if n_jobs is None else n_jobs
    use_fast_tsne = params.get("use_fast_tsne", False)
    if n_jobs != 1 and not use_fast_tsne:
        warnings.warn(
            "In previous versions of scanpy, calling tsne with n_jobs > 1 would use "
            "MulticoreTSNE. Now this uses the scikit-learn version of TSNE by default. "
            "If you'd like the old behaviour (which is deprecated), pass "
            "'use_fast_tsne=True'. Note, MulticoreTSNE is not actually faster anymore.",
            UserWarning,
            stacklevel=4,
        )
    if use_fast_tsne:
        warnings.warn(
            "Argument `use_fast_tsne` is deprecated, and support for MulticoreTSNE "
            "will be dropped in a future version of scanpy.",
            FutureWarning,
            stacklevel=4,
        )
        try:
            import MulticoreTSNE  # noqa: F401
        except ImportError:
            warnings.warn(
                "Could not import 'MulticoreTSNE'. Falling back to scikit-learn.",
                UserWarning,
                stacklevel=4,
            )


def leiden(adata, params: dict[str, Any]) -> None:
    """scanpy's argument checks of the two flavours, and its note on the default one."""
    flavor = params.get("flavor")
    if flavor not in {"igraph", "leidenalg"}:
        msg = f"flavor must be either 'igraph' or 'leidenalg', but {flavor!r} was passed"
        raise ValueError(msg)
    if flavor == "igraph":
        if params.get("directed"):
            msg = "Cannot use igraph’s leiden implementation with a directed graph."
            raise ValueError(msg)
        if params.get("partition_type") is not None:
            msg = "Do not pass in partition_type argument when using igraph."
            raise ValueError(msg)
        return

    try:
        import leidenalg  # noqa: F401
    except ImportError as e:
        msg = (
            "Please install the leiden algorithm: `conda install -c conda-forge leidenalg` "
            "or `pip3 install leidenalg`."
        )
        raise ImportError(msg) from e
    msg = (
        "In the future, the default backend for leiden will be igraph instead of leidenalg.\n\n"
        ' To achieve the future defaults please pass: flavor="igraph" and n_iterations=2.  '
        "directed must also be False to work with igraph's implementation."
    )
    warn_once(msg, FutureWarning, stacklevel=3)  # scanpy's call: warned once in all
