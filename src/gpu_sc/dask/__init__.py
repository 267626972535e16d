"""The Dask path: preprocessing steps on AnnData whose ``X`` is a Dask array of row blocks.

Blocks are NumPy/SciPy on CPU workers (``distributed``) or CuPy/cupyx on GPU workers
(``dask-cuda``); every step maps the array-generic kernels of :mod:`gpu_sc.kernels` over the
blocks, adds per-block statistics by fixed-order tree sums and keeps the matrix lazy. Open a
file with :func:`gpu_sc.datasets.read_lazy`; everything after PCA works on the in-memory PCA
matrix.

- :data:`DASK_STEPS`: step name -> ``func(adata, ctx, **scanpy_params)`` (the in-memory
  engine's signature), for a step catalogue to register as one more way to run a step;
- :func:`gpu_sc.pipeline.on_dask.run_dask_step`: one public step on the Dask matrix
  (provenance backend ``"dask"``) and :func:`gpu_sc.pipeline.on_dask.run_qc_to_pca`:
  :func:`gpu_sc.pipeline` from the filters to PCA (above this package: they call the public
  steps and the pipeline);
- :func:`dask_info`: scheduler, worker count and block size, for provenance.
"""

from typing import Any

from .. import catalogue
from ..dispatch.arrays import dask_info

#: Step name -> Dask implementation ``func(adata, ctx, **scanpy_params)`` (the in-memory
#: engine's signature), derived from the catalogue's ``Step.dask`` entries.
DASK_STEPS: dict[str, Any] = {
    s.name: catalogue.resolve(s.dask) for s in catalogue.STEPS if s.dask is not None
}

__all__ = ["DASK_STEPS", "dask_info"]
