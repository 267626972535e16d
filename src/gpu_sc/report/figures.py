"""The tutorial's figures, drawn with scanpy's own plotting on a pipeline result.

Every figure is a function ``(view) -> drawn`` that either draws with ``sc.pl.*`` (``show=False``
or ``return_fig=True``) and returns the caption's data-dependent part, or raises :class:`Skip`
with the reason its inputs are absent. :func:`draw_all` saves each one as a PNG and closes it.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._scanpy_compat import vector_friendly
from ..dispatch.arrays import is_dask
from ..dispatch.provenance import pipeline_record
from ..engine.dask_rows import compute, row_blocks, subset_cols

__all__ = ["FigureResult", "PlotView", "Skip", "draw_all", "plot_view"]

logger = logging.getLogger("gpu_sc")

#: Above this many cells, violin and box plots draw a random subsample (seeded) of this size:
#: their kernel densities and jittered points cost time linear in the cells drawn.
SUBSAMPLE_CELLS = 50_000


class Skip(Exception):
    """A figure's inputs are absent from the result; the message says which."""


@dataclass
class FigureResult:
    id: str
    section: str
    title: str
    caption: str = ""
    file: str | None = None  # path relative to the report directory
    skipped: str | None = None
    failed: str | None = None
    seconds: float = 0.0


@dataclass
class PlotView:
    """What the figures draw from: ``adata`` holds the result's obs, obsm and uns (copies of the
    small parts, so plotting never mutates the caller's object) and, as ``X``/``var``, the
    expression of *all* genes when the result has ``.raw`` (else the result's own ``X``)."""

    adata: object
    expression: str  # where the gene expression comes from, for captions
    groupby: str | None
    annotation: str | None
    genes: list[str]
    genes_absent: list[str]
    markers: list[str]
    markers_absent: list[str]
    raw_var: object | None  # the var table of all genes (HVG statistics), when .raw exists
    log1p: bool  # whether the expression is log1p-transformed (the pipeline's log1p step ran)
    counts_source: str | None
    point_size: float
    figsize: float
    _sub: object | None = None

    @property
    def n_obs(self) -> int:
        return self.adata.n_obs

    def subsample(self):
        """The cells violin plots draw: all of them up to :data:`SUBSAMPLE_CELLS`, else a
        seeded random subset of that size (in the original order)."""
        if self.n_obs <= SUBSAMPLE_CELLS:
            return self.adata
        if self._sub is None:
            rng = np.random.default_rng(0)
            idx = np.sort(rng.choice(self.n_obs, SUBSAMPLE_CELLS, replace=False))
            self._sub = self.adata[idx].copy()
        return self._sub

    def subsample_note(self) -> str:
        if self.n_obs <= SUBSAMPLE_CELLS:
            return ""
        return (
            f" Drawn on a random subsample of {SUBSAMPLE_CELLS:,} of the {self.n_obs:,} cells "
            "(seed 0) to keep the plot fast."
        )


def plot_view(
    adata,
    *,
    genes: Sequence[str],
    markers: Sequence[str],
    groupby: str | None,
    annotation: str | None,
) -> PlotView:
    """Build the :class:`PlotView` of a result (no copy of the large matrices)."""
    import anndata as ad

    config = pipeline_record(adata).get("config", {})
    log1p = bool(config.get("log1p", {}).get("enabled", True))
    uns = {k: copy.deepcopy(v) for k, v in adata.uns.items() if k != "gpu_sc"}
    if adata.raw is not None:
        X, var, raw_var = adata.raw.X, adata.raw.var.copy(), adata.raw.var
        expression = "log-normalised expression of all genes, from .raw"
    else:
        X, var, raw_var = adata.X, adata.var.copy(), None
        expression = "expression from .X (the result has no .raw)"
    lazy = is_dask(X)
    if lazy:  # read lazily (Dask): only the genes the figures name are computed
        X, var = _gene_columns(X, var, [*genes, *markers])
    view = ad.AnnData(
        X=X, obs=adata.obs.copy(), var=var, uns=uns, obsm={k: v for k, v in adata.obsm.items()}
    )
    counts_source = None
    if lazy:
        counts_source = "lazy"
    elif adata.raw is not None:
        counts_source = "raw"
    elif _looks_like_counts(adata.X):
        counts_source = "X"
    names = set(view.var_names)
    n = max(adata.n_obs, 1)
    return PlotView(
        adata=view,
        expression=expression,
        groupby=groupby if groupby in adata.obs else None,
        annotation=annotation,
        genes=[g for g in genes if g in names],
        genes_absent=[g for g in genes if g not in names],
        markers=list(dict.fromkeys(g for g in markers if g in names)),
        markers_absent=[g for g in markers if g not in names],
        raw_var=raw_var,
        log1p=log1p,
        counts_source=counts_source,
        # scanpy's own default point size for embeddings, bounded so 10^6 cells stay visible
        point_size=float(min(max(120_000 / n, 0.3), 60.0)),
        figsize=4.0 if n <= 20_000 else 5.0 if n <= 200_000 else 6.0,
    )


