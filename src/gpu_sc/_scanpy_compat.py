"""What differs between the scanpy releases ``pyproject.toml`` admits (1.11.5 to 1.12.x), in one
place.

The engine's signatures and parameter rules are written against scanpy 1.11.5. Where a later
scanpy changed only *how a default is spelled* (same behaviour), :func:`engine_params` gives
the engine the value it knows; scanpy itself (the fallback) and the provenance always receive
the call exactly as made. Parameters a later scanpy *added* need nothing here: the dispatcher
drops one at the installed scanpy's default and falls back to scanpy at any other value
(:func:`gpu_sc.dispatch.registry._engine_params`).

scanpy 1.12 (Python >= 3.12) against 1.11.5, for the steps the engine implements:

- ``neighbors(metric=None)``: the new default, meaning ``"euclidean"`` (as 1.11.5's default)
  when no precomputed ``distances`` are given; ``distances`` itself is new (default None).
- ``leiden(flavor=None)``: the new default, meaning ``"leidenalg"`` (1.11.5's default) with a
  FutureWarning announcing igraph as the future default.
- New parameters at a default that keeps 1.11.5's behaviour: ``normalize_total(obsm=None)``,
  ``pca(obsm=None)``, ``highly_variable_genes(filter_unexpressed_genes=None)`` (False without
  ``batch_key``; genes are always filtered per batch with one), ``tsne(n_components=2)``.

Outputs that changed (the engine reproduces the installed scanpy's):

- ``calculate_qc_metrics``: ``var['mean_*']`` (and its log1p) is the column sums in the sum's
  dtype divided by ``n_obs`` (fast-array-utils' ``stats.mean``): float32 for float32 data,
  where 1.11.5 gave float64 means (:func:`qc_var_mean`).
- ``highly_variable_genes(flavor="seurat_v3"/"seurat_v3_paper", batch_key=...)``: the
  per-batch means and variances come from ``scanpy.get.aggregate`` (Welford's online
  algorithm) instead of two-pass moments. The engine's moments differ in the last bits, which
  moves near-tied ranks, so on scanpy >= 1.12 the step runs on scanpy (:func:`engine_gap`;
  recorded as a fallback). The Dask path, which cannot fall back, keeps its two-pass moments.

scanpy's private names (a leading underscore in the module or the name) are reached only
through the functions at the end of this module, so a scanpy release that moves one breaks
here, in one place.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any

__all__ = [
    "SCANPY_VERSION",
    "check_mask",
    "choose_graph",
    "engine_gap",
    "engine_params",
    "handle_mask_var",
    "handle_sklearn_args",
    "host_function",
    "init_pos_from_paga",
    "qc_var_mean",
    "rank_genes_groups_methods",
    "sanitize_anndata",
    "scanpy_pca",
    "select_groups",
    "validate_hvg_cutoffs",
    "vector_friendly",
    "view_to_actual",
    "warn_once",
]


def _version(package: str) -> tuple[int, int]:
    from importlib.metadata import version

    major, minor = (version(package).split(".") + ["0"])[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


#: The installed scanpy's (major, minor).
SCANPY_VERSION: tuple[int, int] = _version("scanpy")


def _neighbors(params: Mapping[str, Any]) -> dict[str, Any]:
    if params.get("metric", "euclidean") is None and params.get("distances") is None:
        return {**params, "metric": "euclidean"}
    return dict(params)


def _leiden(params: Mapping[str, Any]) -> dict[str, Any]:
    if "flavor" in params and params["flavor"] is None:
        return {**params, "flavor": "leidenalg"}
    return dict(params)


# Per step: scanpy-named params -> the same call as the engine's 1.11.5 signature spells it.
_SPELLINGS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "neighbors": _neighbors,
    "leiden": _leiden,
}


def engine_params(step: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` (bound to the installed scanpy's signature) as the engine reads them."""
    spell = _SPELLINGS.get(step)
    return spell(params) if spell is not None else dict(params)


