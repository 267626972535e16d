"""``gpu-sc run INPUT -o OUT.h5ad``: the pipeline on a 10x directory, tarball, .h5 or .h5ad."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..backends import get, is_gpu
from ._common import backend_help, print_progress, provenance_table
from .report import add_report_options, report_kwargs


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="run the pipeline on INPUT and write OUT.h5ad")
    p.add_argument("input", help="10x directory, .tar.gz, 10x .h5 or .h5ad with raw counts")
    p.add_argument("-o", "--out", required=True, help="result .h5ad (written atomically)")
    p.add_argument("--backend", default="auto", help=backend_help())
    p.add_argument("--config", help="pipeline config (TOML); defaults: scanpy's PBMC3k tutorial")
    p.add_argument("--report", metavar="DIR", help="also write the HTML report into DIR")
    p.add_argument(
        "--precision",
        choices=("auto", "exact", "fast"),
        default=None,
        help="exact (float64, numpy's results), fast (float32 kNN distances and embeddings, "
        "float64 accumulation kept) or auto: exact on numpy, fast on cupy (default: "
        "gpu_sc.settings.precision, auto)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        default=None,
        help="fail instead of falling back to scanpy (also GPU_SC_STRICT=1)",
    )
    g = p.add_argument_group(
        "Dask (atlases larger than memory)",
        "--dask reads INPUT (.h5ad or 10x .h5) lazily in blocks of cells and runs the steps "
        "to PCA and the marker genes block-wise on a Dask cluster: a local one (CPU worker "
        "processes, or one worker per GPU with dask-cuda when the backend is cupy), or the "
        "running cluster at --scheduler (several machines: `dask scheduler` on one, "
        "`dask worker ADDRESS` on each).",
    )
    g.add_argument("--dask", action="store_true", help="run on Dask (see above)")
    g.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="use the running Dask scheduler at ADDRESS (e.g. tcp://node1:8786)",
    )
    g.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="local cluster: worker processes (default: 2; GPUs: one per GPU)",
    )
    g.add_argument(
        "--memory-limit",
        metavar="SIZE",
        default="auto",
        help="local cluster: memory per worker, e.g. 4GB (default: auto)",
    )
    g.add_argument(
        "--chunk-rows",
        type=int,
        metavar="N",
        default=10_000,
        help="cells per block (default 10000)",
    )
    g.add_argument(
        "--persist-hvg-matrix",
        action="store_true",
        help="keep the matrix of highly variable genes in the workers' memory",
    )
    add_report_options(p)
    p.set_defaults(func=run)


def _check_dask_options(args) -> None:
    given = [
        f"--{n.replace('_', '-')}"
        for n in ("scheduler", "workers", "persist_hvg_matrix")
        if getattr(args, n)
    ]
    if args.memory_limit != "auto":
        given.append("--memory-limit")
    if args.chunk_rows != 10_000:
        given.append("--chunk-rows")
    if given and not args.dask:
        raise ValueError(f"{', '.join(given)} only apply with --dask; add --dask or drop them")
    if args.scheduler and (args.workers or args.memory_limit != "auto"):
        raise ValueError(
            "--workers and --memory-limit start a local cluster; with --scheduler "
            "the running cluster's workers are used: drop them"
        )
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    if args.chunk_rows < 1:
        raise ValueError(f"--chunk-rows must be at least 1, got {args.chunk_rows}")


def _start_dask(args, backend: str):
    """``(client, cluster or None, description)`` for ``--dask``."""
    import logging

    import distributed

    chosen = get(backend)
    if not logging.getLogger("gpu_sc").isEnabledFor(logging.DEBUG):  # unless --verbose
        logging.getLogger("distributed").setLevel(logging.WARNING)  # its INFO chatter

    if args.scheduler:
        client = distributed.Client(args.scheduler)
        n = len(client.scheduler_info().get("workers", {}))
        return client, None, f"the running cluster at {args.scheduler} ({n} workers)"
    if chosen.is_gpu and chosen.available()[0]:
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            raise ValueError(
                "--dask with the cupy backend starts one worker per GPU with "
                "dask-cuda, which is not installed: pip install dask-cuda, or "
                "use --backend numpy for CPU workers"
            ) from None
        kw = {} if args.workers is None else {"n_workers": args.workers}
        cluster = LocalCUDACluster(memory_limit=args.memory_limit, dashboard_address=":0", **kw)
        kind = "LocalCUDACluster"
    else:
        cluster = distributed.LocalCluster(
            n_workers=args.workers or 2,
            threads_per_worker=1,
            processes=True,
            memory_limit=args.memory_limit,
            dashboard_address=":0",
        )
        kind = "LocalCluster"
    client = distributed.Client(cluster)
    n = len(client.scheduler_info().get("workers", {}))
    return (
        client,
        cluster,
        (
            f"{kind} of {n} workers (memory limit {args.memory_limit} each) "
            f"at {cluster.scheduler_address}"
        ),
    )


def run(args) -> int:
    from .. import pipeline
    from ..datasets import read
    from ..dispatch import resolve_backend
    from ..io import check_output_path, write_h5ad
    from ..pipeline import PipelineConfig

    out = Path(args.out)
    if out.suffix != ".h5ad":
        raise ValueError(f"--out must end in .h5ad, got {out}")
    check_output_path(out)  # before reading or computing anything
    if args.report:
        check_output_path(args.report, directory=True)
    _check_dask_options(args)
    config = PipelineConfig.from_toml(args.config) if args.config else PipelineConfig()
    backend, why = resolve_backend(args.backend)
    client = cluster = None
    try:
        t0 = time.perf_counter()
        if args.dask:
            from ..datasets import read_lazy

            adata = read_lazy(args.input, chunk_rows=args.chunk_rows)
            client, cluster, where = _start_dask(args, backend)
            print(f"dask: {where}", file=sys.stderr)
            if cluster is not None:
                print(
                    "  (for a cluster of several machines, start `dask scheduler` and "
                    "`dask worker ADDRESS`, then pass --scheduler ADDRESS)",
                    file=sys.stderr,
                )
        else:
            adata = read(args.input)
        print(
            f"read {args.input}: {adata.n_obs} cells x {adata.n_vars} genes "
            f"({time.perf_counter() - t0:.1f} s{', lazily' if args.dask else ''})",
            file=sys.stderr,
        )
        print(f"backend: {backend} ({why})", file=sys.stderr)
        if args.dask:
            blocks = "CuPy" if is_gpu(backend) else "NumPy"
            print(
                f"  on Dask: the steps to PCA and the marker genes, block-wise ({blocks} "
                f"blocks); the steps after PCA on {backend}",
                file=sys.stderr,
            )
        pipeline(
            adata,
            config,
            backend=args.backend,
            progress=print_progress,
            strict=args.strict,
            persist_hvg_matrix=args.persist_hvg_matrix,
            precision=args.precision,
        )
        write_h5ad(adata, out)
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    print(provenance_table(adata))
    print(f"\nwrote {out} ({adata.n_obs} cells x {adata.n_vars} genes)")
    if args.report:
        from ..report import report

        t0 = time.perf_counter()
        index = report(adata, args.report, **report_kwargs(args))
        print(f"wrote {index} ({time.perf_counter() - t0:.1f} s)")
    return 0
