"""``gpu_sc.report``: the tutorial's figures and tables for a pipeline result, as one HTML page."""

from __future__ import annotations

import datetime
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..dispatch.provenance import provenance
from .annotation import UNS_RECORD, cell_type_labels, read_mapping
from .figures import SUBSAMPLE_CELLS, draw_all, plot_view
from .html import render
from .tables import (
    cluster_sizes,
    environment_rows,
    marker_table,
    markers_long,
    provenance_rows,
    shape_rows,
)

__all__ = ["MARKER_GENES", "report"]

logger = logging.getLogger("gpu_sc")

#: The marker genes of scanpy's PBMC3k tutorial (dot plot and stacked violin).
MARKER_GENES = (
    "IL7R",
    "CD79A",
    "MS4A1",
    "CD8A",
    "CD8B",
    "LYZ",
    "CD14",
    "LGALS3",
    "S100A8",
    "GNLY",
    "NKG7",
    "KLRB1",
    "FCGR3A",
    "MS4A7",
    "FCER1A",
    "CST3",
    "PPBP",
)

#: obs column the report adds to its plotting copy when given ``annotation=``.
ANNOTATION_KEY = "cell_type"


def report(
    adata,
    out_dir: str | Path,
    *,
    genes: Sequence[str] = ("CST3", "NKG7", "PPBP"),
    marker_genes: Sequence[str] = MARKER_GENES,
    annotation: Mapping[str, str] | str | Path | None = None,
    groupby: str = "leiden",
    title: str | None = None,
) -> Path:
    """Write an HTML report of a pipeline result: ``out_dir/index.html``, ``out_dir/figures/*.png``
    and ``out_dir/markers.csv``.

    Parameters
    ----------
    adata
        A result of :func:`gpu_sc.pipeline` (or read back with :func:`gpu_sc.io.read_h5ad`).
        It is not modified: figures draw from a view holding copies of obs and uns.
    out_dir
        Report directory. Written into a temporary directory beside it, then renamed, so a
        failure never leaves a half-written report; an existing report there is replaced, any
        other non-empty directory is refused.
    genes
        Genes for the PCA (the first) and UMAP colourings; absent ones are skipped with a note.
    marker_genes
        Genes of the dot plot and stacked violin (default: the tutorial's list).
    annotation
        Cluster -> cell type mapping (a dict or a TOML/CSV/TSV file, see
        :mod:`gpu_sc.report.annotation`); embeddings are then also coloured by cell type and
        the marker plots grouped by it. ``None``: an annotation stored by ``gpu-sc annotate``
        is used if present.
    groupby
        The cluster column.
    title
        Page title (default: "gpu_sc report" and the shape).

    Returns
    -------
    The path of ``index.html``.
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    view = plot_view(adata, genes=genes, markers=marker_genes, groupby=groupby, annotation=None)
    view.annotation = _annotation(adata, view, annotation, groupby)

    with _atomic_dir(out_dir) as tmp:
        figures = draw_all(view, tmp / "figures")
        obs = view.adata.obs
        sizes = cluster_sizes(obs, view.groupby, view.annotation) if view.groupby else None
        long = markers_long(view.adata)
        markers_csv = None
        markers = None
        if len(long):
            markers_csv = "markers.csv"
            long.to_csv(tmp / markers_csv, index=False)
            if sizes is not None:
                markers = marker_table(long, sizes)
        seconds = time.perf_counter() - t0
        html = render(
            title=title or f"gpu_sc report: {adata.n_obs:,} cells x {adata.n_vars:,} genes",
            summary=_summary(adata, view, sizes, seconds),
            notes=_notes(view, figures),
            figures=figures,
            shapes=shape_rows(adata),
            sizes=sizes,
            markers=markers,
            markers_csv=markers_csv,
            provenance=provenance_rows(adata),
            environment=environment_rows(adata, _report_versions()),
        )
        (tmp / "index.html").write_text(html, encoding="utf-8")
    logger.info("gpu_sc report: %s in %.1f s", out_dir, time.perf_counter() - t0)
    return out_dir / "index.html"


def _annotation(adata, view, annotation, groupby: str) -> str | None:
    """Put the cell types into the view's obs; return their column name (or None)."""
    if annotation is None:
        record = adata.uns.get("gpu_sc", {}).get(UNS_RECORD)
        if isinstance(record, Mapping) and record.get("key") in adata.obs:
            return str(record["key"])
        return None
    if groupby not in adata.obs:
        raise ValueError(f"annotation needs the cluster column obs[{groupby!r}]")
    if not isinstance(annotation, Mapping):
        annotation = read_mapping(annotation, groupby=groupby)
    view.adata.obs[ANNOTATION_KEY] = cell_type_labels(adata.obs[groupby], annotation)
    view.adata.uns.pop(f"{ANNOTATION_KEY}_colors", None)
    return ANNOTATION_KEY


