"""Per-step provenance: what ran where, how, and how long.

Where a step's record goes:

- every record, with its timing, goes to an in-process log: :func:`history` (the most recent
  :data:`HISTORY_SIZE`), :func:`last` (the latest one);
- inside :func:`gpu_sc.pipeline` (and any block under :func:`recording`) it is also appended to
  ``adata.uns["gpu_sc"]``, with timings: the pipeline's full provenance, as before;
- a step called on its own (``gpu_sc.pp.log1p(adata)``) writes nothing into the AnnData, so
  its output keys are scanpy's and two identical calls give equal AnnData objects; with
  ``gpu_sc.settings.record_steps = True`` it appends its record to ``adata.uns["gpu_sc"]``
  without the timing (``seconds`` NaN), which keeps identical calls equal.

Everything here is stored in types that ``AnnData.write_h5ad`` and ``write_zarr`` write
natively, so a result round-trips through anndata and scanpy without gpu_sc:

- ``provenance``: a :class:`pandas.DataFrame`, one row per executed step, columns
  :data:`PROVENANCE_COLUMNS` (``fallback_reason`` ``""`` for none, ``params`` JSON text);
- ``pipeline``: strings, a dict of step counts per backend, ``config`` as JSON text and
  ``shapes`` as a DataFrame (step, n_obs, n_vars);
- ``versions`` (a dict of strings), ``machine`` and, on a GPU, ``device``.

Read them with :func:`provenance` and :func:`pipeline_record`, which also accept the older
forms (a list of dicts; the JSON text of ``gpu_sc.io`` files written before).
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import json
import math
import platform
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

from .._settings import settings
from .._version import __version__
from ..backends import cuda_status, find

__all__ = [
    "HISTORY_SIZE",
    "PROVENANCE_COLUMNS",
    "clear_history",
    "environment",
    "history",
    "last",
    "kernel_log",
    "note_kernel",
    "pipeline_record",
    "provenance",
    "record_step",
    "recording",
    "writes_uns",
    "store_pipeline_record",
    "summarize_kernels",
    "to_native",
]

UNS_KEY = "gpu_sc"

#: Columns of ``adata.uns["gpu_sc"]["provenance"]``, in order.
PROVENANCE_COLUMNS = (
    "step",
    "backend",
    "requested",
    "fallback_reason",
    "params",
    "seconds",
    "note",
    "engine",
)


#: How many records :func:`history` keeps (the oldest are dropped first).
HISTORY_SIZE = 1000
# (weak reference to the AnnData the step ran on or None, record)
_HISTORY: collections.deque[tuple[Any, dict[str, Any]]] = collections.deque(maxlen=HISTORY_SIZE)
# Set by :func:`recording` (the pipeline's runner): records go into the AnnData with timings.
_RECORDING = contextvars.ContextVar("gpu_sc_recording", default=False)


@contextlib.contextmanager
def recording() -> Iterator[None]:
    """Inside this block every step appends its record, with its timing, to the AnnData it
    ran on (``adata.uns["gpu_sc"]["provenance"]``), as :func:`gpu_sc.pipeline` does."""
    token = _RECORDING.set(True)
    try:
        yield
    finally:
        _RECORDING.reset(token)


def writes_uns() -> bool | str:
    """Whether a step's record goes into its AnnData now: ``"timed"`` inside :func:`recording`
    (the pipeline), ``"untimed"`` with ``gpu_sc.settings.record_steps``, else False."""
    if _RECORDING.get():
        return "timed"

    return "untimed" if settings.record_steps else False


def history(adata=None) -> list[dict[str, Any]]:
    """The records of the steps run in this process, oldest first (the latest
    :data:`HISTORY_SIZE`), each a dict with the keys of :data:`PROVENANCE_COLUMNS`
    (``params`` a dict, ``fallback_reason`` None when the requested backend ran it).
    ``adata``: only the steps that ran on that object (``copy=True`` runs on the copy it
    returns)."""
    return [
        dict(rec, params=dict(rec["params"]))
        for ref, rec in _HISTORY
        if adata is None or (ref is not None and ref() is adata)
    ]


def last(adata=None) -> dict[str, Any] | None:
    """The record of the latest step run in this process, or on ``adata`` when given (None
    when there is none)."""
    for ref, rec in reversed(_HISTORY):
        if adata is None or (ref is not None and ref() is adata):
            return dict(rec, params=dict(rec["params"]))
    return None


def clear_history() -> None:
    """Forget the records :func:`history` holds."""
    _HISTORY.clear()


def record_step(
    adata,
    *,
    step: str,
    backend: str,
    requested: str,
    fallback_reason: str | None,
    params: Mapping[str, Any],
    seconds: float,
    note: str = "",
    engine: Mapping[str, Any] | None = None,
) -> None:
    """Log one step's record (:func:`history`) and, where :func:`writes_uns` says so, append
    it to ``adata.uns["gpu_sc"]["provenance"]`` (a DataFrame). ``adata`` may be None or a bare
    array (a step run on an array): the record is then only logged.

    ``engine``: what the engine ran with (``precision``, and what the step chose, e.g. the
    kNN algorithm with ``nlist``/``nprobe``), stored as JSON text; empty for scanpy and the
    pipeline's own steps.
    """
    plain = jsonable(dict(params))
    try:
        ref = None if adata is None else weakref.ref(adata)
    except TypeError:  # an object without weak references
        ref = None
    _HISTORY.append(
        (
            ref,
            {
                "step": str(step),
                "backend": str(backend),
                "requested": str(requested),
                "fallback_reason": fallback_reason or None,
                "params": plain,
                "seconds": float(seconds),
                "note": note or "",
                "engine": jsonable(dict(engine)) if engine else {},
            },
        )
    )
    mode = writes_uns()
    if not mode or not hasattr(adata, "uns"):
        return
    info = adata.uns.setdefault(UNS_KEY, {})
    row = {
        "step": str(step),
        "backend": str(backend),
        "requested": str(requested),
        "fallback_reason": fallback_reason or "",
        "params": json.dumps(plain),
        "seconds": float(seconds) if mode == "timed" else math.nan,
        "note": note or "",
        "engine": json.dumps(jsonable(dict(engine))) if engine else "",
    }
    info["provenance"] = _append_row(_provenance_frame(info.get("provenance")), row)
    info.update(environment(backend))


def provenance(adata) -> list[dict[str, Any]]:
    """The executed steps recorded on ``adata``, one dict each (empty when none).

    Keys are :data:`PROVENANCE_COLUMNS`; ``params`` is a dict and ``fallback_reason`` ``None``
    when the requested backend ran the step.
    """
    info = adata.uns.get(UNS_KEY, {})
    prov = info.get("provenance") if isinstance(info, Mapping) else None
    if prov is None:
        return []
    if isinstance(prov, str):  # a gpu_sc.io file of an earlier version
        prov = json.loads(prov)
    if not isinstance(prov, pd.DataFrame):  # a list of dicts (earlier in-memory form)
        return [dict(p) for p in prov]
    rows = []
    for rec in prov.to_dict("records"):
        rec = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in rec.items()}
        rec["params"] = json.loads(rec["params"]) if rec.get("params") else {}
        eng = rec.get("engine")
        rec["engine"] = json.loads(eng) if isinstance(eng, str) and eng else {}
        rec["fallback_reason"] = rec.get("fallback_reason") or None
        rec["seconds"] = float(rec.get("seconds", 0.0))
        rows.append(rec)
    return rows


def store_pipeline_record(adata, record: Mapping[str, Any]) -> None:
    """Store the pipeline's own record (backend, config, shapes) in writable form."""
    rec = dict(record)
    if "config" in rec and not isinstance(rec["config"], str):
        rec["config"] = json.dumps(jsonable(rec["config"]))
    if "shapes" in rec and not isinstance(rec["shapes"], pd.DataFrame):
        shapes = pd.DataFrame(list(rec["shapes"]), columns=["step", "n_obs", "n_vars"])
        shapes.index = shapes.index.astype(str)
        rec["shapes"] = shapes
    adata.uns.setdefault(UNS_KEY, {})["pipeline"] = rec


