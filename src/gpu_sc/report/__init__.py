"""HTML report of a pipeline result (the PBMC3k tutorial's figures and tables), and cluster
annotation. ``gpu_sc.report(adata, out_dir)`` is :func:`gpu_sc.report.build.report`."""

from .annotation import AnnotationError, apply_annotation, read_mapping
from .build import MARKER_GENES, report

__all__ = ["MARKER_GENES", "AnnotationError", "apply_annotation", "read_mapping", "report"]