def _gene_columns(X, var, wanted):
    """The columns of the Dask matrix ``X`` for the ``wanted`` genes, in memory (CSR)."""
    import scipy.sparse as sp

    keep = var.index.isin(list(wanted))
    blocks = compute(*row_blocks(subset_cols(X, keep)))
    dense = not any(sp.issparse(b) for b in blocks)
    out = np.vstack(blocks) if dense else sp.vstack([sp.csr_matrix(b) for b in blocks], "csr")
    return out, var.loc[keep].copy()


def _looks_like_counts(X) -> bool:
    data = X.data if hasattr(X, "data") and not isinstance(X, np.ndarray) else np.asarray(X)
    sample = np.asarray(data).ravel()[:100_000]
    return sample.size > 0 and bool(np.all(sample >= 0) and np.all(sample == np.round(sample)))


# -- figures ---------------------------------------------------------------------------------


def _sc():
    import scanpy as sc

    return sc


def fig_highest_expr(v: PlotView) -> str:
    import anndata as ad

    sub = v.subsample()
    if v.counts_source == "lazy":
        raise Skip(
            "the matrix was read lazily (Dask): the top genes by counts would take one "
            "more pass over every gene, which the report does not make"
        )
    if v.counts_source is None:
        raise Skip("needs counts: the result has no .raw and its X is not counts")
    X = sub.X
    if v.counts_source == "raw" and v.log1p:
        X = X.copy()
        if hasattr(X, "data") and not isinstance(X, np.ndarray):
            np.expm1(X.data, out=X.data)
        else:
            X = np.expm1(X)
        how = (
            "Drawn from expm1(.raw): the per-cell normalised counts of the cells and genes kept "
            "by the filters. scanpy re-normalises every cell to 100, so the fractions are those "
            "of the raw counts of these cells and genes; the tutorial draws this plot earlier, "
            "before any filter, so its cells and genes differ slightly."
        )
    elif v.counts_source == "raw":
        how = "Drawn from .raw as stored (the pipeline's log1p step was disabled)."
    else:
        how = "Drawn from .X, which holds counts in this result."
    counts = ad.AnnData(X=X, obs=sub.obs[[]], var=sub.var[[]])
    _sc().pl.highest_expr_genes(counts, n_top=20, show=False)
    return how + v.subsample_note()


QC_KEYS = ("n_genes_by_counts", "total_counts", "pct_counts_mt")


def fig_qc_violin(v: PlotView) -> str:
    keys = [k for k in QC_KEYS if k in v.adata.obs]
    if not keys:
        raise Skip(f"no QC metrics in obs ({', '.join(QC_KEYS)}): the qc step was disabled")
    missing = [k for k in QC_KEYS if k not in keys]
    _sc().pl.violin(v.subsample(), keys, jitter=0.4, multi_panel=True, show=False)
    text = "QC metrics of the cells that passed the filters (the result keeps no others)."
    if missing:
        text += f" Absent from obs, not drawn: {', '.join(missing)}."
    return text + v.subsample_note()


def _qc_scatter(y: str):
    def draw(v: PlotView) -> str:
        missing = [k for k in ("total_counts", y) if k not in v.adata.obs]
        if missing:
            raise Skip(f"obs lacks {', '.join(missing)}: the qc step was disabled")
        _sc().pl.scatter(v.adata, x="total_counts", y=y, size=v.point_size, show=False)
        return "Cells that passed the filters."

    return draw


def fig_hvg(v: PlotView) -> str:
    cols_seurat = {"highly_variable", "means", "dispersions", "dispersions_norm"}
    cols_v3 = {"highly_variable", "means", "variances", "variances_norm"}

    def usable(var) -> bool:
        return var is not None and (cols_seurat <= set(var.columns) or cols_v3 <= set(var.columns))

    if usable(v.raw_var):
        table, text = v.raw_var, "All genes kept by the gene filter (from .raw.var)."
    elif usable(v.adata.var):
        table = v.adata.var
        text = "Only the genes present in the result's var (no HVG statistics in .raw)."
    else:
        raise Skip("no highly-variable-gene statistics in var: the hvg step was disabled")
    n_hvg = int(np.asarray(table["highly_variable"]).sum())
    _sc().pl.highly_variable_genes(table, show=False)
    return f"{text} {n_hvg:,} of {table.shape[0]:,} genes are highly variable."


