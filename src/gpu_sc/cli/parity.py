"""``gpu-sc parity INPUT``: stage-by-stage agreement of two backends, with thresholds.

Prints the table; exits 1 when a metric of a stage with an engine implementation misses its
threshold (stages without one are listed, never failures).
"""

from __future__ import annotations

import sys
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "parity",
        help="compare two backends stage by stage (exit 1 when a metric misses its threshold)",
    )
    p.add_argument(
        "input",
        help="10x directory, .tar.gz, 10x .h5 or .h5ad with raw counts, or "
        "synthetic:<separated|overlapping|trajectory>:<n_cells>",
    )
    p.add_argument(
        "--backends",
        help="reference,other (default: scanpy,cupy where CUDA is usable, else scanpy,numpy)",
    )
    p.add_argument("--out", help="write the report as JSON (atomically)")
    p.add_argument("--markdown", help="write the table as Markdown (atomically)")
    p.add_argument("--config", help="pipeline config (TOML); defaults: scanpy's PBMC3k tutorial")
    p.add_argument(
        "--precision",
        choices=("auto", "exact", "fast"),
        default=None,
        help="precision of the engine's steps (default: gpu_sc.settings.precision, auto: exact "
        "on numpy, fast on cupy)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of every random step (default 0)")
    p.add_argument("--name", help="data set name in the report (default: from INPUT)")
    p.add_argument(
        "--no-determinism", action="store_true", help="skip rerunning stages to check determinism"
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from ..io import atomic_path, check_output_path
    from ..parity import compare
    from ..pipeline import PipelineConfig

    for path in (args.out, args.markdown):
        if path:
            check_output_path(path)
    adata, default_name = load_input(args.input)
    config = PipelineConfig.from_toml(args.config) if args.config else None
    backends = args.backends.split(",") if args.backends else None
    name = args.name or default_name
    print(f"parity: {name}, {adata.n_obs} cells x {adata.n_vars} genes", file=sys.stderr)
    report = compare(
        adata,
        backends,
        config,
        seed=args.seed,
        name=name,
        determinism=not args.no_determinism,
        precision=args.precision,
    )
    text = report.to_markdown()
    for path, content in ((args.out, report.to_json()), (args.markdown, text)):
        if path:
            with atomic_path(Path(path)) as tmp:
                tmp.write_text(content)
    print(text)
    return 0 if report.passed else 1


def load_input(spec: str):
    """AnnData of raw counts and a display name for ``INPUT`` (a path or ``synthetic:...``)."""
    from ..datasets import read, synthetic

    if spec.startswith("synthetic:"):
        parts = spec.split(":")
        if len(parts) != 3 or not parts[2].isdigit():
            raise ValueError(
                f"synthetic input must be synthetic:<difficulty>:<n_cells>, got {spec!r}"
            )
        return synthetic(int(parts[2]), difficulty=parts[1]), spec
    return read(spec), Path(spec).name
