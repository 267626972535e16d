"""The report's tables, from what the pipeline stored: shapes, clusters, markers, provenance."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from ..dispatch.provenance import pipeline_record, provenance

__all__ = [
    "backend_line",
    "cluster_sizes",
    "environment_rows",
    "marker_table",
    "markers_long",
    "provenance_rows",
    "shape_rows",
]

#: The marker methods the pipeline may store, as (method, uns key).
MARKER_KEYS = [("t-test", "rank_genes_groups_t_test"), ("wilcoxon", "rank_genes_groups_wilcoxon")]


def _info(adata) -> dict:
    info = adata.uns.get("gpu_sc", {})
    return info if isinstance(info, dict) else {}


def shape_rows(adata) -> list[dict]:
    """Cells and genes after the input, each filter, and any other step that changed them."""

    shapes = pipeline_record(adata).get("shapes", [])
    rows, last = [], None
    for s in shapes:
        shape = (int(s["n_obs"]), int(s["n_vars"]))
        is_filter = "filter" in s["step"] or "subset" in s["step"]
        if last is None or shape != last or is_filter:
            rows.append(
                {
                    "step": s["step"],
                    "cells": shape[0],
                    "genes": shape[1],
                    "cells removed": "" if last is None else last[0] - shape[0],
                    "genes removed": "" if last is None else last[1] - shape[1],
                }
            )
        last = shape
    return rows


def cluster_sizes(obs: pd.DataFrame, groupby: str, annotation: str | None) -> pd.DataFrame:
    """One row per cluster: size, share of cells and, when annotated, the cell type."""
    counts = obs[groupby].value_counts(sort=False)
    out = pd.DataFrame({"cluster": counts.index.astype(str), "cells": counts.to_numpy()})
    if annotation:
        lut = obs[[groupby, annotation]].drop_duplicates().set_index(groupby)[annotation]
        out.insert(1, "cell type", [str(lut.get(c, "")) for c in counts.index])
    out["% of cells"] = (100 * out["cells"] / max(len(obs), 1)).round(2)
    return out


def markers_long(adata) -> pd.DataFrame:
    """Every stored marker ranking, long format: method, cluster, rank, gene, statistics."""
    import scanpy as sc

    frames = []
    for method, key in MARKER_KEYS:
        if key not in adata.uns:
            continue
        df = sc.get.rank_genes_groups_df(adata, group=None, key=key)
        if "group" not in df:  # a single group comes back without the column
            df.insert(0, "group", list(adata.uns[key]["names"].dtype.names)[0])
        df.insert(0, "method", method)
        df["rank"] = df.groupby("group", observed=True).cumcount() + 1
        frames.append(df.rename(columns={"group": "cluster", "names": "gene"}))
    if not frames:
        return pd.DataFrame(columns=["method", "cluster", "rank", "gene"])
    out = pd.concat(frames, ignore_index=True)
    first = ["method", "cluster", "rank", "gene"]
    return out[first + [c for c in out.columns if c not in first]]


def marker_table(long: pd.DataFrame, sizes: pd.DataFrame, top: int = 5) -> pd.DataFrame:
    """Per cluster: its size (and cell type) and the top ``top`` genes of each method."""
    out = sizes.drop(columns=["% of cells"]).copy()
    for method in long["method"].unique():
        sel = long[(long["method"] == method) & (long["rank"] <= top)]
        genes = sel.groupby("cluster", observed=True)["gene"].agg(lambda g: ", ".join(map(str, g)))
        out[f"top {top} ({method})"] = [genes.get(c, "") for c in out["cluster"]]
    return out


def provenance_rows(adata) -> list[dict]:
    """Executed steps: step (with the marker method), backend, requested, fallback, seconds."""

    rows = []
    for p in provenance(adata):
        step = p["step"]
        method = (p.get("params") or {}).get("method")
        if step == "rank_genes_groups" and method:
            step = f"{step} [{method}]"
        rows.append(
            {
                "step": step,
                "backend": p.get("backend", ""),
                "requested": p.get("requested", ""),
                "fallback reason": p.get("fallback_reason") or "",
                "seconds": float(p.get("seconds", 0.0)),
                "params": p.get("params") or {},
            }
        )
    return rows


def backend_line(pipe: dict) -> str:
    """``scanpy (auto: no usable CUDA (...); using scanpy)``: the backend and why, once.

    The pipeline's reason already names what was requested (``auto: ...``, ``requested
    'numpy'``); it is prefixed with the request only when it does not."""
    backend, requested = pipe.get("backend", "?"), str(pipe.get("requested_backend", "?"))
    reason = str(pipe.get("backend_reason", "") or "")
    if not reason:
        return f"{backend} (requested {requested})"
    if reason.startswith((f"{requested}:", "requested")):
        return f"{backend} ({reason})"
    return f"{backend} (requested {requested}: {reason})"


def environment_rows(adata, extra: Sequence[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    """(name, value) pairs: pipeline backend, device, machine, library versions."""

    info = _info(adata)
    pipe = pipeline_record(adata)
    rows = []
    if pipe:
        rows.append(("backend", backend_line(pipe)))
    rows.append(("device", info.get("device", "none (CPU)")))
    if "machine" in info:
        rows.append(("machine", info["machine"]))
    for name, version in info.get("versions", {}).items():
        rows.append((f"{name} (pipeline)", str(version)))
    rows.extend(extra)
    return rows
