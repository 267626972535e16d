"""What each pipeline step outputs, and how two backends' outputs of it are compared.

A :class:`Stage` is keyed by the pipeline runner's step name
(:class:`gpu_sc.pipeline.Runner`; the catalogue names each step's stage factory here). ``extract`` copies the step's outputs out of AnnData
right after the step (so later steps cannot overwrite them); ``compare`` turns the reference
side's and the other side's extracts into metric values. End to end the two sides may have
different cells or genes (a filter decided differently): everything is aligned by name, on
the names both sides kept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import catalogue
from ..backends import delegates
from ..dispatch.arrays import array_module
from ..kernels.embedding_quality import kl_divergence
from ..kernels.tsne import joint_probabilities
from ..pipeline.plan import rank_genes_key
from . import metrics as M
from .thresholds import (
    EMBEDDING_K,
    KNN_EXACT_MAX_CELLS,
    MARKER_MATCH_JACCARD,
    MARKER_TOP_N,
    PCA_N_COMPONENTS,
)

__all__ = ["Context", "Measured", "Stage", "identical", "registry_name", "stage_for"]


@dataclass
class Measured:
    """One metric value produced by a comparator; ``gate=False`` reports it ungated (with
    ``note`` saying why) even where the metric has a threshold."""

    metric: str
    value: float | None
    note: str = ""
    gate: bool = True


@dataclass(frozen=True)
class Context:
    """What comparators need besides the two extracts."""

    backends: tuple[str, str]
    mode: str
    seed: int
    resolution: float = 1.0
    #: the precision backend B's engine ran at (thresholds marked exact-only bind only then)
    precision: str = "exact"


Extract = dict[str, Any]


@dataclass(frozen=True)
class Stage:
    step: str
    extract: Callable[[Any], Extract]
    compare: Callable[[Extract, Extract, Context], list[Measured]]
    #: extract keys that must be bitwise equal when backend B reruns the stage (determinism);
    #: empty = no rerun check for this stage.
    repeat_keys: tuple[str, ...] = field(default=())


def registry_name(step: str) -> str:
    """The dispatcher's step name of a runner step (``rank_genes_groups[t-test]`` ->
    ``rank_genes_groups``)."""
    return step.split("[", 1)[0]


# -- alignment ---------------------------------------------------------------------------------
def _common(names_a, names_b) -> tuple[np.ndarray, np.ndarray, pd.Index]:
    """Positions in ``a`` and ``b`` of the names both hold, in ``a``'s order."""
    ia, ib = pd.Index(names_a), pd.Index(names_b)
    common = ia[ia.isin(ib)]
    return ia.get_indexer(common), ib.get_indexer(common), common


def _rows_cols(x, rows, cols=None):
    x = x[rows]
    return x if cols is None else x[:, cols]


def _aligned_note(a: Extract, b: Extract, n_cells: int, n_genes: int | None = None) -> str:
    parts = []
    if n_cells < max(len(a["cells"]), len(b["cells"])):
        parts.append(f"{n_cells} shared cells of {len(a['cells'])}/{len(b['cells'])}")
    if n_genes is not None and n_genes < max(len(a["genes"]), len(b["genes"])):
        parts.append(f"{n_genes} shared genes of {len(a['genes'])}/{len(b['genes'])}")
    return "compared on " + ", ".join(parts) if parts else ""


def _names(adata) -> Extract:
    return {"cells": adata.obs_names.to_numpy(), "genes": adata.var_names.to_numpy()}


def _host_copy(x):
    if sp.issparse(x):
        return sp.csr_matrix(x, copy=True)
    return np.array(x, copy=True)


# -- filters, QC ---------------------------------------------------------------------------------
def _extract_filter_cells(adata) -> Extract:
    return {**_names(adata), "n_genes": adata.obs["n_genes"].to_numpy(copy=True)}


def _compare_filter_cells(a, b, ctx) -> list[Measured]:
    ia, ib, common = _common(a["cells"], b["cells"])
    return [
        Measured("cells_jaccard", M.jaccard(a["cells"], b["cells"])),
        Measured("n_genes_max_rel_diff", M.max_rel_diff(a["n_genes"][ia], b["n_genes"][ib])),
    ]