def pipeline_record(adata) -> dict[str, Any]:
    """``adata.uns["gpu_sc"]["pipeline"]`` decoded: ``config`` a dict, ``shapes`` a list of
    ``{step, n_obs, n_vars}`` dicts (``{}`` when the pipeline did not run)."""
    info = adata.uns.get(UNS_KEY, {})
    rec = info.get("pipeline") if isinstance(info, Mapping) else None
    if not isinstance(rec, Mapping):
        return {}
    out = dict(rec)
    if isinstance(out.get("config"), str):
        out["config"] = json.loads(out["config"])
    shapes = out.get("shapes")
    if isinstance(shapes, pd.DataFrame):
        out["shapes"] = [
            {"step": str(r["step"]), "n_obs": int(r["n_obs"]), "n_vars": int(r["n_vars"])}
            for r in shapes.to_dict("records")
        ]
    for key, value in out.items():
        if isinstance(value, np.generic):
            out[key] = value.item()
    return out


def to_native(info: Any) -> Any:
    """``uns["gpu_sc"]`` of any earlier form (JSON text, lists of dicts) in the writable form."""
    if isinstance(info, Mapping) and set(info) == {"json"}:
        info = json.loads(str(info["json"]))
    if not isinstance(info, Mapping):
        return info
    info = dict(info)
    prov = info.get("provenance")
    if prov is not None and not isinstance(prov, pd.DataFrame):
        holder = _Holder({UNS_KEY: {"provenance": prov}})
        frame = _provenance_frame(None)
        for rec in provenance(holder):
            frame = _append_row(
                frame,
                {
                    "step": str(rec.get("step", "")),
                    "backend": str(rec.get("backend", "")),
                    "requested": str(rec.get("requested", "")),
                    "fallback_reason": rec.get("fallback_reason") or "",
                    "params": json.dumps(jsonable(rec.get("params") or {})),
                    "seconds": float(rec.get("seconds") or 0.0),
                    "note": str(rec.get("note") or ""),
                    # a list form's engine record (dict) stays JSON text, as record_step writes
                    "engine": json.dumps(jsonable(dict(eng))) if (eng := rec.get("engine")) else "",
                },
            )
        info["provenance"] = frame
    if isinstance(info.get("pipeline"), Mapping):
        holder = _Holder({})
        store_pipeline_record(holder, info["pipeline"])
        info["pipeline"] = holder.uns[UNS_KEY]["pipeline"]
    return info


