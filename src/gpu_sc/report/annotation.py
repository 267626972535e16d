"""Cluster annotation: a mapping file (cluster -> cell type) applied as a categorical obs column.

Accepted files
--------------
TOML
    ``"0" = "CD4 T"`` pairs at the top level, or inside one table (e.g. ``[cell_type]``).
CSV / TSV (``.csv``, ``.tsv``, ``.txt``)
    Two columns, cluster then cell type; a first row whose first field is ``cluster`` or the
    cluster column's name (e.g. ``leiden``) is a header; blank lines and ``#`` lines are ignored.

Several clusters may share one cell type. Every cluster of the data must be named and every
named cluster must exist: otherwise :class:`AnnotationError` lists the offending clusters.
"""

from __future__ import annotations

import csv
import tomllib
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

__all__ = ["AnnotationError", "apply_annotation", "cell_type_labels", "read_mapping"]

#: Where :func:`apply_annotation` records what it did, inside ``adata.uns["gpu_sc"]``.
UNS_RECORD = "annotation"


class AnnotationError(ValueError):
    """A mapping file is malformed or does not match the clusters of the data."""


def read_mapping(path: str | Path, *, groupby: str = "leiden") -> dict[str, str]:
    """Read a cluster -> cell-type mapping from a TOML or two-column CSV/TSV file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mapping file not found: {path}")
    if path.suffix.lower() == ".toml":
        return _read_toml(path)
    if path.suffix.lower() in (".csv", ".tsv", ".txt"):
        return _read_table(path, groupby)
    raise AnnotationError(f"{path}: mapping must be .toml, .csv, .tsv or .txt")


def _read_toml(path: Path) -> dict[str, str]:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise AnnotationError(f"{path}: invalid TOML: {exc}") from None
    if len(data) == 1 and isinstance(next(iter(data.values())), dict):
        data = next(iter(data.values()))  # one table, e.g. [cell_type]
    bad = [k for k, v in data.items() if not isinstance(v, str)]
    if bad:
        raise AnnotationError(f"{path}: values must be cell-type strings; not for keys {bad}")
    return {str(k): v for k, v in data.items()}


def _read_table(path: Path, groupby: str) -> dict[str, str]:
    text = path.read_text()
    delimiter = "\t" if path.suffix.lower() == ".tsv" or "\t" in text.split("\n", 1)[0] else ","
    rows = [
        [f.strip() for f in row]
        for row in csv.reader(text.splitlines(), delimiter=delimiter)
        if row and any(f.strip() for f in row) and not row[0].lstrip().startswith("#")
    ]
    if rows and rows[0][0].lower() in ("cluster", groupby.lower()):
        rows = rows[1:]
    mapping: dict[str, str] = {}
    for i, row in enumerate(rows, 1):
        if len(row) != 2 or not row[0] or not row[1]:
            raise AnnotationError(f"{path}: row {i} {row}: expected two fields, cluster and type")
        if row[0] in mapping:
            raise AnnotationError(f"{path}: cluster {row[0]!r} is listed twice")
        mapping[row[0]] = row[1]
    if not mapping:
        raise AnnotationError(f"{path}: no cluster -> cell type rows")
    return mapping


def cell_type_labels(clusters: pd.Series, mapping: Mapping[str, str]) -> pd.Categorical:
    """The cell type of each cell; categories in the order of the clusters they come from.

    Raises :class:`AnnotationError` naming clusters absent from the data or absent from the
    mapping.
    """
    cats = (
        [str(c) for c in clusters.cat.categories]
        if hasattr(clusters, "cat")
        else sorted({str(c) for c in clusters})
    )
    mapping = {str(k): str(v) for k, v in mapping.items()}
    unknown = [k for k in mapping if k not in cats]
    if unknown:
        raise AnnotationError(
            f"mapping names clusters not in the data: {unknown}; clusters are {cats}"
        )
    unmapped = [c for c in cats if c not in mapping]
    if unmapped:
        raise AnnotationError(f"clusters without a cell type in the mapping: {unmapped}")
    types = list(dict.fromkeys(mapping[c] for c in cats))
    values = clusters.astype(str).map(mapping)
    return pd.Categorical(values, categories=types)


def apply_annotation(
    adata,
    mapping: Mapping[str, str] | str | Path,
    *,
    groupby: str = "leiden",
    key: str = "cell_type",
    overwrite: bool = False,
) -> None:
    """Add ``adata.obs[key]``: the cell type of each cell's ``groupby`` cluster.

    A column ``key`` that a previous annotation wrote is replaced; any other existing column
    (e.g. ground truth) is kept unless ``overwrite``.
    """
    if groupby not in adata.obs:
        raise AnnotationError(f"obs[{groupby!r}] not found; the clusters to annotate")
    if not isinstance(mapping, Mapping):
        mapping = read_mapping(mapping, groupby=groupby)
    labels = cell_type_labels(adata.obs[groupby], mapping)
    record = adata.uns.get("gpu_sc", {}).get(UNS_RECORD)
    previous = isinstance(record, Mapping) and record.get("key") == key
    if key in adata.obs and not (previous or overwrite):
        raise AnnotationError(
            f"obs[{key!r}] already exists and was not written by an annotation; "
            "choose another key (--key) or overwrite it (--overwrite, overwrite=True)"
        )
    adata.obs[key] = labels
    adata.uns.pop(f"{key}_colors", None)  # stale colours of an earlier annotation
    adata.uns.setdefault("gpu_sc", {})[UNS_RECORD] = {
        "key": key,
        "groupby": groupby,
        "mapping": {str(k): str(v) for k, v in mapping.items()},
    }