def _extract_filter_genes(adata) -> Extract:
    return {**_names(adata), "n_cells": adata.var["n_cells"].to_numpy(copy=True)}


def _compare_filter_genes(a, b, ctx) -> list[Measured]:
    ia, ib, _ = _common(a["genes"], b["genes"])
    return [
        Measured("genes_jaccard", M.jaccard(a["genes"], b["genes"])),
        Measured("n_cells_max_rel_diff", M.max_rel_diff(a["n_cells"][ia], b["n_cells"][ib])),
    ]


_QC_OBS = ("total_counts", "n_genes_by_counts", "pct_counts_mt", "total_counts_mt")
_QC_VAR = ("n_cells_by_counts", "mean_counts", "pct_dropout_by_counts", "total_counts")


def _extract_qc(adata) -> Extract:
    return {
        **_names(adata),
        "obs": adata.obs[[c for c in _QC_OBS if c in adata.obs]].copy(),
        "var": adata.var[[c for c in _QC_VAR if c in adata.var]].copy(),
    }


def _table_diff(ta: pd.DataFrame, tb: pd.DataFrame, ia, ib) -> tuple[float, str]:
    worst, worst_col, missing = 0.0, "", []
    for col in ta.columns:
        if col not in tb.columns:
            missing.append(col)
            continue
        d = M.max_rel_diff(ta[col].to_numpy(np.float64)[ia], tb[col].to_numpy(np.float64)[ib])
        if np.isnan(d) or d > worst or not worst_col:
            worst, worst_col = d, col
    if missing:
        return float("nan"), f"missing on one side: {', '.join(missing)}"
    return worst, f"worst column: {worst_col}" if worst > 0 else ""


def _compare_qc(a, b, ctx) -> list[Measured]:
    ia, ib, common = _common(a["cells"], b["cells"])
    ja, jb, genes = _common(a["genes"], b["genes"])
    obs, obs_note = _table_diff(a["obs"], b["obs"], ia, ib)
    var, var_note = _table_diff(a["var"], b["var"], ja, jb)
    align = _aligned_note(a, b, len(common), len(genes))
    return [
        Measured("qc_obs_max_rel_diff", obs, "; ".join(filter(None, [obs_note, align]))),
        Measured("qc_var_max_rel_diff", var, "; ".join(filter(None, [var_note, align]))),
    ]


# -- matrices: normalize_total, log1p, regress_out, scale -------------------------------------
def _extract_X(adata) -> Extract:
    return {**_names(adata), "X": _host_copy(adata.X)}


def _matrix_comparator(metric: str, *, floor_sd: bool, report_cells: bool = False):
    def compare(a, b, ctx) -> list[Measured]:
        ia, ib, cells = _common(a["cells"], b["cells"])
        ja, jb, genes = _common(a["genes"], b["genes"])
        xa = _rows_cols(a["X"], ia, ja)
        xb = _rows_cols(b["X"], ib, jb)
        out = [
            Measured(
                metric,
                M.max_rel_diff(xa, xb, floor_sd=floor_sd),
                _aligned_note(a, b, len(cells), len(genes)),
            )
        ]
        if report_cells and ctx.mode == "e2e":
            # The QC filter (a strict < on float QC metrics) decides the cell set end to end.
            out.append(
                Measured("cells_after_qc_jaccard", M.jaccard(a["cells"], b["cells"]), gate=False)
            )
        return out

    return compare


# -- HVG ---------------------------------------------------------------------------------------
def _extract_hvg(adata) -> Extract:
    hv = adata.var["highly_variable"].to_numpy(dtype=bool)
    return {**_names(adata), "hvg": adata.var_names[hv].to_numpy()}


def _compare_hvg(a, b, ctx) -> list[Measured]:
    return [
        Measured(
            "hvg_jaccard",
            M.jaccard(a["hvg"], b["hvg"]),
            f"{len(a['hvg'])} vs {len(b['hvg'])} genes",
        )
    ]


# -- PCA ---------------------------------------------------------------------------------------
def _extract_pca(adata) -> Extract:
    return {
        **_names(adata),
        "X_pca": np.array(adata.obsm["X_pca"], copy=True),
        "PCs": np.array(adata.varm["PCs"], copy=True),
        "variance_ratio": np.array(adata.uns["pca"]["variance_ratio"], copy=True),
    }


