"""Preprocessing steps (``gpu_sc.pp``): scanpy's ``pp`` names, parameters and outputs."""

import scanpy as _sc

from .steps import make_step as _make

calculate_qc_metrics = _make("calculate_qc_metrics", _sc.pp.calculate_qc_metrics, "pp")
filter_cells = _make("filter_cells", _sc.pp.filter_cells, "pp")
filter_genes = _make("filter_genes", _sc.pp.filter_genes, "pp")
normalize_total = _make("normalize_total", _sc.pp.normalize_total, "pp")
log1p = _make("log1p", _sc.pp.log1p, "pp")
highly_variable_genes = _make("highly_variable_genes", _sc.pp.highly_variable_genes, "pp")
regress_out = _make("regress_out", _sc.pp.regress_out, "pp")
scale = _make("scale", _sc.pp.scale, "pp")
pca = _make("pca", _sc.pp.pca, "pp")
neighbors = _make("neighbors", _sc.pp.neighbors, "pp")

__all__ = [
    "calculate_qc_metrics",
    "filter_cells",
    "filter_genes",
    "highly_variable_genes",
    "log1p",
    "neighbors",
    "normalize_total",
    "pca",
    "regress_out",
    "scale",
]