def host_function(func: Callable[..., Any]) -> Callable[..., Any]:
    """scanpy's own implementation of ``func``, below a backend dispatcher's wrapper.

    A scanpy that routes its functions through ``scverse-backends`` (``@backend_dispatch``)
    adds a ``backend`` keyword to each and may send the call to an installed backend,
    gpu_sc included. gpu_sc keeps its own ``backend`` keyword and falls back to scanpy's
    CPU code, so it reads and calls the function under the wrapper (``__wrapped__``): the
    same signature without ``backend``, and no way back into gpu_sc.
    """
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return func
    inner = getattr(func, "__wrapped__", None)
    if "backend" not in params or inner is None:
        return func
    try:
        if "backend" in inspect.signature(inner).parameters:
            return func
    except (TypeError, ValueError):
        return func
    return inner


def qc_var_mean(sums: Any, sum_dtype: Any, n_obs: int) -> Any:
    """``calculate_qc_metrics``' per-gene mean from the column ``sums`` (float64 accumulators),
    as the installed scanpy computes it: in ``sum_dtype`` (numpy's sum dtype of the data)
    from scanpy 1.12, in float64 before."""
    if SCANPY_VERSION >= (1, 12):
        return sums.astype(sum_dtype) / n_obs
    return sums / n_obs


#: ``rank_genes_groups``' variances. scanpy before 1.12 squares the values in the data's dtype
#: (its numba ``_get_mean_var``) and takes ``E[x^2] - E[x]^2``: for float32 data the squares
#: carry float32 rounding (t-test p-values ~1.6e-5 relative from the exact ones on PBMC3k).
#: scanpy 1.12 aggregates in float64 (Welford), which float64 squares reproduce to ~1e-13.
MARKER_SQUARES_IN_DATA_DTYPE: bool = SCANPY_VERSION < (1, 12)


def engine_gap(step: str, params: Mapping[str, Any]) -> str | None:
    """Why the engine cannot reproduce the installed scanpy's ``step`` with ``params``
    (the dispatcher then runs scanpy), or None. Only version-dependent gaps live here; the
    parameter values the engine never implements are declared in :mod:`gpu_sc.catalogue`."""
    if (
        step == "highly_variable_genes"
        and SCANPY_VERSION >= (1, 12)
        and params.get("flavor") in ("seurat_v3", "seurat_v3_paper")
        and params.get("batch_key") is not None
    ):
        return (
            "scanpy >= 1.12 computes seurat_v3's per-batch means and variances with Welford's "
            "algorithm (scanpy.get.aggregate), which the engine does not reproduce bit for bit"
        )
    return None


# -- scanpy's private API -------------------------------------------------------------------
# Each function imports one private scanpy name (lazily: scanpy is imported on first use) and
# passes the call through unchanged. The names and signatures were checked on scanpy 1.11.5
# (constraints.txt) and 1.12.4 (constraints-newest.txt, scripts/test_newest.sh), the two ends
# of the range pyproject.toml admits.
# Still importing scanpy's private names directly (their modules are being rewritten):
# gpu_sc/dask/steps.py (_handle_mask_var) and gpu_sc/engine/_matrix.py (_choose_mtx_rep,
# _get_obs_rep).


def handle_mask_var(adata: Any, mask_var: Any, *, use_highly_variable: Any) -> tuple[Any, Any]:
    """scanpy's ``_handle_mask_var`` (pca): ``(mask_var, mask)`` from ``mask_var`` and the
    deprecated ``use_highly_variable``, with scanpy's errors and warnings."""
    from scanpy.preprocessing._pca import _handle_mask_var

    return _handle_mask_var(adata, mask_var, use_highly_variable=use_highly_variable)


def handle_sklearn_args(svd_solver: Any, method: type, *, sparse: bool | None = None) -> Any:
    """scanpy's ``_handle_sklearn_args``: the solver scikit-learn's ``method`` runs for
    ``svd_solver``, warning when scanpy ignores the one asked for."""
    from scanpy.preprocessing._pca import _handle_sklearn_args

    if sparse is None:
        return _handle_sklearn_args(svd_solver, method)
    return _handle_sklearn_args(svd_solver, method, sparse=sparse)


