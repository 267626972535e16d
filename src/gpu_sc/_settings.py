"""Global settings of gpu_sc (backend choice, chunking, output placement)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field, fields

__all__ = ["PRECISIONS", "Settings", "settings"]

#: Values of ``settings.precision`` (and of every ``precision=`` option).
PRECISIONS = ("auto", "exact", "fast")


@dataclass
class Settings:
    """Process-wide defaults; every step also takes a per-call ``backend=``.

    Attributes
    ----------
    backend
        ``"auto"`` (default), ``"scanpy"``, ``"numpy"`` or ``"cupy"``; aliases ``"cpu"``,
        ``"gpu"`` and ``"cuda"``. See :func:`gpu_sc.backends.resolve`.
    chunk_rows
        Rows (cells) per block when a matrix is streamed in row chunks (QC, filtering,
        normalisation, log1p and HVG statistics of matrices that do not fit the device).
    max_device_nnz
        Above this many nonzeros a sparse matrix is processed in row chunks rather than moved
        whole to the device. CuPy's sparse matrices index with int32, hence ``2**31 - 1``.
    output
        ``"host"`` (default, like scanpy): results land in AnnData as NumPy/SciPy arrays;
        ``"device"``: the engine leaves CuPy arrays in ``adata.X`` and friends.
    precision
        ``"auto"`` (default), ``"exact"`` or ``"fast"``: see :func:`gpu_sc.backends.resolve_precision`.
        ``"exact"`` computes as before (float64 throughout: the numpy backend's results are
        those of earlier releases); ``"fast"`` computes the kNN distances (exact and IVF), and
        the UMAP and t-SNE optimisations where the engine implements it, in float32, with
        float64 accumulation kept where it matters (covariance/PCA, HVG statistics, sums over
        cells). ``"auto"``: ``"exact"`` on numpy, ``"fast"`` on cupy (the parity suite's
        thresholds hold in float32: ``benchmarks/results/parity_precision.json``). The
        provenance records which ran (``engine`` column).
    record_steps
        ``True``: a step called on its own (outside :func:`gpu_sc.pipeline`) also appends its
        record to ``adata.uns["gpu_sc"]``, without its timing; ``False`` (default): its record
        goes only to :func:`gpu_sc.provenance.history`, and its outputs are scanpy's keys
        alone. The pipeline always records every step, with timings, in ``uns["gpu_sc"]``.
    strict
        ``True``: a step that would fall back to scanpy raises
        :class:`gpu_sc.dispatch.FallbackError` instead; ``None`` (default): ``True`` when
        the environment sets ``GPU_SC_STRICT=1``.
    """

    backend: str = "auto"
    chunk_rows: int = 200_000
    max_device_nnz: int = 2**31 - 1
    output: str = "host"
    precision: str = "auto"
    strict: bool | None = None
    record_steps: bool = False
    _stack: list[dict] = field(default_factory=list, repr=False)

    @contextlib.contextmanager
    def override(self, **values) -> Iterator[Settings]:
        """Temporarily change settings, e.g. ``with settings.override(backend="numpy"):``."""
        names = {f.name for f in fields(self) if not f.name.startswith("_")}
        unknown = set(values) - names
        if unknown:
            raise TypeError(f"unknown setting(s) {sorted(unknown)}; valid: {sorted(names)}")
        old = {k: getattr(self, k) for k in values}
        for k, v in values.items():
            setattr(self, k, v)
        try:
            yield self
        finally:
            for k, v in old.items():
                setattr(self, k, v)


settings = Settings()
