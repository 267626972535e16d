"""Every threshold of the parity suite, in one place, each with the reason for its value.

A row of a :class:`~gpu_sc.parity.ParityReport` names its metric; :data:`THRESHOLDS` maps that
metric to the bar it must clear. Metrics without an entry are reported for information only
(number of clusters, modularity, each side's own embedding quality, ...).

Rule: **a threshold is never loosened to make a run pass.** A value that misses its bar is a
finding to report (and to fix in the engine), not a reason to edit this file.

Modes a threshold applies to:

* ``"isolated"``: stage *k* of backend B fed with backend A's output of stage *k-1*; measures
  the stage's own numerical error.
* ``"e2e"``: the whole pipeline on each backend, compared at each stage's outputs (cells and
  genes aligned by name); measures what a user sees, upstream differences included.
* ``"repeat"``: backend B run twice on the same input with the same seed (determinism).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .. import catalogue

__all__ = [
    "KNN_EXACT_MAX_CELLS",
    "PCA_N_COMPONENTS",
    "THRESHOLDS",
    "Threshold",
    "threshold_for",
]

#: scanpy's ``neighbors`` computes exact kNN (scikit-learn, brute force) below this many cells
#: and approximate kNN (pynndescent) from it on (``scanpy/neighbors/__init__.py``:
#: ``n_obs < 4096``). The kNN-overlap bar only binds when both sides are exact.
KNN_EXACT_MAX_CELLS = 4096

#: Number of leading principal components whose correlation is checked.
PCA_N_COMPONENTS = 30

#: Neighbourhood size of the embedding-quality scores (the issue: "each cell's 15
#: high-dimensional neighbours").
EMBEDDING_K = 15

#: Top genes per cluster compared between the two sides' marker lists.
MARKER_TOP_N = 25

#: A cluster pair counts as "the same cluster" for the marker comparison when its cell sets'
#: Jaccard index reaches this. End to end, Leiden can regroup a few percent of cells (ARI, gated
#: on its own, says by how much): on PBMC3k at resolution 0.9 it yields 7 or 8 clusters (CD8 T
#: and NK merge) depending on last-bit BLAS differences between machines, and a cluster that
#: gained or lost many cells has other top genes for that reason alone. Marker overlap is gated
#: on pairs at or above this bar; pairs below it are reported, ungated.
MARKER_MATCH_JACCARD = 0.95

BOTH = ("isolated", "e2e")


@dataclass(frozen=True)
class Threshold:
    """A bar ``value OP threshold`` for one metric.

    Attributes
    ----------
    op
        ``">="``, ``"<="``, ``"=="`` or ``"abs<="`` (absolute value at most; for differences
        that may have either sign).
    value
        The threshold.
    modes
        The modes it binds in; in other modes the metric is reported for information.
    why
        The reason for the value (shown in the documentation and the JSON).
    exact_only
        It binds only when backend B ran at ``precision="exact"``: a bar of float64
        arithmetic, informational under ``"fast"`` (where the other bars of the stage gate).
    """

    op: str
    value: float
    modes: tuple[str, ...]
    why: str
    exact_only: bool = False

    def check(self, x: float) -> bool:
        """Whether ``x`` clears the bar (NaN never does)."""
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return False
        if self.op == ">=":
            return x >= self.value
        if self.op == "<=":
            return x <= self.value
        if self.op == "==":
            return x == self.value
        if self.op == "abs<=":
            return abs(x) <= self.value
        raise ValueError(f"unknown threshold operator {self.op!r}")

    def describe(self) -> str:
        """Human-readable bar, e.g. ``">= 0.9999"`` or ``"|x| <= 0.02"``."""
        value = f"{self.value:.6g}"
        return f"|x| <= {value}" if self.op == "abs<=" else f"{self.op} {value}"


_FLOAT32_ROUNDING = (
    "float32 rounding: QC sums are exact in float64 and a few float32 operations per value "
    "(scale by size factor, log1p) keep the relative error below ~1e-6"
)
_PCA_CORR = 0.9999

#: metric name -> threshold. Metric names are unique across stages.
THRESHOLDS: dict[str, Threshold] = {
    # -- every stage ---------------------------------------------------------------------------
    "outputs_present": Threshold(
        "==",
        1.0,
        (*BOTH, "repeat"),
        "the engine must write every output where scanpy writes it (keys, obs/var columns)",
    ),
    # -- QC, filters, normalisation ----------------------------------------------------------
    "cells_jaccard": Threshold(
        "==", 1.0, BOTH, "cell filters compare integer counts with integer bounds: exact"
    ),
    "genes_jaccard": Threshold(
        "==", 1.0, BOTH, "gene filters compare integer counts with integer bounds: exact"
    ),
    "n_genes_max_rel_diff": Threshold("<=", 1e-6, BOTH, _FLOAT32_ROUNDING),
    "n_cells_max_rel_diff": Threshold("<=", 1e-6, BOTH, _FLOAT32_ROUNDING),
    "qc_obs_max_rel_diff": Threshold("<=", 1e-6, BOTH, _FLOAT32_ROUNDING),
    "qc_var_max_rel_diff": Threshold("<=", 1e-6, BOTH, _FLOAT32_ROUNDING),
    "normalized_max_rel_diff": Threshold("<=", 1e-6, BOTH, _FLOAT32_ROUNDING),
    "log1p_max_rel_diff": Threshold("<=", 1e-6, BOTH, _FLOAT32_ROUNDING),
    # -- HVG ---------------------------------------------------------------------------------
    "hvg_jaccard": Threshold(
        "==", 1.0, BOTH, "the gene set decides every later stage; any difference changes biology"
    ),
    # -- regress_out, scale --------------------------------------------------------------------
    "regress_out_max_rel_diff": Threshold(
        "<=",
        1e-4,
        BOTH,
        "per-gene least squares on float32 data; relative to max(|value|, the gene's SD), since "
        "residuals near zero make a pure elementwise ratio meaningless",
    ),
    "scale_max_rel_diff": Threshold(
        "<=",
        1e-4,
        BOTH,
        "same measure and bar as regress_out: its input carries regress_out's error end to end",
    ),
    # -- PCA -----------------------------------------------------------------------------------
    "pca_abs_corr_min": Threshold(
        ">=",
        _PCA_CORR,
        BOTH,
        f"each of the first {PCA_N_COMPONENTS} PCs (cell scores) must be the same axis up to sign",
    ),
    "pca_max_principal_angle": Threshold(
        "<=",
        math.acos(_PCA_CORR),
        BOTH,
        "largest principal angle between the loading subspaces, in radians; arccos(0.9999), "
        "the angle the per-PC correlation bar allows, but blind to rotations within the subspace",
    ),
    # -- kNN graph -----------------------------------------------------------------------------
    "knn_overlap": Threshold(
        ">=",
        0.99,
        BOTH,
        f"both sides exact kNN: only ties may differ; not applied when scanpy is approximate "
        f"(>= {KNN_EXACT_MAX_CELLS} cells: pynndescent)",
    ),
    "connectivities_rel_frobenius": Threshold(
        "<=",
        1e-5,
        ("isolated",),
        "same kNN distances in, same UMAP fuzzy weights out up to float32 rounding; end to end a "
        "single swapped neighbour (allowed by the kNN bar) already exceeds it, so reported only; "
        "under precision='fast' the float32 distances swap neighbours at near ties in the same "
        "way (the kNN-overlap bar gates them), so there it is reported only too",
        exact_only=True,
    ),
    # -- Leiden ----------------------------------------------------------------------------------
    "leiden_ari": Threshold(
        ">=",
        0.95,
        BOTH,
        "switching backend must not change the clusters: on the same graph (isolated) and after "
        "the whole pipeline (e2e)",
    ),
    # -- markers -----------------------------------------------------------------------------
    "top25_overlap_min": Threshold(
        ">=",
        0.9,
        BOTH,
        f"of each Hungarian-matched cluster's top-{MARKER_TOP_N} genes, at least 90% shared "
        f"(the worst cluster; end to end only clusters whose cells agree to Jaccard >= "
        f"{MARKER_MATCH_JACCARD:g})",
    ),
    # -- embeddings -----------------------------------------------------------------------------
    "neighbourhood_preservation_diff": Threshold(
        "abs<=",
        0.02,
        BOTH,
        f"fraction of each cell's {EMBEDDING_K} PCA-space neighbours kept in the embedding: "
        "within 0.02 of the reference backend's",
    ),
    "trustworthiness_diff": Threshold(
        "abs<=",
        0.02,
        BOTH,
        "trustworthiness (a neighbourhood-preservation score): within 0.02 of the reference's",
    ),
    "tsne_kl_rel_diff": Threshold(
        "abs<=",
        0.05,
        BOTH,
        "t-SNE's objective KL(P||Q), both embeddings scored by one function on the same P "
        "(perplexity as run, on the representation t-SNE used): within 5% of the reference's",
    ),
    # -- determinism ---------------------------------------------------------------------------
    "identical_rerun": Threshold(
        "==",
        1.0,
        ("repeat",),
        "same input and seed must give bitwise the same result (1 = identical)",
    ),
}

#: Metrics of steps that declare their own thresholds in the catalogue (``Step.thresholds``).
THRESHOLDS.update(
    {
        metric: Threshold(op, value, tuple(modes), why)
        for step in catalogue.STEPS
        for metric, (op, value, modes, why) in step.thresholds.items()
    }
)


def threshold_for(metric: str, mode: str, precision: str = "exact") -> Threshold | None:
    """The threshold ``metric`` must clear in ``mode`` at backend B's ``precision``, or None
    when it is informational."""
    t = THRESHOLDS.get(metric)
    if t is None or mode not in t.modes or (t.exact_only and precision != "exact"):
        return None
    return t
