"""``gpu-sc bench --cells 10000,100000 --backends scanpy,cupy --out DIR``: the benchmark."""

from __future__ import annotations

import sys
import time


def _int_list(text: str) -> list[int]:
    try:
        values = [int(float(v)) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--cells must be comma-separated integers, got {text!r}") from None
    if not values:
        raise ValueError("--cells is empty")
    return values


def _command(args) -> str:
    """The command line that reproduces this run (from the parsed arguments)."""
    parts = [
        "gpu-sc bench",
        f"--cells {args.cells}",
        f"--backends {args.backends}",
        f"--steps {args.steps}",
        f"--repeats {args.repeats}",
    ]
    if args.budget is not None:
        parts.append(f"--budget {args.budget:g}")
    if args.seed != 0:
        parts.append(f"--seed {args.seed}")
    if args.difficulty != "overlapping":
        parts.append(f"--difficulty {args.difficulty}")
    if args.genes != 2000:
        parts.append(f"--genes {args.genes}")
    if args.no_warmup:
        parts.append("--no-warmup")
    return " ".join([*parts, f"--out {args.out}"])


def add_parser(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark backends per step and end to end; write bench.json/.md/.png",
        description="Generate a synthetic atlas per size, run the pipeline on every backend "
        "(fresh copy per repeat, same process) and report per-step median time, spread, "
        "peak host/GPU memory, speedup over scanpy and time / roofline floor.",
    )
    _add_run_options(p)
    _add_model_options(p)
    _add_dask_atlas_options(p)
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=run)


def _add_run_options(p) -> None:
    """The timed benchmark's options: sizes, backends, steps, repeats, budget, data."""
    from ..bench.steps import SECTIONS

    p.add_argument(
        "--cells",
        default="10000,100000,1000000",
        help="comma-separated atlas sizes (default 10000,100000,1000000)",
    )
    p.add_argument(
        "--backends",
        default="scanpy,cupy",
        help="comma-separated: scanpy, numpy, cupy (default scanpy,cupy)",
    )
    p.add_argument(
        "--steps",
        default="all",
        help="'all' or comma-separated sections (prerequisites are added): " + ", ".join(SECTIONS),
    )
    p.add_argument("--repeats", type=int, default=3, help="runs per size and backend (default 3)")
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="per-step time budget; steps predicted over it are recorded "
        "as '> budget' instead of run (default: none)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic atlas (default 0)")
    p.add_argument(
        "--difficulty", default="overlapping", choices=["separated", "overlapping", "trajectory"]
    )
    p.add_argument("--genes", type=int, default=2000, help="genes of the atlas (default 2000)")
    p.add_argument(
        "--no-warmup",
        action="store_true",
        help="skip the small warm-up run per backend (JIT compilation then "
        "lands in the first size's timings)",
    )
    p.add_argument(
        "--time-limit",
        type=float,
        default=None,
        metavar="SECONDS",
        help="start no new repeat after this many seconds; what ran is reported "
        "(outputs are also written after every size, so a killed run keeps them)",
    )
    p.add_argument(
        "--note",
        help="free text stored in bench.json and shown in bench.md "
        "(e.g. what else ran on the machine)",
    )


def _add_model_options(p) -> None:
    """``--model``: count device work on the CuPy double and price it (no GPU)."""
    p.add_argument(
        "--model",
        action="store_true",
        help="instead of timing: count each step's device work with backend cupy "
        "on the CuPy double (no GPU needed) and project it onto an H200 at "
        "--model-target cells (a MODEL, never a measurement); writes "
        "bench_model.json/.md",
    )
    p.add_argument(
        "--model-target",
        default="1000000",
        metavar="CELLS[,CELLS]",
        help="cells the model extrapolates to (default 1e6); more sizes comma-separated, "
        "the first one judged against the goal",
    )
    p.add_argument(
        "--model-config",
        metavar="JSON",
        help="with --model: the pipeline config the counted runs use, as JSON text "
        '(e.g. \'{"neighbors": {"transformer": "ivf"}}\')',
    )
    p.add_argument(
        "--model-counts",
        metavar="JSON[:STEP,...]",
        action="append",
        help="with --model: price the counts of an earlier bench_model.json again "
        "(new constants or extrapolation) instead of counting; repeatable, each optionally "
        "limited to some steps (e.g. a t-SNE-only run at smaller sizes: 'small.json:tsne')",
    )


def _add_dask_atlas_options(p) -> None:
    """``--dask-atlas``: the Dask path against the in-memory engine, on an atlas on disk."""
    d = p.add_argument_group(
        "--dask-atlas: the Dask path against the in-memory engine",
        "Write a synthetic atlas of --cells (one size) x --genes to disk block by block, then "
        "run the filters to PCA on it twice, each in a child process whose whole process tree's "
        "peak RSS is sampled: lazily on a distributed.LocalCluster, and read into memory "
        "(python -m gpu_sc.bench.dask_atlas; benchmarks/DASK.md).",
    )
    d.add_argument("--dask-atlas", action="store_true", help="run this benchmark instead")
    d.add_argument("--nnz-per-cell", type=float, default=500, help="default 500")
    d.add_argument("--workers", type=int, default=2, help="Dask worker processes (default 2)")
    d.add_argument("--memory-limit", default="3GiB", help="per worker (default 3GiB)")
    d.add_argument("--chunk-rows", type=int, default=20_000, help="cells per block")
    d.add_argument(
        "--persist-hvg-matrix",
        action="store_true",
        help="keep the HVG matrix in the workers' memory",
    )
    d.add_argument("--paths", default="dask,memory", help="which of dask,memory to run")
    d.add_argument("--data", help="atlas .h5ad to reuse (or create)")
    d.add_argument(
        "--after-pca",
        default="",
        metavar="STEPS",
        help="then these steps on the Dask path's PCA, timed apart: neighbors, "
        "leiden, paga, umap, rank_genes_groups (comma-separated)",
    )


