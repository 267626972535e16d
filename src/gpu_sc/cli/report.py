"""``gpu-sc report RESULT.h5ad -o DIR``: the tutorial's figures and tables as an HTML page."""

from __future__ import annotations

import time


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="HTML report (figures, tables, provenance) of a result")
    p.add_argument("result", help="result .h5ad written by `gpu-sc run`")
    p.add_argument(
        "-o",
        "--out",
        required=True,
        help="report directory (index.html, figures/, markers.csv); replaced atomically",
    )
    add_report_options(p)
    p.set_defaults(func=run)


def add_report_options(p) -> None:
    """Options shared with ``gpu-sc run --report``."""
    p.add_argument(
        "--genes", help="comma-separated genes for the PCA/UMAP colourings (default CST3,NKG7,PPBP)"
    )
    p.add_argument(
        "--markers",
        help="comma-separated marker genes for the dot plot and stacked "
        "violin (default: the tutorial's list)",
    )
    p.add_argument("--annotation", help="cluster -> cell type mapping (TOML, CSV or TSV)")


def report_kwargs(args) -> dict:
    kwargs = {}
    if args.genes:
        kwargs["genes"] = _split(args.genes)
    if args.markers:
        kwargs["marker_genes"] = _split(args.markers)
    if args.annotation:
        kwargs["annotation"] = args.annotation
    return kwargs


def _split(text: str) -> list[str]:
    return [g.strip() for g in text.split(",") if g.strip()]


def run(args) -> int:
    from ..io import check_output_path, read_h5ad
    from ..report import report

    check_output_path(args.out, directory=True)
    t0 = time.perf_counter()
    adata = read_h5ad(args.result)
    index = report(adata, args.out, **report_kwargs(args))
    print(f"wrote {index} ({time.perf_counter() - t0:.1f} s)")
    return 0
