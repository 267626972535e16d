"""gpu_sc: the scanpy single-cell workflow on the GPU with CuPy alone, scanpy's CPU path otherwise.

>>> import gpu_sc
>>> adata = gpu_sc.datasets.pbmc3k()
>>> gpu_sc.pipeline(adata)            # backend="auto": cupy if CUDA answers, else scanpy
>>> adata.uns["gpu_sc"]["provenance"]  # per step: backend, params, seconds, fallback
"""

__version__ = "0.1.0"

from . import datasets, pp, tl  # noqa: E402
from ._settings import settings, use_backend  # noqa: E402
from .pipeline import PipelineConfig, pipeline  # noqa: E402
from .report import report  # noqa: E402

__all__ = ["PipelineConfig", "datasets", "pipeline", "pp", "report", "settings", "tl", "use_backend"]
