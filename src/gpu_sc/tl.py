"""Tools (``gpu_sc.tl``): scanpy's ``tl`` names, parameters and outputs."""

import scanpy as _sc

from . import pp as _pp
from .steps import make_step as _make

pca = _pp.pca  # scanpy exposes pca in both namespaces
leiden = _make("leiden", _sc.tl.leiden, "tl")
paga = _make("paga", _sc.tl.paga, "tl")
umap = _make("umap", _sc.tl.umap, "tl")
tsne = _make("tsne", _sc.tl.tsne, "tl")
rank_genes_groups = _make("rank_genes_groups", _sc.tl.rank_genes_groups, "tl")

__all__ = ["leiden", "paga", "pca", "rank_genes_groups", "tsne", "umap"]