def fig_pca(v: PlotView) -> str:
    if "X_pca" not in v.adata.obsm:
        raise Skip("no obsm['X_pca']: the pca step was disabled")
    color = v.genes[0] if v.genes else v.groupby
    if color is None:
        raise Skip("neither a chosen gene nor a cluster column to colour by")
    _sc().pl.pca(v.adata, color=color, use_raw=False, size=v.point_size, show=False)
    return f"First two principal components, coloured by {color}; {v.expression}."


def fig_pca_variance(v: PlotView) -> str:
    if "variance_ratio" not in v.adata.uns.get("pca", {}):
        raise Skip("no uns['pca']['variance_ratio']: the pca step was disabled")
    _sc().pl.pca_variance_ratio(v.adata, log=True, show=False)
    return "Variance ratio of each principal component (log scale)."


def fig_paga(v: PlotView) -> str:
    paga = v.adata.uns.get("paga")
    if not paga or "connectivities" not in paga:
        raise Skip("no uns['paga']: the paga step was disabled")
    kwargs = {}
    groups = paga.get("groups", v.groupby)
    if v.annotation and groups in v.adata.obs:
        cats = v.adata.obs[groups].cat.categories
        lut = (
            v.adata.obs[[groups, v.annotation]]
            .drop_duplicates()
            .set_index(groups)[v.annotation]
            .astype(str)
        )
        kwargs["labels"] = [f"{c}: {lut.get(c, '')}" for c in cats]
    _sc().pl.paga(v.adata, random_state=0, show=False, **kwargs)
    return "Abstracted graph of the clusters (edge width = connectivity)."


def _embedding(basis: str, what: str):
    def draw(v: PlotView) -> str:
        key = f"X_{basis}"
        if key not in v.adata.obsm:
            raise Skip(f"no obsm[{key!r}]: the {basis} step was disabled")
        colors = [c for c in (v.groupby, v.annotation) if c]
        if not colors:
            raise Skip("no cluster column in obs")
        _sc().pl.embedding(
            v.adata,
            basis=basis,
            color=colors,
            size=v.point_size,
            legend_loc="on data" if v.annotation else "right margin",
            legend_fontsize=8,
            show=False,
        )
        return f"{what} coloured by {' and '.join(colors)}."

    return draw


def fig_umap_genes(v: PlotView) -> str:
    if "X_umap" not in v.adata.obsm:
        raise Skip("no obsm['X_umap']: the umap step was disabled")
    if not v.genes:
        raise Skip(f"none of the chosen genes is in the data ({', '.join(v.genes_absent)})")
    _sc().pl.umap(v.adata, color=v.genes, use_raw=False, size=v.point_size, show=False)
    text = f"UMAP coloured by {', '.join(v.genes)}; {v.expression}."
    if v.genes_absent:
        text += f" Not in the data, skipped: {', '.join(v.genes_absent)}."
    return text


def _rank_genes(method: str):
    key = "rank_genes_groups_" + method.replace("-", "_")

    def draw(v: PlotView) -> str:
        if key not in v.adata.uns:
            raise Skip(f"no uns[{key!r}]: {method} was not among rank_genes_groups' methods")
        _sc().pl.rank_genes_groups(v.adata, n_genes=25, sharey=False, key=key, show=False)
        return f"Top 25 genes per cluster ({method}), key {key!r}."

    return draw


def _fit_height(plot) -> None:
    """Size a scanpy dot plot / stacked violin to its rows.

    Left to itself, scanpy makes the figure at least ``MIN_FIGURE_HEIGHT`` (+1 inch for labels)
    and puts the difference in an empty spacer row *above* the main plot (an empty band on the
    page). With an explicit size the main plot takes the whole height (the gene labels are
    drawn below it, outside the figure, and ``bbox_inches="tight"`` keeps them); the height
    still leaves the legends room (2.2 inches at least).
    """
    n_rows, n_cols = len(plot.categories), len(plot.var_names)
    if plot.are_axes_swapped:
        n_rows, n_cols = n_cols, n_rows
    height = max(n_rows * plot.DEFAULT_CATEGORY_HEIGHT, 2.2)
    width = n_cols * plot.DEFAULT_CATEGORY_WIDTH + plot.legends_width + plot.group_extra_size
    plot.height, plot.width = height, width


