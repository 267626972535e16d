"""Benchmark: QC -> PCA on the Dask path (lazy .h5ad, LocalCluster with a memory limit)
against the in-memory numpy engine, on a synthetic atlas written to disk block by block.

Each path runs in its own child process (``--mode dask`` / ``--mode memory``); this driver
samples the resident set size of the child's whole process tree (the client and, for Dask,
the nanny and worker processes) every ``--sample-ms`` milliseconds and reports its peak and
the wall time. RSS of the processes is summed (shared pages count once per process, so the
Dask figure is an upper bound). Results: ``dask_atlas.json`` and ``dask_atlas.md`` in ``--out``.

Usage::

    python -m gpu_sc.bench.dask_atlas --cells 1000000 --genes 5000 --nnz-per-cell 500 \\
        --workers 2 --memory-limit 4GiB --chunk-rows 10000 --out bench_dask/
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from ..dispatch.arrays import dask_info

__all__ = ["leiden_labels", "main"]

_STEPS_AFTER_PCA = ("neighbors", "leiden", "paga", "umap", "tsne", "rank_genes_groups")


def _config() -> dict:
    return {k: {"enabled": False} for k in _STEPS_AFTER_PCA}


# -- process-tree RSS ----------------------------------------------------------------------------
def _tree_rss(pid: int) -> int:
    """Summed RSS (bytes) of process ``pid`` and all its descendants."""
    try:
        import psutil

        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return total
    except ImportError:
        return _tree_rss_proc(pid)


def _tree_rss_proc(pid: int) -> int:
    """/proc fallback of :func:`_tree_rss` (Linux)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            rss[int(d.name)] = int((d / "statm").read_text().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo.extend(children.get(p, []))
    return total


def _run_child(args: list[str], sample_s: float) -> dict:
    """Run ``python -m gpu_sc.bench.dask_atlas <args>`` and sample its tree's RSS."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "gpu_sc.bench.dask_atlas", *args])
    peak = 0
    stop = threading.Event()

    def sample():
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            stop.wait(sample_s)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    rc = proc.wait()
    stop.set()
    th.join()
    out = {"process_seconds": time.perf_counter() - t0, "peak_rss_tree_bytes": int(peak)}
    if rc != 0:
        why = " (SIGKILL: the kernel's out-of-memory killer)" if rc == -9 else ""
        out["failed"] = f"exit code {rc}{why}, peak RSS of its tree {peak / 1024**3:.2f} GiB"
    return out


# -- the two paths (children) --------------------------------------------------------------------
def _child_memory(h5ad: Path, out: Path) -> None:
    import anndata as ad

    from ..pipeline import pipeline

    t0 = time.perf_counter()
    adata = ad.read_h5ad(h5ad)
    t_read = time.perf_counter() - t0
    x = adata.X
    x_bytes = int(x.data.nbytes + x.indices.nbytes + x.indptr.nbytes)
    t1 = time.perf_counter()
    # atomic=False: the in-memory path's smallest footprint (no working copy of the input)
    pipeline(adata, _config(), backend="numpy", atomic=False)
    t_run = time.perf_counter() - t1
    _save(
        out,
        adata,
        {
            "read_seconds": t_read,
            "run_seconds": t_run,
            "x_bytes": x_bytes,
            "wall_seconds": time.perf_counter() - t0,
        },
    )


#: ``--after-pca`` steps and how the Dask child runs them once QC -> PCA is done and timed
#: (each with the tutorial's parameters, as gpu_sc.pipeline would; on CPU "auto" is scanpy).
_AFTER = {
    "neighbors": lambda pp, tl, a: pp.neighbors(a, n_neighbors=10, n_pcs=40, random_state=0),
    "leiden": lambda pp, tl, a: tl.leiden(
        a, resolution=0.9, flavor="igraph", n_iterations=2, directed=False, random_state=0
    ),
    "paga": lambda pp, tl, a: tl.paga(a, groups="leiden"),
    "umap": lambda pp, tl, a: tl.umap(a, random_state=0),
    "rank_genes_groups": lambda pp, tl, a: tl.rank_genes_groups(
        a, "leiden", method="t-test", use_raw=True
    ),
}


def _child_dask(
    h5ad: Path,
    out: Path,
    workers: int,
    memory_limit: str,
    chunk_rows: int,
    persist: bool,
    after: list[str] = (),
) -> None:
    import dask
    import distributed

    from .. import datasets, pp, tl
    from ..pipeline.on_dask import run_qc_to_pca

    t0 = time.perf_counter()
    with dask.config.set({"distributed.worker.daemon": True}):
        cluster = distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            memory_limit=memory_limit,
            dashboard_address=":0",
        )
    client = distributed.Client(cluster)
    # imports in the workers (gpu_sc, scanpy) belong to start-up, as the client's own do
    client.run(importlib.import_module, "gpu_sc.dask.steps")
    t_start = time.perf_counter() - t0
    try:
        t1 = time.perf_counter()
        adata = datasets.read_lazy(h5ad, chunk_rows=chunk_rows)
        run_qc_to_pca(adata, _config(), persist_after_hvg=persist)
        t_run = time.perf_counter() - t1
        wall = time.perf_counter() - t0
        info = dask_info(adata.X)
        t_after = {}
        for name in after:  # the rest of the pipeline on the in-memory PCA (timed apart)
            t2 = time.perf_counter()
            _AFTER[name](pp, tl, adata)
            t_after[name] = time.perf_counter() - t2
    finally:
        client.close()
        cluster.close()
    extra = {"after_pca_seconds": t_after} if after else {}
    if "leiden" in after:
        extra["after_pca_leiden_clusters"] = int(adata.obs["leiden"].nunique())
    _save(
        out,
        adata,
        {
            "cluster_start_seconds": t_start,
            "run_seconds": t_run,
            "wall_seconds": wall,
            "dask": info,
            **extra,
        },
    )


def _save(out: Path, adata, info: dict) -> None:
    np.savez(
        out.with_suffix(".npz"),
        obs_names=np.asarray(adata.obs_names, dtype=str),
        var_names=np.asarray(adata.var_names, dtype=str),
        x_pca=adata.obsm["X_pca"],
    )
    from gpu_sc.dispatch.provenance import provenance

    steps = [
        {"step": p["step"], "backend": p["backend"], "seconds": round(p["seconds"], 3)}
        for p in provenance(adata)
    ]
    info = dict(info, n_obs=adata.n_obs, n_vars=adata.n_vars, steps=steps)
    out.with_suffix(".json").write_text(json.dumps(info, indent=1, default=str))


# -- driver --------------------------------------------------------------------------------------
def _compare(mem: Path, dsk: Path, n_pcs: int = 30, leiden: bool = False) -> dict:
    a, b = np.load(mem.with_suffix(".npz")), np.load(dsk.with_suffix(".npz"))
    same_cells = bool(np.array_equal(a["obs_names"], b["obs_names"]))
    same_genes = bool(np.array_equal(a["var_names"], b["var_names"]))
    out = {"same_cells": same_cells, "same_genes_after_hvg_subset": same_genes}
    if same_cells:
        k = min(n_pcs, a["x_pca"].shape[1])
        corr = [abs(np.corrcoef(a["x_pca"][:, i], b["x_pca"][:, i])[0, 1]) for i in range(k)]
        out["pca_abs_corr_min"] = float(np.min(corr))
        out["pca_n_compared"] = k
        if leiden:
            from sklearn.metrics import adjusted_rand_score

            la, lb = leiden_labels(a["x_pca"]), leiden_labels(b["x_pca"])
            out["leiden_ari"] = float(adjusted_rand_score(la, lb))
            out["leiden_clusters"] = [int(np.unique(la).size), int(np.unique(lb).size)]
    return out


def leiden_labels(x_pca: np.ndarray) -> np.ndarray:
    """The tutorial's kNN graph (10 neighbours, 40 PCs) and Leiden (0.9) on the numpy engine."""
    import anndata as ad

    from .. import pp, tl

    adata = ad.AnnData(X=x_pca.copy(), obsm={"X_pca": x_pca})
    pp.neighbors(
        adata,
        n_neighbors=10,
        n_pcs=min(40, x_pca.shape[1]),
        use_rep="X_pca",
        random_state=0,
        backend="numpy",
    )
    tl.leiden(
        adata,
        resolution=0.9,
        flavor="igraph",
        n_iterations=2,
        directed=False,
        random_state=0,
        backend="numpy",
    )
    return adata.obs["leiden"].to_numpy()


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)

    if a.mode == "memory":
        _child_memory(a.data, a.result)
        return 0
    if a.mode == "dask":
        _child_dask(
            a.data,
            a.result,
            a.workers,
            a.memory_limit,
            a.chunk_rows,
            a.persist_after_hvg,
            [s for s in a.after_pca.split(",") if s],
        )
        return 0

    a.out.mkdir(parents=True, exist_ok=True)
    data = a.data or a.out / f"atlas_{a.cells}x{a.genes}_seed{a.seed}.h5ad"
    report: dict = {
        "machine": {
            "node": platform.node(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "args": {k: str(v) for k, v in vars(a).items() if k not in ("mode", "result")},
        "note": a.note,
    }
    _atlas(a, data, report)
    _run_paths(a, data, report)
    (a.out / "dask_atlas.json").write_text(json.dumps(report, indent=1, default=str))
    (a.out / "dask_atlas.md").write_text(_markdown(report))
    print(_markdown(report))
    return 0


def _parser() -> argparse.ArgumentParser:
    """The driver's and the children's command line."""
    p = argparse.ArgumentParser(
        prog="python -m gpu_sc.bench.dask_atlas",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--cells", type=int, default=20_000)
    p.add_argument("--genes", type=int, default=5000)
    p.add_argument("--nnz-per-cell", type=float, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory-limit", default="2GiB", help="per Dask worker")
    p.add_argument("--chunk-rows", type=int, default=10_000)
    p.add_argument("--write-chunk-rows", type=int, default=50_000)
    p.add_argument("--paths", default="dask,memory", help="which of dask,memory to run")
    p.add_argument(
        "--persist-after-hvg",
        action="store_true",
        help="Dask path: keep the HVG matrix in worker memory after the subset",
    )
    p.add_argument(
        "--after-pca",
        default="",
        help="Dask path: then run these steps on the PCA, timed apart (comma-separated: "
        + ", ".join(_AFTER)
        + ")",
    )
    p.add_argument("--sample-ms", type=float, default=50)
    p.add_argument("--note", default="", help="a remark stored with the results (machine load)")
    p.add_argument(
        "--leiden",
        action="store_true",
        help="parity: Leiden (numpy engine) on both PCA matrices, ARI",
    )
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="atlas .h5ad to use/create (default: OUT/atlas_<cells>.h5ad)",
    )
    p.add_argument("--out", type=Path, default=Path("bench_dask"))
    p.add_argument(
        "--mode", choices=("driver", "dask", "memory"), default="driver", help=argparse.SUPPRESS
    )
    p.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    return p


def _atlas(a: argparse.Namespace, data: Path, report: dict) -> None:
    """Write the atlas (or reuse the file), recording it in ``report["atlas"]``."""
    if not data.exists():
        from .. import datasets

        t0 = time.perf_counter()
        gen = datasets.write_synthetic_h5ad(
            data,
            a.cells,
            a.genes,
            nnz_per_cell=a.nnz_per_cell,
            chunk_rows=a.write_chunk_rows,
            seed=a.seed,
        )
        gen["seconds"] = time.perf_counter() - t0
        report["atlas"] = gen
    else:
        report["atlas"] = {"path": str(data), "reused": True}
    report["atlas"]["file_bytes"] = data.stat().st_size
    report["atlas"]["x_csr_bytes"] = _csr_bytes(data)


def _run_paths(a: argparse.Namespace, data: Path, report: dict) -> None:
    """Run each path in a child process; with both, their ratios and the parity."""
    common = [
        "--data",
        str(data),
        "--workers",
        str(a.workers),
        "--memory-limit",
        a.memory_limit,
        "--chunk-rows",
        str(a.chunk_rows),
    ]
    if a.persist_after_hvg:
        common.append("--persist-after-hvg")
    paths = [s.strip() for s in a.paths.split(",") if s.strip()]
    for mode in paths:
        result = a.out / f"result_{mode}"
        args = ["--mode", mode, "--result", str(result), *common]
        if mode == "dask" and a.after_pca:
            args += ["--after-pca", a.after_pca]
        tree = _run_child(args, a.sample_ms / 1e3)
        if "failed" in tree:
            report[mode] = tree
            continue
        inner = json.loads(result.with_suffix(".json").read_text())
        report[mode] = dict(inner, **tree)
    if {"dask", "memory"} <= set(paths) and not any("failed" in report[m] for m in paths):
        d, m = report["dask"], report["memory"]
        report["ratios"] = {
            "peak_rss_dask_over_memory": d["peak_rss_tree_bytes"] / m["peak_rss_tree_bytes"],
            "wall_dask_over_memory": d["wall_seconds"] / m["wall_seconds"],
            "run_dask_over_memory": d["run_seconds"] / m["run_seconds"],
        }
        report["parity"] = _compare(a.out / "result_memory", a.out / "result_dask", leiden=a.leiden)


def _csr_bytes(path: Path) -> int:
    """In-memory size of the file's CSR ``X`` (data, indices, indptr), from its metadata."""
    import h5py

    with h5py.File(path, "r") as f:
        return int(
            sum(f["X"][k].size * f["X"][k].dtype.itemsize for k in ("data", "indices", "indptr"))
        )


def _markdown(r: dict) -> str:
    gib = 1024**3
    lines = [
        "# Dask path vs in-memory engine, QC -> PCA",
        "",
        f"Atlas: {r['args']['cells']} cells x {r['args']['genes']} genes, "
        f"~{r['args']['nnz_per_cell']} nonzeros a cell (seed {r['args']['seed']}); "
        f"{r['args']['workers']} workers x 1 thread, memory limit {r['args']['memory_limit']} "
        f"each, blocks of {r['args']['chunk_rows']} rows"
        f"{', HVG matrix persisted' if r['args'].get('persist_after_hvg') == 'True' else ''}. "
        f"Machine: {r['machine']['cpus']} CPUs.",
        "",
        *([f"Note: {r['note']}", ""] if r.get("note") else []),
        "| path | wall s (incl. start-up) | run s | peak RSS, process tree (GiB) |",
        "|---|---|---|---|",
    ]
    for mode in ("memory", "dask"):
        if mode in r:
            m = r[mode]
            if "failed" in m:
                lines.append(
                    f"| {mode} | failed: {m['failed']} | | "
                    f"{m['peak_rss_tree_bytes'] / gib:.2f} (when it ended) |"
                )
                continue
            lines.append(
                f"| {mode} | {m['wall_seconds']:.1f} | {m['run_seconds']:.1f} | "
                f"{m['peak_rss_tree_bytes'] / gib:.2f} |"
            )
    atlas = r.get("atlas", {})
    if "x_csr_bytes" in atlas:
        lines += [
            "",
            f"X in memory (CSR): {atlas['x_csr_bytes'] / gib:.2f} GiB"
            + (
                f"; {atlas['nnz']:,} nonzeros, written to disk block by block in "
                f"{atlas['seconds']:.1f} s"
                if "seconds" in atlas
                else ""
            )
            + ".",
        ]
    after = r.get("dask", {}).get("after_pca_seconds")
    if after:
        lines += [
            "",
            "Then on the Dask path's in-memory PCA (backend auto; timed apart): "
            + ", ".join(f"{k} {v:.1f} s" for k, v in after.items())
            + (
                f"; {r['dask']['after_pca_leiden_clusters']} Leiden clusters"
                if "after_pca_leiden_clusters" in r["dask"]
                else ""
            )
            + ".",
        ]
    if "ratios" in r:
        q = r["ratios"]
        lines += [
            f"Peak RSS dask / memory: {q['peak_rss_dask_over_memory']:.2f} (goal < 0.25); "
            f"wall dask / memory: {q['wall_dask_over_memory']:.2f} (goal <= 1.5).",
            f"Parity: {r['parity']}.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