def _compare_pca(a, b, ctx) -> list[Measured]:
    ia, ib, cells = _common(a["cells"], b["cells"])
    ja, jb, genes = _common(a["genes"], b["genes"])
    n = min(PCA_N_COMPONENTS, a["X_pca"].shape[1], b["X_pca"].shape[1])
    corr = M.abs_correlations(a["X_pca"][ia, :n], b["X_pca"][ib, :n])
    abs_corr = np.abs(corr)
    worst = int(np.nanargmin(abs_corr)) if not np.isnan(abs_corr).all() else 0
    angle = M.max_principal_angle(a["PCs"][ja, :n], b["PCs"][jb, :n])
    align = _aligned_note(a, b, len(cells), len(genes))
    return [
        Measured(
            "pca_abs_corr_min",
            float(np.min(abs_corr)),
            "; ".join(filter(None, [f"{n} PCs; worst PC{worst + 1}", align])),
        ),
        Measured(
            "pca_sign_agreement", float(np.mean(corr > 0)), "fraction of PCs with the same sign"
        ),
        Measured("pca_max_principal_angle", angle, "radians, loadings"),
        Measured(
            "pca_variance_ratio_max_rel_diff",
            M.max_rel_diff(a["variance_ratio"][:n], b["variance_ratio"][:n]),
        ),
    ]


# -- kNN graph -----------------------------------------------------------------------------------
def _extract_neighbors(adata) -> Extract:
    return {
        **_names(adata),
        "distances": sp.csr_matrix(adata.obsp["distances"], copy=True),
        "connectivities": sp.csr_matrix(adata.obsp["connectivities"], copy=True),
    }


def _neighbour_names(distances: sp.csr_matrix, ids: np.ndarray, rows: np.ndarray):
    """Neighbour sets of cells ``rows``, as global name ids (``ids[position]``)."""
    d = distances.tocsr()
    return [ids[d.indices[d.indptr[r] : d.indptr[r + 1]]] for r in rows]


def _compare_neighbors(a, b, ctx) -> list[Measured]:
    ia, ib, cells = _common(a["cells"], b["cells"])
    universe = pd.Index(a["cells"]).union(pd.Index(b["cells"]))
    na = _neighbour_names(a["distances"], universe.get_indexer(a["cells"]), ia)
    nb = _neighbour_names(b["distances"], universe.get_indexer(b["cells"]), ib)
    overlap = M.knn_overlap(na, nb)
    approximate = [
        side
        for side, ext in zip(ctx.backends, (a, b), strict=True)
        if delegates(ext.get("ran")) and len(ext["cells"]) >= KNN_EXACT_MAX_CELLS
    ]
    knn_note = _aligned_note(a, b, len(cells))
    gate = not approximate
    if approximate:
        knn_note = "; ".join(
            filter(
                None,
                [
                    f"scanpy approximate (pynndescent, >= {KNN_EXACT_MAX_CELLS} cells) on "
                    f"{', '.join(approximate)}: reported, not gated",
                    knn_note,
                ],
            )
        )
    ca = a["connectivities"][ia][:, ia]
    cb = b["connectivities"][ib][:, ib]
    return [
        Measured("knn_overlap", overlap, knn_note, gate=gate),
        Measured("connectivities_rel_frobenius", M.rel_frobenius(ca, cb)),
    ]


# -- Leiden ----------------------------------------------------------------------------------------
def _extract_leiden(key: str):
    def extract(adata) -> Extract:
        return {
            **_names(adata),
            "labels": adata.obs[key].astype(str).to_numpy(),
            "graph": sp.csr_matrix(adata.obsp["connectivities"], copy=True),
        }

    return extract


