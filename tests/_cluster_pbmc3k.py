"""PBMC3k through the scanpy tutorial up to its clusters, built once per test session.

Shared by the Leiden, PAGA and marker tests so the ~15 s of preprocessing run once;
callers must copy before mutating (``tutorial_clusters().copy()``).
"""

from __future__ import annotations

import scanpy as sc


def preprocess(adata):
    """The tutorial's QC, normalisation (``.raw`` frozen on all genes), HVGs, regression,
    scaling, PCA (arpack) and neighbors (``n_neighbors=10, n_pcs=40``)."""
    sc.pp.filter_cells(adata, min_genes=200)
    sc.pp.filter_genes(adata, min_cells=3)
    adata.var["mt"] = adata.var_names.str.startswith("MT-")
    sc.pp.calculate_qc_metrics(adata, qc_vars=["mt"], percent_top=None, log1p=False, inplace=True)
    adata = adata[adata.obs.n_genes_by_counts < 2500, :]
    adata = adata[adata.obs.pct_counts_mt < 5, :].copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    adata.raw = adata
    sc.pp.highly_variable_genes(adata, min_mean=0.0125, max_mean=3, min_disp=0.5)
    adata = adata[:, adata.var.highly_variable]
    sc.pp.regress_out(adata, ["total_counts", "pct_counts_mt"])
    sc.pp.scale(adata, max_value=10)
    sc.tl.pca(adata, svd_solver="arpack")
    sc.pp.neighbors(adata, n_neighbors=10, n_pcs=40)
    return adata


_CACHE: dict[int, object] = {}


def tutorial_clusters(pbmc3k_raw):
    """Preprocessed PBMC3k with scanpy's igraph Leiden (the tutorial's parameters) in
    ``obs['leiden']``; computed once per session from the ``pbmc3k_raw`` fixture."""
    key = id(pbmc3k_raw)
    if key not in _CACHE:
        adata = preprocess(pbmc3k_raw.copy())
        sc.tl.leiden(
            adata, resolution=0.9, flavor="igraph", n_iterations=2, directed=False, random_state=0
        )
        _CACHE[key] = adata
    return _CACHE[key]
