"""Engine implementations of steps, named by their entries in :mod:`gpu_sc.catalogue`.

Each module adapts AnnData to the array-generic kernels of :mod:`gpu_sc.kernels` for the
``numpy`` and ``cupy`` backends. The dispatcher registers them from the catalogue on first use.
"""

from ._matrix import subset_dask  # the Dask path's lazy subsetting (gpu_sc.dask.steps)

__all__ = ["subset_dask"]
