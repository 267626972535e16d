"""Data sets: the real 10x PBMC3k matrix, a synthetic atlas generator, and file readers."""

from .lazy import read_lazy
from .pbmc3k import pbmc3k
from .readers import read
from .synthetic import synthetic
from .synthetic_h5ad import write_synthetic_h5ad

__all__ = ["pbmc3k", "read", "read_lazy", "synthetic", "write_synthetic_h5ad"]
