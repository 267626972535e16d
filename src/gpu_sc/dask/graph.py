"""The Dask graph's building blocks, now :mod:`gpu_sc.engine.dask_rows` (beside the in-memory
executor, below the Dask steps that use them); re-exported here under their former names."""

from ..engine.dask_rows import *  # noqa: F403
from ..engine.dask_rows import __all__  # noqa: F401
