"""The cupy pipeline at its default precision ("fast") on the CuPy double against the numpy
pipeline at its default ("exact"): Leiden ARI, kNN overlap, HVG identity.

    python scripts/precision_double.py --out benchmarks/results/precision_double.json

Runs PBMC3k (``GPU_SC_DATA`` or ../shared/data/pbmc3k) and the synthetic atlas
(``--synthetic`` cells). The double computes CuPy's calls with NumPy on this CPU: the numbers
are agreements, not timings.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

_OFF = ("paga", "umap", "tsne", "rank_genes_groups")


def _run(adata, backend: str, precision: str | None):
    import gpu_sc
    from gpu_sc.dispatch.provenance import pipeline_record

    cfg = {s: {"enabled": False} for s in _OFF}
    t0 = time.perf_counter()
    if backend == "cupy":
        from gpu_sc.testing.cupy_double import install

        with install(device_bytes=8 << 30):
            out = gpu_sc.pipeline(adata.copy(), cfg, backend="cupy", copy=True, precision=precision)
    else:
        out = gpu_sc.pipeline(adata.copy(), cfg, backend=backend, copy=True, precision=precision)
    return out, time.perf_counter() - t0, pipeline_record(out)


def _compare(name, adata) -> dict:
    from sklearn.metrics import adjusted_rand_score

    ref, t_ref, rec_ref = _run(adata, "numpy", None)
    new, t_new, rec_new = _run(adata, "cupy", None)
    assert (ref.obs_names == new.obs_names).all()
    d_ref, d_new = ref.obsp["distances"].tocsr(), new.obsp["distances"].tocsr()
    overlap = float(
        np.mean(
            [
                np.intersect1d(d_ref[i].indices, d_new[i].indices).size / max(1, d_ref[i].nnz)
                for i in range(d_ref.shape[0])
            ]
        )
    )
    return {
        "dataset": name,
        "n_obs": int(ref.n_obs),
        "numpy_precision": rec_ref["precision"],
        "cupy_precision": rec_new["precision"],
        "cupy_device_resident": rec_new.get("device_resident"),
        "hvg_identical": bool((ref.var_names == new.var_names).all()),
        "knn_overlap": overlap,
        "leiden_ari": float(adjusted_rand_score(ref.obs["leiden"], new.obs["leiden"])),
        "n_clusters": [int(ref.obs["leiden"].nunique()), int(new.obs["leiden"].nunique())],
        "pca_max_abs_corr_min": float(
            np.min(np.abs(np.sum(_unit(ref.obsm["X_pca"]) * _unit(new.obsm["X_pca"]), axis=0)))
        ),
        "seconds_numpy": t_ref,
        "seconds_cupy_double": t_new,
    }


def _unit(x):
    x = x - x.mean(axis=0)
    return x / np.linalg.norm(x, axis=0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--synthetic", type=int, default=5000)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/precision_double.json"))
    args = p.parse_args()
    import gpu_sc

    results = []
    pbmc = gpu_sc.datasets.pbmc3k()
    results.append(_compare("pbmc3k", pbmc))
    print(json.dumps(results[-1]), flush=True)
    if args.synthetic:
        syn = gpu_sc.datasets.synthetic(args.synthetic, 2000, seed=0)
        results.append(_compare(f"synthetic:overlapping:{args.synthetic}", syn))
        print(json.dumps(results[-1]), flush=True)
    out = {
        "kind": "precision_double",
        "what": "gpu_sc.pipeline on cupy (the CuPy double, NumPy underneath: agreement, not "
        "speed) at its default precision against numpy at its default; paga/umap/tsne/markers "
        "off",
        "results": results,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