def _compare_leiden(a, b, ctx) -> list[Measured]:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    ia, ib, cells = _common(a["cells"], b["cells"])
    la, lb = a["labels"][ia], b["labels"][ib]
    graph = a["graph"][ia][:, ia]  # the reference side's graph: one graph for both partitions
    graph_note = (
        "on the shared input graph" if ctx.mode == "isolated" else f"on {ctx.backends[0]}'s graph"
    )
    a_name, b_name = ctx.backends
    return [
        Measured("leiden_ari", float(adjusted_rand_score(la, lb)), _aligned_note(a, b, len(cells))),
        Measured("leiden_nmi", float(normalized_mutual_info_score(la, lb))),
        Measured(f"n_clusters[{a_name}]", float(len(set(a["labels"])))),
        Measured(f"n_clusters[{b_name}]", float(len(set(b["labels"])))),
        Measured(f"modularity[{a_name}]", M.modularity(graph, la, ctx.resolution), graph_note),
        Measured(f"modularity[{b_name}]", M.modularity(graph, lb, ctx.resolution), graph_note),
    ]


# -- PAGA --------------------------------------------------------------------------------------
def _extract_paga(adata) -> Extract:
    conn = adata.uns["paga"]["connectivities"]
    return {
        **_names(adata),
        "connectivities": np.asarray(
            conn.toarray() if sp.issparse(conn) else conn, dtype=np.float64
        ),
    }


def _compare_paga(a, b, ctx) -> list[Measured]:
    if ctx.mode != "isolated" or a["connectivities"].shape != b["connectivities"].shape:
        # End to end the clusters differ: cluster-level graphs are not comparable node to node.
        return []
    diff = float(np.max(np.abs(a["connectivities"] - b["connectivities"]), initial=0.0))
    return [Measured("paga_connectivities_max_abs_diff", diff)]


# -- embeddings --------------------------------------------------------------------------------
def _high_dim(adata) -> np.ndarray:
    """The representation ``neighbors`` used (its ``use_rep`` / ``n_pcs``)."""
    params = adata.uns.get("neighbors", {}).get("params", {})
    rep = params.get("use_rep", "X_pca")
    X = adata.X if rep == "X" else adata.obsm[rep]
    X = X.toarray() if sp.issparse(X) else np.asarray(X)
    n_pcs = params.get("n_pcs")
    return np.array(X[:, :n_pcs] if n_pcs else X, dtype=np.float64)


def _extract_embedding(key: str):
    def extract(adata) -> Extract:
        Y = np.array(adata.obsm[key], copy=True)
        return {**_names(adata), "Y": Y, "high": _high_dim(adata)}

    return extract


def _quality(ext: Extract, seed: int) -> tuple[float, float]:
    """(neighbourhood preservation, trustworthiness) of one side, cached on its extract."""
    if "quality" not in ext:
        ext["quality"] = (
            M.neighbourhood_preservation(ext["high"], ext["Y"], k=EMBEDDING_K),
            M.trustworthiness(ext["high"], ext["Y"], k=EMBEDDING_K, seed=seed),
        )
    return ext["quality"]


def _compare_embedding(a, b, ctx) -> list[Measured]:
    (pa, ta), (pb, tb) = _quality(a, ctx.seed), _quality(b, ctx.seed)
    a_name, b_name = ctx.backends
    sign = f"{b_name} minus {a_name}"
    return [
        Measured(f"neighbourhood_preservation[{a_name}]", pa, f"k={EMBEDDING_K}, PCA space"),
        Measured(f"neighbourhood_preservation[{b_name}]", pb, f"k={EMBEDDING_K}, PCA space"),
        Measured("neighbourhood_preservation_diff", pb - pa, sign),
        Measured(f"trustworthiness[{a_name}]", ta),
        Measured(f"trustworthiness[{b_name}]", tb),
        Measured("trustworthiness_diff", tb - ta, sign),
    ]


def _extract_tsne(adata) -> Extract:
    """The embedding, plus what t-SNE's objective needs: the representation t-SNE ran on (its
    ``use_rep``, else all of ``X_pca`` as scanpy's default ``n_pcs=None`` takes) and perplexity."""
    ext = _extract_embedding("X_tsne")(adata)
    params = adata.uns.get("tsne", {}).get("params", {})
    rep = params.get("use_rep", "X_pca")
    X = adata.X if rep == "X" else adata.obsm[rep]
    ext["tsne_input"] = np.array(X.toarray() if sp.issparse(X) else X, dtype=np.float64)
    ext["perplexity"] = float(params.get("perplexity", 30.0))
    return ext