def scanpy_pca() -> Callable[..., Any]:
    """scanpy's own ``pca`` (``scanpy.preprocessing._pca.pca``), below any wrapper of
    ``sc.pp.pca``."""
    from scanpy.preprocessing._pca import pca

    return pca


def check_mask(data: Any, mask: Any, dim: str) -> Any:
    """scanpy's ``scanpy.get._check_mask``: a mask given as a key or an array, checked."""
    from scanpy.get import _check_mask

    return _check_mask(data, mask, dim)


def choose_mtx_rep(adata: Any, *, use_raw: bool, layer: str | None) -> Any:
    """scanpy's ``scanpy.preprocessing._qc._choose_mtx_rep``: ``adata.raw.X``, a layer or
    ``adata.X``, with scanpy's errors."""
    from scanpy.preprocessing._qc import _choose_mtx_rep

    return _choose_mtx_rep(adata, use_raw=use_raw, layer=layer)


def get_obs_rep(adata: Any, *, layer: str | None = None, obsm: str | None = None) -> Any:
    """scanpy's ``scanpy.get._get_obs_rep`` (raises scanpy's error for a layer and an obsm)."""
    from scanpy.get import _get_obs_rep

    return _get_obs_rep(adata, layer=layer, obsm=obsm)


def choose_graph(adata: Any, obsp: str | None, neighbors_key: str | None) -> Any:
    """scanpy's ``_choose_graph``: the connectivities of ``obsp`` or ``neighbors_key``, with
    scanpy's errors."""
    from scanpy._utils import _choose_graph

    return _choose_graph(adata, obsp, neighbors_key)


def warn_once(msg: str, category: type[Warning], stacklevel: int = 1) -> None:
    """scanpy's ``warn_once``: warns, then ignores that message for the rest of the session.
    ``stacklevel`` counts from the caller, as scanpy's does."""
    from scanpy import _utils

    _utils.warn_once(msg, category, stacklevel=stacklevel + 1)


def view_to_actual(adata: Any) -> None:
    """scanpy's ``view_to_actual``: a view becomes actual, warning "Received a view of an
    AnnData. Making a copy."."""
    from scanpy._utils import view_to_actual as _view_to_actual

    _view_to_actual(adata)


def sanitize_anndata(adata: Any) -> None:
    """scanpy's ``sanitize_anndata``: string columns of ``obs``/``var`` become categorical."""
    from scanpy._utils import sanitize_anndata as _sanitize_anndata

    _sanitize_anndata(adata)


def select_groups(adata: Any, groups_order_subset: Any, key: str) -> tuple[Any, Any]:
    """scanpy's ``select_groups``: the groups' names in order and their masks."""
    from scanpy._utils import select_groups as _select_groups

    return _select_groups(adata, groups_order_subset, key)


def rank_genes_groups_methods() -> Any:
    """The ``method`` values the installed scanpy's ``rank_genes_groups`` accepts."""
    from scanpy._utils import get_literal_vals
    from scanpy.tools._rank_genes_groups import _Method

    return get_literal_vals(_Method)


def init_pos_from_paga(adata: Any, *, random_state: Any, neighbors_key: str | None) -> Any:
    """scanpy's ``get_init_pos_from_paga``: UMAP's initial positions from the PAGA layout."""
    from scanpy.tools._utils import get_init_pos_from_paga

    return get_init_pos_from_paga(adata, random_state=random_state, neighbors_key=neighbors_key)


def validate_hvg_cutoffs(**cutoffs: Any) -> Any:
    """scanpy's ``_Cutoffs.validate`` (highly_variable_genes): cutoffs given together with
    ``n_top_genes`` are ignored, with scanpy's warning."""
    from scanpy.preprocessing._highly_variable_genes import _Cutoffs

    return _Cutoffs.validate(**cutoffs)


@contextlib.contextmanager
def vector_friendly(value: bool = True) -> Iterator[None]:
    """scanpy's ``settings._vector_friendly`` (rasterized scatters in vector formats) set to
    ``value`` while the block runs, restored after."""
    from scanpy import settings

    before = settings._vector_friendly
    settings._vector_friendly = value
    try:
        yield
    finally:
        settings._vector_friendly = before
