"""Recall@k of IVF-Flat against exact kNN, and the downstream Leiden ARI, on CPU.

    python scripts/ivf_recall.py --cells 200000 --queries 5000 --ari-cells 50000 \
        --out benchmarks/results/ivf_recall.json

The synthetic atlas (:func:`gpu_sc.datasets.synthetic`) goes through the tutorial's
preprocessing on the numpy engine to a 50-component PCA (cached in ``--cache``). Recall@k:
the fraction of each query's ``k - 1`` exact neighbours (self excluded) that IVF-Flat finds,
averaged over a fixed random subsample of ``--queries`` cells whose exact neighbours are computed
by brute force against all cells (the full exact graph at 2*10^5 cells is too slow on a shared
2-core CPU). Leiden ARI: the numpy engine's Leiden (resolution 0.9, seed 0) on the UMAP
connectivities of the exact and of the IVF graph, at ``--ari-cells`` cells (both graphs
complete), compared by the adjusted Rand index. Times are of this (shared) CPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np


def pca_of(n_cells: int, n_genes: int, cache: Path) -> np.ndarray:
    path = cache / f"synthetic_pca_{n_cells}_{n_genes}.npy"
    if path.exists():
        return np.load(path)
    import gpu_sc

    adata = gpu_sc.datasets.synthetic(n_cells, n_genes, seed=0)
    cfg = {
        s: {"enabled": False}
        for s in ("neighbors", "leiden", "paga", "umap", "tsne", "rank_genes_groups")
    }
    gpu_sc.pipeline(adata, cfg, backend="numpy", atomic=False)
    x = np.ascontiguousarray(adata.obsm["X_pca"][:, :50])
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, x)
    return x


def exact_rows(X: np.ndarray, rows: np.ndarray, k: int, block: int = 1000) -> np.ndarray:
    """Exact neighbours (self first) of ``rows`` among all rows of ``X``, by brute force."""
    sq = np.einsum("ij,ij->i", X, X)
    out = np.empty((len(rows), k), dtype=np.int64)
    for b0 in range(0, len(rows), block):
        r = rows[b0 : b0 + block]
        d = sq[r, None] - 2.0 * (X[r] @ X.T) + sq[None, :]
        d[np.arange(len(r)), r] = -np.inf
        part = np.argpartition(d, k - 1, axis=1)[:, :k]
        dd = np.take_along_axis(d, part, axis=1)
        order = np.argsort(dd, axis=1, kind="stable")
        out[b0 : b0 + block] = np.take_along_axis(part, order, axis=1)
    return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1] - 1
    hits = [len(set(a[1:]) & set(b[1:])) for a, b in zip(found, truth, strict=True)]
    return float(np.mean(hits) / k)


def leiden_labels(X, indices, dists, k):
    import anndata as ad

    import gpu_sc
    from gpu_sc.dispatch.arrays import array_module
    from gpu_sc.kernels import connectivities as conn

    am = array_module("numpy")
    n = X.shape[0]
    a = ad.AnnData(np.zeros((n, 1), dtype=np.float32))
    a.obsp["connectivities"] = conn.fuzzy_simplicial_set(am, indices, dists, n, k)
    a.uns["neighbors"] = {"connectivities_key": "connectivities", "params": {}}
    gpu_sc.tl.leiden(
        a,
        resolution=0.9,
        flavor="igraph",
        n_iterations=2,
        directed=False,
        random_state=0,
        backend="numpy",
    )
    return a.obs["leiden"].to_numpy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cells", type=int, default=200_000)
    p.add_argument("--genes", type=int, default=2000)
    p.add_argument("--queries", type=int, default=5000)
    p.add_argument("--k", type=int, default=15)
    p.add_argument("--nprobe", type=int, nargs="*", default=[])
    p.add_argument("--ari-cells", type=int, default=0)
    p.add_argument("--precision", choices=("exact", "fast"), default="exact")
    p.add_argument("--cache", type=Path, default=Path("/tmp/gpu_sc_ivf_cache"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/ivf_recall.json"))
    args = p.parse_args()

    from sklearn.metrics import adjusted_rand_score

    from gpu_sc.dispatch.arrays import array_module
    from gpu_sc.kernels.ivf import IVFFlat, ivf_knn
    from gpu_sc.kernels.knn import knn

    am = array_module("numpy")
    dtype = np.float32 if args.precision == "fast" else np.float64
    t0 = time.perf_counter()
    X = pca_of(args.cells, args.genes, args.cache)
    t_pca = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(X.shape[0], size=min(args.queries, X.shape[0]), replace=False))
    t0 = time.perf_counter()
    truth = exact_rows(X, rows, args.k)
    t_truth = time.perf_counter() - t0
    settings = [IVFFlat()] + [IVFFlat(nprobe=q) for q in args.nprobe]
    runs = []
    for s in settings:
        t0 = time.perf_counter()
        idx, _, info = ivf_knn(am, X, args.k, params=s, dtype=dtype)
        sec = time.perf_counter() - t0
        r = recall(idx[rows], truth)
        runs.append({**info, "default": s == IVFFlat(), "recall_at_k": r, "seconds": sec})
        print(json.dumps(runs[-1]), flush=True)
    out = {
        "kind": "ivf_recall",
        "what": "recall@k of IVF-Flat (gpu_sc.kernels.ivf) against exact kNN on the synthetic "
        "atlas's 50-component PCA, numpy backend, on a shared 2-core CPU (times are CPU times, "
        "not GPU)",
        "n_cells": int(X.shape[0]),
        "n_genes": args.genes,
        "n_dims": int(X.shape[1]),
        "k": args.k,
        "precision": args.precision,
        "ground_truth": f"exact brute force for a fixed random subsample of {len(rows)} query "
        "cells (seed 0) against all cells",
        "n_queries": int(len(rows)),
        "pca_seconds": t_pca,
        "ground_truth_seconds": t_truth,
        "runs": runs,
        "recall_at_default": runs[0]["recall_at_k"],
        "python": platform.python_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if args.ari_cells:
        m = min(args.ari_cells, X.shape[0])
        sub = np.sort(rng.choice(X.shape[0], size=m, replace=False)) if m < X.shape[0] else None
        Xs = X if sub is None else np.ascontiguousarray(X[sub])
        t0 = time.perf_counter()
        ei, ed = knn(am, Xs, args.k)
        t_exact = time.perf_counter() - t0
        t0 = time.perf_counter()
        ii, idd, info = ivf_knn(am, Xs, args.k, dtype=dtype)
        t_ivf = time.perf_counter() - t0
        lab_e = leiden_labels(Xs, ei, ed, args.k)
        lab_i = leiden_labels(Xs, ii, idd, args.k)
        out["leiden_ari"] = {
            "n_cells": int(m),
            "subsample": "all cells"
            if sub is None
            else f"fixed random subsample (seed 0) of {m} of the {X.shape[0]} cells",
            "ivf": info,
            "recall_at_k_full_graph": recall(ii, ei),
            "exact_knn_seconds": t_exact,
            "ivf_knn_seconds": t_ivf,
            "n_clusters_exact": int(len(set(lab_e))),
            "n_clusters_ivf": int(len(set(lab_i))),
            "ari": float(adjusted_rand_score(lab_e, lab_i)),
            "leiden": "gpu_sc.tl.leiden numpy engine, igraph flavour, resolution 0.9, "
            "n_iterations 2, seed 0, on UMAP connectivities",
        }
        print(json.dumps(out["leiden_ari"]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
