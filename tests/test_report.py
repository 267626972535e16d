"""The HTML report and cluster annotation, on a small synthetic atlas run through the pipeline."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import gpu_sc
from gpu_sc.cli import main
from gpu_sc.io import read_h5ad, write_h5ad
from gpu_sc.report import AnnotationError, apply_annotation, read_mapping
from gpu_sc.report import figures as report_figures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def result():
    """~800 synthetic cells through the tutorial pipeline on scanpy, t-SNE disabled."""
    adata = gpu_sc.datasets.synthetic(800, n_genes=1000, n_types=4, difficulty="separated", seed=0)
    gpu_sc.pipeline(adata, {"tsne": {"enabled": False}}, backend="scanpy")
    return adata


@pytest.fixture(scope="module")
def genes(result):
    """Genes present in .raw (all genes), for the colourings and marker plots."""
    return list(result.raw.var_names[20:24])


@pytest.fixture(scope="module")
def report_dir(result, genes, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "rep"
    before = (set(result.uns), set(result.obs.columns), result.shape)
    index = gpu_sc.report(result, out, genes=[genes[0], "CST3"], marker_genes=genes + ["IL7R"])
    assert index == out / "index.html"
    assert (set(result.uns), set(result.obs.columns), result.shape) == before
    return out


def _html(d: Path) -> str:
    return (d / "index.html").read_text(encoding="utf-8")


class _Tables(HTMLParser):
    """Every <table> of a page as rows of cell texts (the stdlib parser: no lxml needed)."""

    def __init__(self):
        super().__init__()
        self.tables, self._cell = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _tables(html: str) -> list[pd.DataFrame]:
    parser = _Tables()
    parser.feed(html)
    return [pd.DataFrame(rows[1:], columns=rows[0]) for rows in parser.tables if rows]


def _num(col: pd.Series) -> pd.Series:
    return col.str.replace(",", "").astype(float)


def _img_srcs(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', html)


def test_every_listed_image_exists_is_a_nonempty_png_and_every_png_is_listed(report_dir):
    srcs = _img_srcs(_html(report_dir))
    assert len(srcs) >= 12
    for src in srcs:
        path = report_dir / src
        assert path.is_file(), src
        assert path.stat().st_size > 1000, src
        assert path.read_bytes()[:8] == PNG_MAGIC, src
    on_disk = {f"figures/{p.name}" for p in (report_dir / "figures").iterdir()}
    assert on_disk == set(srcs)


def test_report_draws_the_tutorial_figures_and_fails_none(report_dir):
    html = _html(report_dir)
    drawn = set(re.findall(r'data-figure="([^"]+)"', html))
    expected = {
        "highest_expr_genes",
        "qc_violin",
        "qc_scatter_mt",
        "qc_scatter_genes",
        "hvg",
        "pca",
        "pca_variance_ratio",
        "paga",
        "umap_clusters",
        "umap_genes",
        "rank_genes_t_test",
        "rank_genes_wilcoxon",
        "dotplot",
        "stacked_violin",
    }
    assert expected <= drawn
    assert "data-failed" not in html


def test_absent_inputs_are_skipped_with_visible_notes(report_dir):
    html = _html(report_dir)
    assert 'data-skipped="tsne_clusters"' in html  # t-SNE disabled in the fixture
    assert "obsm[&#x27;X_tsne&#x27;]" in html
    assert "Marker genes not in the data" in html and "IL7R" in html
    assert "Chosen genes not in the data, skipped: CST3" in html


def test_tables_shapes_clusters_markers_provenance(report_dir, result):
    html = _html(report_dir)
    tables = _tables(html)
    shapes = next(t for t in tables if "cells removed" in t.columns)
    assert shapes["step"].iloc[0] == "input"
    assert "hvg_subset" in set(shapes["step"])
    assert _num(shapes["genes"]).iloc[-1] == result.n_vars
    assert _num(shapes["cells"]).iloc[-1] == result.n_obs
    sizes = next(t for t in tables if "% of cells" in t.columns)
    assert _num(sizes["cells"]).sum() == result.n_obs
    assert len(sizes) == result.obs["leiden"].nunique()
    markers = next(t for t in tables if "top 5 (t-test)" in t.columns)
    assert "top 5 (wilcoxon)" in markers.columns
    prov = next(t for t in tables if "fallback reason" in t.columns)
    steps = set(prov["step"])
    assert {"pca", "neighbors", "leiden", "umap", "rank_genes_groups [wilcoxon]"} <= steps
    assert "total" in steps
    assert "scanpy (report)" in html


def test_markers_csv_has_every_cluster_for_both_methods(report_dir, result):
    df = pd.read_csv(report_dir / "markers.csv", dtype={"cluster": str})
    assert list(df.columns[:4]) == ["method", "cluster", "rank", "gene"]
    clusters = set(result.obs["leiden"].cat.categories)
    for method in ("t-test", "wilcoxon"):
        sel = df[df["method"] == method]
        assert set(sel["cluster"]) == clusters
        assert sel.groupby("cluster")["rank"].min().eq(1).all()
    assert 'href="markers.csv"' in _html(report_dir)


def test_bare_anndata_skips_every_result_figure_and_replaces_its_report(tmp_path):
    rng = np.random.default_rng(0)
    bare = ad.AnnData(rng.poisson(1.0, size=(60, 30)).astype(np.float32))
    out = tmp_path / "bare"
    gpu_sc.report(bare, out)
    first = _html(out)
    assert "data-failed" not in first
    for fid in ("pca", "umap_clusters", "paga", "rank_genes_t_test", "dotplot", "qc_violin"):
        assert f'data-skipped="{fid}"' in first
    assert 'data-figure="highest_expr_genes"' in first  # X holds counts
    gpu_sc.report(bare, out, title="second")  # an existing report is replaced
    assert "<title>second</title>" in _html(out)
    assert [p.name for p in tmp_path.iterdir()] == ["bare"]  # no temporary directories left


def test_report_refuses_a_nonempty_directory_that_is_not_a_report(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds no report"):
        gpu_sc.report(ad.AnnData(np.ones((5, 4), dtype=np.float32)), tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_large_atlas_violins_draw_a_subsample_and_say_so(result, monkeypatch):
    monkeypatch.setattr(report_figures, "SUBSAMPLE_CELLS", 200)
    view = report_figures.plot_view(result, genes=[], markers=[], groupby="leiden", annotation=None)
    assert view.subsample().n_obs == 200
    assert view.subsample() is view.subsample()  # drawn once, reused by every violin
    assert "random subsample of 200" in view.subsample_note()
    assert view.point_size == pytest.approx(min(120_000 / result.n_obs, 60.0))


def _write_mapping(path: Path, clusters, extra: dict | None = None) -> Path:
    rows = {c: f"type {int(c) % 2}" for c in clusters} | (extra or {})
    path.write_text("cluster,cell_type\n" + "".join(f"{k},{v}\n" for k, v in rows.items()))
    return path


def test_annotate_cli_adds_cell_type_and_report_colours_by_it(result, genes, tmp_path):
    unlabelled = result.copy()
    del unlabelled.obs["cell_type"]  # the synthetic ground truth; a real result has none
    h5ad = write_h5ad(unlabelled, tmp_path / "result.h5ad")
    clusters = list(result.obs["leiden"].cat.categories)
    mapping = _write_mapping(tmp_path / "types.csv", clusters)
    out = tmp_path / "annotated.h5ad"
    assert main(["annotate", str(h5ad), str(mapping), "-o", str(out)]) == 0
    annotated = read_h5ad(out)
    assert isinstance(annotated.obs["cell_type"].dtype, pd.CategoricalDtype)
    expected = annotated.obs["leiden"].astype(int).mod(2).map(lambda i: f"type {i}")
    assert (annotated.obs["cell_type"].astype(str) == expected).all()
    assert annotated.uns["gpu_sc"]["annotation"]["key"] == "cell_type"

    rep = tmp_path / "rep"
    assert (
        main(
            ["report", str(out), "-o", str(rep), "--genes", genes[0], "--markers", ",".join(genes)]
        )
        == 0
    )
    html = _html(rep)
    assert "UMAP coloured by leiden and cell_type" in html
    assert "marker genes by cell_type" in html
    assert "<th>cell type</th>" in html
    assert "data-failed" not in html


def test_annotate_cli_errors_name_unknown_clusters(result, tmp_path, capsys):
    h5ad = write_h5ad(result.copy(), tmp_path / "result.h5ad")
    clusters = list(result.obs["leiden"].cat.categories)
    mapping = _write_mapping(tmp_path / "types.csv", clusters, {"97": "ghost", "98": "ghost"})
    out = tmp_path / "annotated.h5ad"
    assert main(["annotate", str(h5ad), str(mapping), "-o", str(out), "--key", "guess"]) == 1
    err = capsys.readouterr().err
    assert "clusters not in the data: ['97', '98']" in err
    assert not out.exists()


def test_annotation_requires_every_cluster_and_keeps_foreign_columns(result):
    adata = result.copy()
    clusters = list(adata.obs["leiden"].cat.categories)
    with pytest.raises(
        AnnotationError, match=re.escape(f"without a cell type in the mapping: ['{clusters[-1]}']")
    ):
        apply_annotation(adata, {c: "x" for c in clusters[:-1]})
    with pytest.raises(AnnotationError, match="already exists"):  # synthetic ground truth
        apply_annotation(adata, {c: "x" for c in clusters})
    apply_annotation(adata, {c: "x" for c in clusters}, key="named")
    assert list(adata.obs["named"].cat.categories) == ["x"]


def test_read_mapping_toml_and_tsv(tmp_path):
    toml = tmp_path / "m.toml"
    toml.write_text('[cell_type]\n"0" = "CD4 T"\n"1" = "B"\n')
    assert read_mapping(toml) == {"0": "CD4 T", "1": "B"}
    toml.write_text('0 = "CD4 T"\n')
    assert read_mapping(toml) == {"0": "CD4 T"}
    tsv = tmp_path / "m.tsv"
    tsv.write_text("leiden\tcell type\n# comment\n0\tCD4 T\n\n1\tB\n")
    assert read_mapping(tsv) == {"0": "CD4 T", "1": "B"}
    tsv.write_text("0\tCD4 T\n0\tB\n")
    with pytest.raises(AnnotationError, match="listed twice"):
        read_mapping(tsv)


def test_report_annotation_argument_labels_a_copy_not_the_callers_obs(result):
    from gpu_sc.report import build, figures

    clusters = list(result.obs["leiden"].cat.categories)
    view = figures.plot_view(result, genes=[], markers=[], groupby="leiden", annotation=None)
    key = build._annotation(result, view, {c: f"T{c}" for c in clusters}, "leiden")
    assert key == "cell_type"
    labels = view.adata.obs["cell_type"].astype(str)
    assert (labels == "T" + result.obs["leiden"].astype(str)).all()
    assert not result.obs["cell_type"].astype(str).str.startswith("T").any()  # truth untouched


@pytest.mark.parametrize(
    ("pipe", "line"),
    [
        (
            {
                "backend": "scanpy",
                "requested_backend": "auto",
                "backend_reason": "auto: no usable CUDA (no GPU); using scanpy",
            },
            "scanpy (auto: no usable CUDA (no GPU); using scanpy)",
        ),
        (
            {
                "backend": "numpy",
                "requested_backend": "numpy",
                "backend_reason": "requested 'numpy'",
            },
            "numpy (requested 'numpy')",
        ),
        (
            {"backend": "numpy, scanpy", "requested_backend": "numpy", "backend_reason": "other"},
            "numpy, scanpy (requested numpy: other)",
        ),
    ],
)
def test_backend_line_names_the_request_once(pipe, line):
    from gpu_sc.report.tables import backend_line

    assert backend_line(pipe) == line


@pytest.mark.parametrize("kind", ["dotplot", "stacked_violin"])
def test_marker_plots_have_no_empty_band_above_them(kind):
    """scanpy pads a plot of few groups up to its minimum height with an empty row above the
    dots; the report sizes the plot to its rows instead."""
    import matplotlib.pyplot as plt
    import scanpy as sc

    rng = np.random.default_rng(0)
    a = ad.AnnData(rng.poisson(1.0, (200, 4)).astype(np.float32))
    a.var_names = [f"G{i}" for i in range(4)]
    a.obs["cl"] = pd.Categorical(rng.integers(0, 5, 200).astype(str))

    def main_axes_top(fit: bool) -> float:
        plot = getattr(sc.pl, kind)(a, list(a.var_names), groupby="cl", return_fig=True)
        if fit:
            report_figures._fit_height(plot)
        plot.make_figure()
        top = plot.get_axes()["mainplot_ax"].get_position().y1  # in figure fractions
        plt.close("all")
        return top

    top = plt.rcParams["figure.subplot.top"]  # matplotlib's margin, the same in both
    assert main_axes_top(fit=False) < 0.8 * top  # scanpy's own: a band of over 20% above
    assert main_axes_top(fit=True) == pytest.approx(top, abs=0.01)
