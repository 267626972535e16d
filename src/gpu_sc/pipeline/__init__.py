"""``gpu_sc.pipeline``: the whole scanpy PBMC3k workflow, one validated config, one call."""

from .config import ConfigError, PipelineConfig
from .run import Runner, StepHook, pipeline
from .validate import InputError, validate_counts

__all__ = [
    "ConfigError",
    "InputError",
    "PipelineConfig",
    "Runner",
    "StepHook",
    "pipeline",
    "validate_counts",
]
