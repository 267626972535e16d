"""The report page: one self-contained HTML file (inline CSS, no scripts) with PNGs beside it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape

import pandas as pd

from .figures import FigureResult

__all__ = ["render"]

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0 auto;
max-width:1300px;padding:0 24px 48px;color:#222;line-height:1.4}
h1{margin:24px 0 4px}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:36px}
nav a{margin-right:14px}.sub{color:#555}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{display:inline-block;vertical-align:top;margin:8px 16px 16px 0;max-width:100%}
figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:13px;color:#444;max-width:640px}
.skipped,.failed{padding:6px 10px;border-radius:4px;font-size:14px;max-width:900px}
.skipped{background:#fff6d6;border:1px solid #e6cf7a}
.failed{background:#fde2e2;border:1px solid #e08a8a}
ul.notes li{margin:2px 0}details summary{cursor:pointer;color:#555}
pre{font-size:11px;white-space:pre-wrap;margin:2px 0}.t{color:#888;font-size:12px}
"""

#: Page sections, in order: (id, title); figures go to the section named by their ``section``.
SECTIONS = [
    ("qc", "Quality control"),
    ("hvg", "Highly variable genes"),
    ("pca", "Principal components"),
    ("embedding", "Neighbourhood graph and embeddings"),
    ("clusters", "Clusters"),
    ("markers", "Marker genes"),
    ("provenance", "Provenance"),
]


def _table(df: pd.DataFrame, cls: str = "") -> str:
    head = "".join(f"<th>{escape(str(c))}</th>" for c in df.columns)
    body = []
    for row in df.itertuples(index=False):
        cells = []
        for v in row:
            num = isinstance(v, int | float) and not isinstance(v, bool)
            text = f"{v:,.2f}" if isinstance(v, float) else f"{v:,}" if num else str(v)
            cells.append(f'<td class="num">{text}</td>' if num else f"<td>{escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>'
        + "".join(body)
        + "</tbody></table>"
    )


def _figure(f: FigureResult) -> str:
    title = escape(f.title)
    if f.file:
        return (
            f'<figure id="fig-{f.id}" data-figure="{f.id}"><img src="{escape(f.file)}" '
            f'alt="{title}" loading="lazy"><figcaption><b>{title}.</b> {escape(f.caption)} '
            f'<span class="t">({f.seconds:.1f} s to draw)</span></figcaption></figure>'
        )
    if f.skipped:
        return (
            f'<p class="skipped" id="fig-{f.id}" data-skipped="{f.id}"><b>{title}</b>: '
            f"skipped, {escape(f.skipped)}.</p>"
        )
    return (
        f'<p class="failed" id="fig-{f.id}" data-failed="{f.id}"><b>{title}</b>: failed '
        f"to draw ({escape(f.failed or '')}).</p>"
    )


def _provenance(rows: list[dict]) -> str:
    out = [
        "<table><thead><tr><th>step</th><th>backend</th><th>requested</th>"
        "<th>fallback reason</th><th>seconds</th><th>parameters</th></tr></thead><tbody>"
    ]
    total = 0.0
    for r in rows:
        total += r["seconds"]
        params = json.dumps(r["params"], default=str, indent=None)
        out.append(
            f"<tr><td>{escape(r['step'])}</td><td>{escape(str(r['backend']))}</td>"
            f"<td>{escape(str(r['requested']))}</td><td>{escape(str(r['fallback reason']))}</td>"
            f'<td class="num">{r["seconds"]:.2f}</td><td><details><summary>show</summary>'
            f"<pre>{escape(params)}</pre></details></td></tr>"
        )
    out.append(
        f'<tr><th>total</th><td></td><td></td><td></td><td class="num"><b>{total:.2f}'
        "</b></td><td></td></tr></tbody></table>"
    )
    return "".join(out)


def render(
    *,
    title: str,
    summary: Sequence[tuple[str, str]],
    notes: Sequence[str],
    figures: Sequence[FigureResult],
    shapes: list[dict],
    sizes: pd.DataFrame | None,
    markers: pd.DataFrame | None,
    markers_csv: str | None,
    provenance: list[dict],
    environment: Sequence[tuple[str, str]],
) -> str:
    """The page's HTML text."""
    by_section: dict[str, list[FigureResult]] = {}
    for f in figures:
        by_section.setdefault(f.section, []).append(f)
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        '<table class="summary">'
        + "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in summary)
        + "</table>",
        "<nav>" + "".join(f'<a href="#{sid}">{escape(t)}</a>' for sid, t in SECTIONS) + "</nav>",
    ]
    if notes:
        parts.append(
            '<h2 id="notes">Notes</h2><ul class="notes">'
            + "".join(f"<li>{escape(n)}</li>" for n in notes)
            + "</ul>"
        )
    for sid, stitle in SECTIONS:
        parts.append(f'<section id="{sid}"><h2>{escape(stitle)}</h2>')
        if sid == "qc":
            parts.append("<h3>Cells and genes after each filter</h3>")
            parts.append(
                _table(pd.DataFrame(shapes))
                if shapes
                else '<p class="skipped">No shapes recorded (not a gpu_sc pipeline result).</p>'
            )
        if sid == "clusters":
            parts.append(
                _table(sizes)
                if sizes is not None
                else '<p class="skipped">No clusters in obs: the leiden step was disabled.</p>'
            )
        if sid == "markers":
            if markers is not None and len(markers):
                link = (
                    (
                        f' (all ranked genes: <a href="{escape(markers_csv)}">'
                        f"{escape(markers_csv)}</a>)"
                    )
                    if markers_csv
                    else ""
                )
                parts.append(f"<h3>Top markers per cluster{link}</h3>")
                parts.append(_table(markers, "markers"))
            else:
                parts.append(
                    '<p class="skipped">No marker rankings in uns: the '
                    "rank_genes_groups step was disabled.</p>"
                )
        if sid == "provenance":
            parts.append(
                _provenance(provenance)
                if provenance
                else '<p class="skipped">No provenance recorded.</p>'
            )
            parts.append(
                "<h3>Versions and device</h3>"
                + _table(pd.DataFrame(list(environment), columns=["", "value"]))
            )
        parts.extend(_figure(f) for f in by_section.get(sid, []))
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)
