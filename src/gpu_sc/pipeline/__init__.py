"""``gpu_sc.pipeline``: the whole scanpy PBMC3k workflow, one validated config, one call."""

from .config import ConfigError, PipelineConfig
from .run import pipeline
from .validate import InputError, validate_counts

__all__ = ["ConfigError", "InputError", "PipelineConfig", "pipeline", "validate_counts"]
