"""Array-generic numerical kernels: written once against an
:class:`~gpu_sc.dispatch.ArrayModule`, they run unchanged on NumPy/SciPy and on CuPy/cupyx.

Calling convention (checked by ``tests/test_kernel_conventions.py``):

* Public kernels take ``am: ArrayModule`` first, positionally and required: no ``None``
  default, no inference from the arrays (:func:`~gpu_sc.dispatch.arrays.module_of`) inside a
  kernel. The caller (engine step, Dask block function, parity stage, test) decides which
  array library a kernel computes with, e.g. ``knn(am, X, k)``, ``leiden(am, adjacency)``.
* Private helpers (leading underscore) may take ``am`` or just its dense namespace
  ``am.xp`` (``xp``).
* Host-only functions are exempt: they only ever use NumPy/pandas/SciPy on host data (small
  per-gene tables, host metrics, Python ranges) and take no array module. They are
  ``chunks.stack_rows``, ``embedding_quality.kl_divergence``,
  ``embedding_quality.neighbourhood_preservation``, ``embedding_quality.trustworthiness``,
  ``hvg.mean_var``, ``hvg.dispersion_table``, ``hvg.select_cutoffs``, ``hvg.select_top``,
  ``hvg.seurat_v3_norm_var``, ``hvg.seurat_table``, ``hvg.seurat_v3_fits``,
  ``hvg.seurat_v3_table``, ``ivf.default_nlist``, ``ivf.default_nprobe`` (sizes from
  sizes), ``markers.gene_blocks``,
  ``qc.qc_tables``, ``regress.categorical_fit``, ``score_genes.control_genes`` and
  ``umap.find_ab_params``.
"""
