"""``gpu-sc run INPUT -o OUT.h5ad``: the pipeline on a 10x directory, tarball, .h5 or .h5ad."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ._common import print_progress, provenance_table
from .report import add_report_options, report_kwargs


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="run the pipeline on INPUT and write OUT.h5ad")
    p.add_argument("input", help="10x directory, .tar.gz, 10x .h5 or .h5ad with raw counts")
    p.add_argument("-o", "--out", required=True, help="result .h5ad (written atomically)")
    p.add_argument("--backend", default="auto", help="auto | scanpy | numpy | cupy (default auto)")
    p.add_argument("--config", help="pipeline config (TOML); defaults: scanpy's PBMC3k tutorial")
    p.add_argument("--report", metavar="DIR", help="also write the HTML report into DIR")
    p.add_argument(
        "--strict",
        action="store_true",
        default=None,
        help="fail instead of falling back to scanpy (also GPU_SC_STRICT=1)",
    )
    add_report_options(p)
    p.set_defaults(func=run)


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
    config = PipelineConfig.from_toml(args.config) if args.config else PipelineConfig()
    t0 = time.perf_counter()
    adata = read(args.input)
    print(f"read {args.input}: {adata.n_obs} cells x {adata.n_vars} genes "
          f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr)  # fmt: skip
    backend, why = resolve_backend(args.backend)
    print(f"backend: {backend} ({why})", file=sys.stderr)
    pipeline(adata, config, backend=args.backend, progress=print_progress, strict=args.strict)
    write_h5ad(adata, out)
    print(provenance_table(adata))
    print(f"\nwrote {out} ({adata.n_obs} cells x {adata.n_vars} genes)")
    if args.report:
        from ..report import report

        t0 = time.perf_counter()
        index = report(adata, args.report, **report_kwargs(args))
        print(f"wrote {index} ({time.perf_counter() - t0:.1f} s)")
    return 0
