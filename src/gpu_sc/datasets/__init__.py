"""Data sets: the real 10x PBMC3k matrix, a synthetic atlas generator, and file readers."""

from .pbmc3k import pbmc3k
from .readers import read
from .synthetic import synthetic

__all__ = ["pbmc3k", "read", "synthetic"]
