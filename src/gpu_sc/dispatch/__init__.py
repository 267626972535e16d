"""Backend selection, array namespaces, the step registry and provenance.

Data flow of one step call (``gpu_sc.pp.normalize_total(adata, backend="auto")``)::

    gpu_sc.backends.resolve("auto") -> the cupy or scanpy Backend (+ why), once per call
    backend.implementation("normalize_total") -> engine implementation or None
    run_step(): engine function on backend.array_module(); GPU resource error -> chunked retry
                -> scanpy fallback; every call logged (gpu_sc.provenance.history()), and
                appended to adata.uns["gpu_sc"]["provenance"] inside the pipeline
"""

from .arrays import ArrayModule, array_module, module_of
from .backends import (
    BACKENDS,
    CudaStatus,
    canonical_backend_name,
    cuda_status,
    resolve_backend,
)
from .registry import (
    EngineUnsupported,
    FallbackError,
    engine_impl,
    implemented_steps,
    register,
    run_step,
    strict_mode,
)

__all__ = [
    "BACKENDS",
    "ArrayModule",
    "CudaStatus",
    "EngineUnsupported",
    "FallbackError",
    "array_module",
    "canonical_backend_name",
    "cuda_status",
    "engine_impl",
    "implemented_steps",
    "module_of",
    "register",
    "resolve_backend",
    "run_step",
    "strict_mode",
]