def _compare_tsne(a, b, ctx) -> list[Measured]:
    rows = _compare_embedding(a, b, ctx)
    if not np.array_equal(a["cells"], b["cells"]):
        return rows  # different cells end to end: no shared P to score both embeddings with
    # One P (the reference side's input) scores both embeddings: the same objective for both.
    P = joint_probabilities(array_module("numpy"), a["tsne_input"], a["perplexity"])
    kl_a, kl_b = kl_divergence(P, a["Y"]), kl_divergence(P, b["Y"])
    a_name, b_name = ctx.backends
    return [
        *rows,
        Measured(f"tsne_kl[{a_name}]", kl_a, f"perplexity {a['perplexity']:g}, exact Q"),
        Measured(f"tsne_kl[{b_name}]", kl_b),
        Measured("tsne_kl_rel_diff", (kl_b - kl_a) / kl_a, f"({b_name} - {a_name}) / {a_name}"),
    ]


# -- markers -------------------------------------------------------------------------------------
def _extract_markers(key: str, groupby: str):
    def extract(adata) -> Extract:
        res = adata.uns[key]
        names, scores = res["names"], res["scores"]
        markers = {
            str(g): (np.asarray(names[g]).astype(str), np.asarray(scores[g], dtype=np.float64))
            for g in names.dtype.names
        }
        return {
            **_names(adata),
            "markers": markers,
            "labels": adata.obs[groupby].astype(str).to_numpy(),
        }

    return extract


def _compare_markers(a, b, ctx) -> list[Measured]:
    ia, ib, cells = _common(a["cells"], b["cells"])
    labels_a, labels_b = a["labels"][ia], b["labels"][ib]
    pairs = M.match_clusters(labels_a, labels_b)
    # Gate only pairs that are the same cluster (cell-set Jaccard): markers of a cluster that
    # gained or lost many cells differ for that reason, which leiden_ari already measures.
    sizes_a = pd.Series(labels_a).value_counts()
    sizes_b = pd.Series(labels_b).value_counts()
    same, differ = [], []
    for ca, cb, shared in pairs:
        jaccard = shared / (sizes_a[ca] + sizes_b[cb] - shared)
        (same if jaccard >= MARKER_MATCH_JACCARD else differ).append((ca, cb, shared))
    agree = M.marker_agreement(a["markers"], b["markers"], same, MARKER_TOP_N)
    n_a, n_b = len(a["markers"]), len(b["markers"])
    matched = (
        f"{len(same)} of {len(pairs)} Hungarian-matched clusters ({n_a} / {n_b}) share their "
        f"cells (Jaccard >= {MARKER_MATCH_JACCARD:g})"
    )
    rows = [
        Measured("top25_overlap_min", agree["overlap_min"], matched),
        Measured("top25_overlap_mean", agree["overlap_mean"]),
        Measured("score_spearman_min", agree["spearman_min"], "scores of genes both report"),
        Measured("score_spearman_mean", agree["spearman_mean"]),
        Measured("clusters_compared", float(len(same))),
    ]
    if differ:
        other = M.marker_agreement(a["markers"], b["markers"], differ, MARKER_TOP_N)
        rows.append(
            Measured(
                "top25_overlap_min[membership differs]",
                other["overlap_min"],
                f"{len(differ)} matched pair(s) below Jaccard {MARKER_MATCH_JACCARD:g}: "
                "reported, not gated",
            )
        )
    return rows


# -- stage factories, named by the catalogue's ``Step.parity`` --------------------------------
def filter_cells(step, cfg) -> Stage:
    return Stage(step, _extract_filter_cells, _compare_filter_cells)


def filter_genes(step, cfg) -> Stage:
    return Stage(step, _extract_filter_genes, _compare_filter_genes)


def qc(step, cfg) -> Stage:
    return Stage(step, _extract_qc, _compare_qc)


def normalized(step, cfg) -> Stage:
    return Stage(
        step,
        _extract_X,
        _matrix_comparator("normalized_max_rel_diff", floor_sd=False, report_cells=True),
    )


def log1p(step, cfg) -> Stage:
    return Stage(step, _extract_X, _matrix_comparator("log1p_max_rel_diff", floor_sd=False))


