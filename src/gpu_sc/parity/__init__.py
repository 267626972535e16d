"""Parity suite: does switching backend change the results? Stage by stage, with thresholds.

>>> from gpu_sc.parity import compare
>>> report = compare(adata, ("scanpy", "numpy"))  # adata: raw counts
>>> print(report.to_markdown())
... report.passed

See :func:`compare` for the modes (isolated, end to end, rerun) and
:mod:`gpu_sc.parity.thresholds` for every bar and its reason.
"""

from .compare import compare, default_backends
from .report import ParityReport, Row
from .thresholds import THRESHOLDS, Threshold

__all__ = ["THRESHOLDS", "ParityReport", "Row", "Threshold", "compare", "default_backends"]
