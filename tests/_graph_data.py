"""Inputs shared by the neighbour-graph and embedding tests, built once per session."""

from __future__ import annotations

import functools
import warnings

import scanpy as sc

_PBMC_CACHE: dict[int, object] = {}


def pbmc3k_tutorial(raw):
    """PBMC3k after scanpy's clustering tutorial preprocessing, with ``X_pca`` (scanpy's PCA).

    ``raw`` is the session's ``pbmc3k_raw`` fixture (not modified). Cached for the session:
    callers must copy before mutating.
    """
    if id(raw) not in _PBMC_CACHE:
        _PBMC_CACHE[id(raw)] = _tutorial(raw.copy())
    return _PBMC_CACHE[id(raw)]


def _tutorial(adata):
    sc.pp.filter_cells(adata, min_genes=200)
    sc.pp.filter_genes(adata, min_cells=3)
    adata.var["mt"] = adata.var_names.str.startswith("MT-")
    sc.pp.calculate_qc_metrics(adata, qc_vars=["mt"], percent_top=None, log1p=False, inplace=True)
    adata = adata[(adata.obs.n_genes_by_counts < 2500) & (adata.obs.pct_counts_mt < 5)].copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sc.pp.highly_variable_genes(adata, min_mean=0.0125, max_mean=3, min_disp=0.5)
    adata = adata[:, adata.var.highly_variable].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.regress_out(adata, ["total_counts", "pct_counts_mt"])
    sc.pp.scale(adata, max_value=10)
    sc.pp.pca(adata, svd_solver="arpack")
    return adata


@functools.cache
def synthetic_atlas(n_cells: int, difficulty: str = "separated"):
    """A synthetic atlas normalised, log-transformed, with 50 PCs (scanpy). Copy before use."""
    import gpu_sc

    adata = gpu_sc.datasets.synthetic(n_cells, n_genes=2000, n_types=8, difficulty=difficulty)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sc.pp.pca(adata, n_comps=50)
    return adata


def assert_ran_on_engine(adata, step: str, backend: str) -> None:
    """The last recorded step is ``step`` and it ran on ``backend`` (no fallback to scanpy)."""
    from gpu_sc.provenance import last as last_record

    last = last_record(adata)
    assert (last["step"], last["backend"]) == (step, backend), last