class _Holder:  # the one attribute the readers above use
    def __init__(self, uns):
        self.uns = uns


def _provenance_frame(prov) -> pd.DataFrame:
    if isinstance(prov, pd.DataFrame):
        return prov
    if prov is None:
        frame = pd.DataFrame(
            {c: pd.Series(dtype=float if c == "seconds" else object) for c in PROVENANCE_COLUMNS}
        )
        frame.index = frame.index.astype(str)
        return frame
    return to_native({"provenance": prov})["provenance"]


def _append_row(frame: pd.DataFrame, row: dict) -> pd.DataFrame:
    new = pd.DataFrame([row], columns=list(PROVENANCE_COLUMNS), index=[str(len(frame))])
    new = new.astype({c: object for c in PROVENANCE_COLUMNS if c != "seconds"})
    if len(frame) == 0:
        return new
    return pd.concat([frame, new])


def environment(backend: str | None = None) -> dict[str, Any]:
    """Versions of the libraries that produce results, and the GPU's name if one is used."""
    from importlib.metadata import PackageNotFoundError, version

    def _v(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    versions = {
        "gpu_sc": __version__,
        "scanpy": _v("scanpy"),
        "anndata": _v("anndata"),
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    used = find(backend)
    status = cuda_status() if used is not None and used.is_gpu else None
    if status is not None and status.cupy_version:
        versions["cupy"] = status.cupy_version
    out = {"versions": versions, "machine": platform.node() or "unknown"}
    if status is not None and status.device_name:
        out["device"] = status.device_name
    return out


def jsonable(value: Any) -> Any:
    """Parameters as plain JSON-able values (for h5ad and the report)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray) and value.size <= 64:
        return value.tolist()
    if isinstance(value, type):
        return value.__name__
    return f"<{type(value).__name__}>"


# -- fused kernels: what ran (gpu_sc.kernels.cuda.run_kernel notes each call) -------------------

_KERNEL_LOG: contextvars.ContextVar[list | None] = contextvars.ContextVar(
    "gpu_sc_kernel_log", default=None
)


@contextlib.contextmanager
def kernel_log() -> Iterator[list[dict[str, str]]]:
    """Collect ``{"kernel": name, "how": ...}`` for every fused-kernel call in the block."""
    entries: list[dict[str, str]] = []
    token = _KERNEL_LOG.set(entries)
    try:
        yield entries
    finally:
        _KERNEL_LOG.reset(token)


def note_kernel(name: str, how: str) -> None:
    """Record that kernel ``name`` ran ``how`` (in the innermost :func:`kernel_log`, if any)."""
    entries = _KERNEL_LOG.get()
    if entries is not None:
        entries.append({"kernel": name, "how": how})


def summarize_kernels(entries: list[dict[str, str]]) -> str:
    """``"kernels: knn_tile_topk x12 (fused kernel)"``, or ``""`` when none ran."""
    counts: dict[tuple[str, str], int] = {}
    for e in entries:
        counts[(e["kernel"], e["how"])] = counts.get((e["kernel"], e["how"]), 0) + 1
    if not counts:
        return ""
    return "kernels: " + ", ".join(f"{k} x{n} ({how})" for (k, how), n in counts.items())