def _marker_plot(kind: str):
    def draw(v: PlotView):
        if not v.markers:
            raise Skip(f"none of the marker genes is in the data ({', '.join(v.markers_absent)})")
        groupby = v.annotation or v.groupby
        if groupby is None:
            raise Skip("no cluster column in obs to group by")
        sc = _sc()
        if kind == "dotplot":
            data, note = v.adata, ""
            fig = sc.pl.dotplot(data, v.markers, groupby=groupby, use_raw=False, return_fig=True)
        else:
            data, note = v.subsample(), v.subsample_note()
            fig = sc.pl.stacked_violin(
                data, v.markers, groupby=groupby, use_raw=False, return_fig=True
            )
        _fit_height(fig)
        text = f"The tutorial's marker genes by {groupby}; {v.expression}."
        if v.markers_absent:
            text += f" Not in the data, skipped: {', '.join(v.markers_absent)}."
        return fig, text + note

    return draw


#: (id, section, title, draw) in page order.
FIGURES: list[tuple[str, str, str, Callable]] = [
    ("highest_expr_genes", "qc", "Highest expressed genes", fig_highest_expr),
    ("qc_violin", "qc", "QC metrics", fig_qc_violin),
    ("qc_scatter_mt", "qc", "Total counts vs mitochondrial fraction", _qc_scatter("pct_counts_mt")),
    ("qc_scatter_genes", "qc", "Total counts vs genes detected", _qc_scatter("n_genes_by_counts")),
    ("hvg", "hvg", "Highly variable genes", fig_hvg),
    ("pca", "pca", "PCA", fig_pca),
    ("pca_variance_ratio", "pca", "PCA variance ratio", fig_pca_variance),
    ("paga", "embedding", "PAGA", fig_paga),
    ("umap_clusters", "embedding", "UMAP: clusters", _embedding("umap", "UMAP")),
    ("umap_genes", "embedding", "UMAP: chosen genes", fig_umap_genes),
    ("tsne_clusters", "embedding", "t-SNE: clusters", _embedding("tsne", "t-SNE")),
    ("rank_genes_t_test", "markers", "Marker genes: t-test", _rank_genes("t-test")),
    ("rank_genes_wilcoxon", "markers", "Marker genes: Wilcoxon", _rank_genes("wilcoxon")),
    ("dotplot", "markers", "Marker dot plot", _marker_plot("dotplot")),
    ("stacked_violin", "markers", "Marker stacked violin", _marker_plot("stacked_violin")),
]


@contextlib.contextmanager
def _plotting(view: PlotView):
    """Agg backend, sizes adapted to the number of cells, scatter points rasterized, quiet."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rc = {"figure.figsize": (view.figsize, view.figsize), "savefig.dpi": 100, "figure.dpi": 100}
    try:  # scanpy's switch for rasterized scatters, on while the figures are drawn
        with vector_friendly(), matplotlib.rc_context(rc), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield plt
    finally:
        plt.close("all")


def draw_all(view: PlotView, fig_dir: Path, rel: str = "figures") -> list[FigureResult]:
    """Draw every figure of :data:`FIGURES` into ``fig_dir`` (PNG); one result each."""
    fig_dir.mkdir(parents=True, exist_ok=True)
    results = []
    with _plotting(view) as plt:
        for i, (fid, section, title, draw) in enumerate(FIGURES):
            res = FigureResult(id=fid, section=section, title=title)
            t0 = time.perf_counter()
            plt.close("all")
            try:
                out = draw(view)
                fname = f"{i:02d}_{fid}.png"
                if isinstance(out, tuple):  # (scanpy BasePlot, caption): it draws on savefig
                    obj, res.caption = out
                    obj.savefig(str(fig_dir / fname), bbox_inches="tight")
                else:
                    res.caption = out
                    plt.gcf().savefig(fig_dir / fname, bbox_inches="tight")
                res.file = f"{rel}/{fname}"
            except Skip as exc:
                res.skipped = str(exc)
            except Exception as exc:  # one broken figure must not cost the whole report
                logger.warning("gpu_sc report: figure %s failed: %r", fid, exc)
                logger.debug("traceback of figure %s", fid, exc_info=True)
                res.failed = f"{type(exc).__name__}: {exc}"
            finally:
                plt.close("all")
            res.seconds = time.perf_counter() - t0
            results.append(res)
    return results