def _run_dask_atlas(args) -> int:
    from ..bench.dask_atlas import main

    cells = _int_list(args.cells)
    if len(cells) != 1:
        raise ValueError(f"--dask-atlas takes one --cells size, got {args.cells}")
    argv = [
        "--cells",
        str(cells[0]),
        "--genes",
        str(args.genes),
        "--seed",
        str(args.seed),
        "--nnz-per-cell",
        str(args.nnz_per_cell),
        "--workers",
        str(args.workers),
        "--memory-limit",
        args.memory_limit,
        "--chunk-rows",
        str(args.chunk_rows),
        "--paths",
        args.paths,
        "--note",
        args.note or "",
        "--out",
        args.out,
    ]
    if args.persist_hvg_matrix:
        argv.append("--persist-after-hvg")
    if args.data:
        argv += ["--data", args.data]
    if args.after_pca:
        argv += ["--after-pca", args.after_pca]
    return main(argv)


def run(args) -> int:
    if args.dask_atlas:
        return _run_dask_atlas(args)
    if args.model:
        return _run_model(args)
    from ..bench import BenchConfig, run_bench, write_outputs

    cfg = BenchConfig(
        cells=_int_list(args.cells),
        backends=[b.strip() for b in args.backends.split(",") if b.strip()],
        steps=args.steps,
        repeats=args.repeats,
        budget_s=args.budget,
        seed=args.seed,
        difficulty=args.difficulty,
        n_genes=args.genes,
        warmup=not args.no_warmup,
        time_limit_s=args.time_limit,
    )
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f} s] {msg}", file=sys.stderr, flush=True)

    def finish(report):
        report["parameters"]["command"] = _command(args)
        if args.note:
            report["parameters"]["note"] = args.note
        return write_outputs(report, args.out)

    def checkpoint(report):
        finish(report)
        log(f"wrote the results so far to {args.out}")

    report = run_bench(cfg, log=log, checkpoint=checkpoint)
    paths = finish(report)
    for r in report["rows"]:
        if r["step"] == "total":
            took = "not run" if r["median_s"] is None else f"{r['median_s']:.2f} s"
            log(f"{r['n_cells']} cells, {r['backend']}: end to end {took} ({r['status']})")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _run_model(args) -> int:
    import json
    from pathlib import Path

    from ..bench.model import markdown, price, runs_of
    from ..io import atomic_path

    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f} s] {msg}", file=sys.stderr, flush=True)

    if args.model_counts:
        runs, sources = [], []
        for spec in args.model_counts:
            path, _, only = spec.partition(":")
            earlier = json.loads(Path(path).read_text())
            sources.append({k: earlier.get(k) for k in ("command", "created", "config")})
            for run in runs_of(earlier):
                if only:
                    run["steps"] = [s for s in run["steps"] if s["step"] in only.split(",")]
                runs.append(run)
        first = json.loads(Path(args.model_counts[0].partition(":")[0]).read_text())
        meta = {
            k: first[k]
            for k in (
                "n_genes",
                "seed",
                "double_device_bytes",
                "versions",
                "created",
                "command",
                "note",
                "config",
            )
            if k in first
        }
        if len(sources) > 1:
            meta["counted_by"] = sources
            meta["command"] = "; ".join(s["command"] or "?" for s in sources)
        if args.note:
            meta["note"] = args.note
        targets = _int_list(args.model_target)
        report = price(runs, meta, target=targets[0], extra_targets=targets[1:])
        report["priced_again"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    else:
        targets = _int_list(args.model_target)
        config = json.loads(args.model_config) if args.model_config else None
        # the counting run drives the CuPy double: test tooling, imported only for --model
        from ..testing.cost_counts import run_model

        report = run_model(
            _int_list(args.cells),
            target=targets[0],
            extra_targets=targets[1:],
            n_genes=args.genes,
            seed=args.seed,
            log=log,
            config=config,
        )
        report["command"] = (
            f"gpu-sc bench --model --cells {args.cells} --genes {args.genes} "
            f"--model-target {','.join(map(str, targets))} --out {args.out}"
            + (f" --model-config '{args.model_config}'" if args.model_config else "")
        )
        if args.note:
            report["note"] = args.note
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(report)
    with atomic_path(out / "bench_model.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n")
    with atomic_path(out / "bench_model.md") as tmp:
        tmp.write_text(text)
    print(text)
    print(
        f"wrote {out / 'bench_model.json'}, {out / 'bench_model.md'} (a model, not a measurement)"
    )
    return 0