def hvg(step, cfg) -> Stage:
    return Stage(step, _extract_hvg, _compare_hvg)


def regress_out(step, cfg) -> Stage:
    return Stage(step, _extract_X, _matrix_comparator("regress_out_max_rel_diff", floor_sd=True))


def scale(step, cfg) -> Stage:
    return Stage(step, _extract_X, _matrix_comparator("scale_max_rel_diff", floor_sd=True))


def pca(step, cfg) -> Stage:
    return Stage(step, _extract_pca, _compare_pca)


def neighbors(step, cfg) -> Stage:
    return Stage(step, _extract_neighbors, _compare_neighbors)


def leiden(step, cfg) -> Stage:
    return Stage(step, _extract_leiden(cfg.leiden.key_added), _compare_leiden)


def paga(step, cfg) -> Stage:
    return Stage(step, _extract_paga, _compare_paga)


def umap(step, cfg) -> Stage:
    return Stage(step, _extract_embedding("X_umap"), _compare_embedding)


def tsne(step, cfg) -> Stage:
    return Stage(step, _extract_tsne, _compare_tsne)


def markers(step, cfg) -> Stage:
    method = step[len("rank_genes_groups[") : -1]
    return Stage(
        step, _extract_markers(rank_genes_key(method), cfg.leiden.key_added), _compare_markers
    )


def obs_values(step, cfg) -> Stage:
    """Generic: the ``obs[...]`` columns the catalogue says ``step`` writes, compared by
    :func:`~gpu_sc.parity.metrics.max_rel_diff` floored at the column's SD (values near 0
    come from cancellation); metric ``<step>_max_rel_diff``."""
    entry = catalogue.get(step)
    fields = dataclasses.asdict(getattr(cfg, entry.section)) if entry.section else {}
    columns = [
        w[4:-1].format(**fields) for w in entry.writes if w.startswith("obs[") and w.endswith("]")
    ]

    def extract(adata) -> Extract:
        return {**_names(adata), **{c: adata.obs[c].to_numpy(copy=True) for c in columns}}

    def compare(a, b, ctx) -> list[Measured]:
        ia, ib, cells = _common(a["cells"], b["cells"])
        worst, where = 0.0, ""
        for c in columns:
            d = M.max_rel_diff(a[c][ia], b[c][ib], floor_sd=True)
            if np.isnan(d) or d > worst or not where:
                worst, where = d, c
        note = "; ".join(
            filter(
                None,
                [
                    f"worst column: {where}" if len(columns) > 1 else "",
                    _aligned_note(a, b, len(cells)),
                ],
            )
        )
        return [Measured(f"{step}_max_rel_diff", worst, note)]

    return Stage(step, extract, compare)


def stage_for(step: str, cfg) -> Stage | None:
    """The :class:`Stage` of runner step ``step`` under pipeline config ``cfg`` (the
    catalogue entry's ``parity`` factory), or None for steps without outputs to compare
    (subsetting, ``.raw``, the PAGA layout)."""
    entry = catalogue.get(step)
    if entry is None or entry.parity is None:
        return None
    stage = globals()[entry.parity](step, cfg)
    if entry.repeat_keys:
        stage = dataclasses.replace(stage, repeat_keys=entry.repeat_keys)
    return stage


def identical(a: Extract, b: Extract, keys: tuple[str, ...]) -> tuple[bool, str]:
    """Whether the extracts agree bitwise on ``keys``; the note names what differs."""
    differing = [k for k in keys if not _equal(a[k], b[k])]
    return not differing, ("differs: " + ", ".join(differing)) if differing else ""


def _equal(x, y) -> bool:
    if sp.issparse(x) or sp.issparse(y):
        if not (sp.issparse(x) and sp.issparse(y)) or x.shape != y.shape:
            return False
        x, y = sp.csr_matrix(x), sp.csr_matrix(y)
        x.sort_indices()
        y.sort_indices()
        return all(
            np.array_equal(p, q)
            for p, q in ((x.indptr, y.indptr), (x.indices, y.indices), (x.data, y.data))
        )
    return np.array_equal(np.asarray(x), np.asarray(y))