def _summary(adata, view, sizes, seconds: float) -> list[tuple[str, str]]:
    info = adata.uns.get("gpu_sc", {})
    pipe = info.get("pipeline", {}) if isinstance(info, dict) else {}
    rows = [
        (
            "result",
            f"{adata.n_obs:,} cells x {adata.n_vars:,} genes in X"
            + (f"; {adata.raw.n_vars:,} genes in .raw" if adata.raw is not None else ""),
        )
    ]
    if sizes is not None:
        rows.append(
            (
                "clusters",
                f"{len(sizes)} ({view.groupby})"
                + (f"; annotated as {view.annotation}" if view.annotation else ""),
            )
        )
    if pipe:
        rows.append(("backend", str(pipe.get("backend", "?"))))
    steps = provenance(adata)
    if steps:
        rows.append(
            ("pipeline time", f"{sum(p['seconds'] for p in steps):.1f} s over {len(steps)} steps")
        )
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows.append(("report", f"generated {now} in {seconds:.1f} s"))
    return rows


def _notes(view, figures) -> list[str]:
    notes = []
    if view.markers_absent:
        notes.append(
            "Marker genes not in the data, skipped in the dot plot and stacked violin: "
            + ", ".join(view.markers_absent)
            + "."
        )
    if view.genes_absent:
        notes.append("Chosen genes not in the data, skipped: " + ", ".join(view.genes_absent) + ".")
    if view.n_obs > SUBSAMPLE_CELLS:
        notes.append(
            f"{view.n_obs:,} cells: violin and box plots draw a random subsample of "
            f"{SUBSAMPLE_CELLS:,} cells; scatter plots draw every cell (rasterized)."
        )
    skipped = [f.title for f in figures if f.skipped]
    if skipped:
        notes.append("Figures skipped because their inputs are absent: " + ", ".join(skipped) + ".")
    failed = [f.title for f in figures if f.failed]
    if failed:
        notes.append("Figures that failed to draw: " + ", ".join(failed) + ".")
    return notes


def _report_versions() -> list[tuple[str, str]]:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for dist in ("scanpy", "matplotlib"):
        try:
            out.append((f"{dist} (report)", version(dist)))
        except PackageNotFoundError:
            pass
    return out


class _atomic_dir:
    """Yield a fresh temporary directory beside ``path``; on success it replaces ``path``."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> Path:
        p = self.path
        if p.exists() and not p.is_dir():
            raise NotADirectoryError(f"report output {p} exists and is not a directory")
        if p.is_dir() and any(p.iterdir()) and not (p / "index.html").is_file():
            raise FileExistsError(
                f"{p} is a non-empty directory that holds no report; "
                "choose another output directory"
            )
        p.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(dir=p.parent, prefix=f".{p.name}.tmp-"))
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        os.chmod(self.tmp, 0o755)  # mkdtemp makes it 0700
        old = None
        if self.path.exists():
            old = Path(tempfile.mkdtemp(dir=self.path.parent, prefix=f".{self.path.name}.old-"))
            os.replace(self.path, old / "report")
        os.replace(self.tmp, self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return False
