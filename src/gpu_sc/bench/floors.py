"""Roofline floors: the least time a step can take on a device, from the work it must do.

For each step a simple model (below, one function per step) gives the bytes the step must
move through memory at least once and the arithmetic operations it must do, from the data's
shape at the step's input. With the device's measured copy bandwidth ``B`` (bytes/s) and
float32 matmul rate ``F`` (flop/s), the floor is ``max(bytes / B, ops / F)``; the report
shows measured time / floor (1 = at the roofline; large = room to improve).

The models are deliberately optimistic, so that the floor is a lower bound for any sensible
implementation: every array is read/written exactly once, every operation (a logarithm, a
comparison in a sort) counts as one matmul-speed flop, and intermediate arrays are assumed to
stay in cache. Symbols: ``n`` cells and ``g`` genes at the step's input, ``nnz`` stored values
of a sparse ``X`` (``n*g`` when dense), ``k`` neighbours, ``d`` PCs used, ``E = n*k`` graph
edges, ``nr``/``gr``/``nnzr`` the same for ``adata.raw`` (marker genes run on it);
``E`` is the stored entries of ``obsp['connectivities']`` when the graph exists.

- filter_cells, filter_genes, calculate_qc_metrics: read CSR values + column indices once
  (``8*nnz`` bytes), ``2*nnz`` ops (count and sum).
- normalize_total: read values + indices, write values: ``12*nnz`` bytes, ``2*nnz`` ops.
- log1p: read + write values: ``8*nnz`` bytes, ``nnz`` ops.
- highly_variable_genes (per-gene mean and variance): ``8*nnz`` bytes, ``3*nnz`` ops.
- regress_out (``p`` regressors + intercept, least squares per gene): read ``X``, write a
  dense ``n*g`` float32 result: ``8*nnz + 4*n*g`` bytes; ``4*n*g*(p+1)`` ops (``R^T X`` and
  the residual ``X - R B``).
- scale: read + write a dense ``n*g`` float32 matrix: ``8*n*g`` bytes, ``3*n*g`` ops.
- pca: read ``X`` once, ``2*n*g**2`` ops (the ``g x g`` covariance ``X^T X``; any exact
  method, ARPACK or randomized SVD, touches every value at least as often).
- neighbors: exact kNN by brute force: ``2*n**2*d`` ops, read ``n*d`` floats, write distances
  and connectivities (``2 * E * 12`` bytes). An approximate method (pynndescent) does less
  work than brute force, so scanpy's kNN can go below this floor (ratio < 1).
- leiden (``it`` iterations): ``it`` passes over the CSR graph, ``E*12`` bytes and ``E`` ops
  each.
- paga: one pass over the graph (``E*12`` bytes, ``E`` ops).
- umap (``ep`` epochs, 5 negative samples per edge, 2-D): per epoch read the graph and update
  the embedding, ``E*12 + 16*n`` bytes, ``E*6*2*3`` ops.
- tsne (``it=1000`` iterations, ``3*perplexity`` neighbours, 2-D, attractive forces only):
  per iteration ``n*3*perplexity*(8 + 8)`` bytes and ``n*3*perplexity*6`` ops.
- rank_genes_groups t-test / logreg: per-group sums over ``raw`` in one pass (``8*nnzr``
  bytes, ``3*nnzr`` ops); wilcoxon: rank the stored values of each gene
  (``8*nnzr`` bytes, ``nnzr*log2(nr)`` comparisons).

Steps without a model (``anndata`` bookkeeping such as subsetting) get no floor.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from .. import catalogue
from ..backends import cuda_status, is_gpu
from ..dispatch.arrays import array_module
from .machine import cpu_model

__all__ = ["DeviceRates", "Work", "floor_seconds", "measure_device", "step_work"]


@dataclass(frozen=True)
class DeviceRates:
    """Measured speed limits of one device."""

    device: str  # "host" or "gpu"
    name: str
    bandwidth_bytes_per_s: float  # large array copy: (read + write) bytes / s
    matmul_flop_per_s: float  # float32 square matmul: 2*m**3 / s
    copy_bytes: int
    matmul_size: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Work:
    """Bytes a step must move and operations it must do (see the module docstring)."""

    bytes: float
    ops: float
    model: str


def floor_seconds(work: Work | None, rates: DeviceRates | None) -> float | None:
    """``max(bytes / bandwidth, ops / matmul rate)``, or None without a model or rates."""
    if work is None or rates is None:
        return None
    return max(work.bytes / rates.bandwidth_bytes_per_s, work.ops / rates.matmul_flop_per_s)


def measure_device(
    backend: str, *, copy_mib: int | None = None, matmul_size: int | None = None, repeats: int = 3
) -> DeviceRates:
    """Measure copy bandwidth and float32 matmul rate where ``backend`` computes.

    ``"scanpy"`` and ``"numpy"`` measure the host (NumPy); ``"cupy"`` the current CUDA device
    (synchronised). The best of ``repeats`` is kept (the device's capability, not its noise).
    """

    on_gpu = is_gpu(backend)
    am = array_module("cupy" if on_gpu else "numpy")
    xp = am.xp
    copy_mib = copy_mib or (1024 if on_gpu else 128)  # well beyond the last-level cache
    matmul_size = matmul_size or (8192 if on_gpu else 1536)
    n_copy = copy_mib * 2**20 // 4
    src = xp.ones(n_copy, dtype=xp.float32)
    dst = xp.empty_like(src)
    # the lambdas' names are deleted below, after the lambdas have run
    copy_s = _best(lambda: xp.copyto(dst, src), am.synchronize, repeats)  # noqa: F821
    a = xp.ones((matmul_size, matmul_size), dtype=xp.float32)
    b = xp.ones((matmul_size, matmul_size), dtype=xp.float32)
    c = xp.empty_like(a)
    mm_s = _best(lambda: xp.matmul(a, b, out=c), am.synchronize, repeats)  # noqa: F821
    del src, dst, a, b, c
    am.release_memory()
    name = _gpu_name() if on_gpu else _cpu_name()
    return DeviceRates(
        device="gpu" if on_gpu else "host",
        name=name,
        bandwidth_bytes_per_s=2 * n_copy * 4 / copy_s,
        matmul_flop_per_s=2 * matmul_size**3 / mm_s,
        copy_bytes=n_copy * 4,
        matmul_size=matmul_size,
    )


def _best(func: Callable[[], Any], sync: Callable[[], None], repeats: int) -> float:
    func()  # warm-up: page faults, cuBLAS handle, kernel compilation
    sync()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        func()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def _cpu_name() -> str:
    return cpu_model()


def _gpu_name() -> str:
    return cuda_status().device_name or "unknown GPU"


# -- per-step work models ---------------------------------------------------------------------


def step_work(step: str, params: dict[str, Any], state: dict[str, Any]) -> Work | None:
    """The :class:`Work` model of ``step`` for input ``state`` (see the module docstring).

    ``step`` is the dispatched function's name (provenance ``step``), ``params`` its recorded
    scanpy parameters and ``state`` the data shape at its input: ``n_obs``, ``n_vars``,
    ``nnz``, and ``raw_n_obs``/``raw_n_vars``/``raw_nnz`` when ``adata.raw`` is set.
    """
    model = _MODELS.get(step)
    return None if model is None else model(params, state)


def _csr_pass(nnz: float, ops_per_value: float, bytes_per_value: float, what: str) -> Work:
    return Work(bytes_per_value * nnz, ops_per_value * nnz, what)


def _qc(params, s):
    return _csr_pass(s["nnz"], 2, 8, "read CSR once: 8*nnz B, 2*nnz ops")


def _normalize(params, s):
    return _csr_pass(s["nnz"], 2, 12, "read values+indices, write values: 12*nnz B, 2*nnz ops")


def _log1p(params, s):
    return _csr_pass(s["nnz"], 1, 8, "read+write values: 8*nnz B, nnz ops")


def _hvg(params, s):
    return _csr_pass(s["nnz"], 3, 8, "per-gene mean/var in one pass: 8*nnz B, 3*nnz ops")


def _regress_out(params, s):
    n, g = s["n_obs"], s["n_vars"]
    p = len(params.get("keys") or []) + 1
    return Work(
        8 * s["nnz"] + 4 * n * g,
        4 * n * g * p,
        f"least squares, {p} regressors: 8*nnz + 4*n*g B, 4*n*g*{p} ops",
    )


def _scale(params, s):
    n, g = s["n_obs"], s["n_vars"]
    return Work(8 * n * g, 3 * n * g, "read+write dense n*g float32: 8*n*g B, 3*n*g ops")


def _pca(params, s):
    n, g = s["n_obs"], s["n_vars"]
    return Work(
        8 * s["nnz"] if s["nnz"] < n * g else 4 * n * g,
        2 * n * g * g,
        "read X once, covariance X^T X: 2*n*g^2 ops",
    )


def _neighbors(params, s):
    n = s["n_obs"]
    d = params.get("n_pcs") or 50
    k = params.get("n_neighbors") or 15
    return Work(
        4 * n * d + 2 * n * k * 12,
        2 * n * n * d,
        f"exact kNN brute force: 2*n^2*d ops (d={d}, k={k})",
    )


def _edges(s) -> float:
    """Stored edges of the kNN graph (``obsp['connectivities']``), else ``15*n``."""
    return s.get("graph_nnz") or 15 * s["n_obs"]


def _leiden(params, s):
    it = params.get("n_iterations") or 2
    it = 10 if it < 0 else it  # -1 = until converged: count 10 passes
    e = _edges(s)
    return Work(it * e * 12, it * e, f"{it} passes over the kNN graph: E*12 B, E ops each")


def _paga(params, s):
    e = _edges(s)
    return Work(e * 12, e, "one pass over the kNN graph")


def _umap(params, s):
    n = s["n_obs"]
    ep = params.get("maxiter") or params.get("n_epochs") or (200 if n > 10_000 else 500)
    e = _edges(s)
    return Work(
        ep * (e * 12 + 16 * n),
        ep * e * 6 * 2 * 3,
        f"{ep} epochs over E edges, 5 negative samples, 2-D",
    )


def _tsne(params, s):
    n = s["n_obs"]
    nn = 3 * (params.get("perplexity") or 30)
    it = 1000
    return Work(
        it * n * nn * 16,
        it * n * nn * 6,
        f"{it} iterations, attractive forces over {nn:.0f} neighbours, 2-D",
    )


def _rank_genes(params, s):
    nr = s.get("raw_n_obs", s["n_obs"])
    nnzr = s.get("raw_nnz", s["nnz"])
    if params.get("method") == "wilcoxon":
        what = "rank stored values per gene: 8*nnz(raw) B, nnz*log2(n) comparisons"
        return Work(8 * nnzr, nnzr * math.log2(max(nr, 2)), what)
    return Work(8 * nnzr, 3 * nnzr, "per-group sums over raw in one pass: 8*nnz(raw) B")


#: Step -> its model: the catalogue's ``Step.floor`` names a function ``_<floor>`` here.
_MODELS: dict[str, Callable[[dict, dict], Work]] = {
    st.name: globals()["_" + st.floor] for st in catalogue.STEPS if st.floor
}
