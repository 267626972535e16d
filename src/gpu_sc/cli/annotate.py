"""``gpu-sc annotate RESULT.h5ad MAPPING -o OUT.h5ad``: name the clusters with cell types."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("annotate", help="add obs['cell_type'] from a cluster -> cell type file")
    p.add_argument("result", help="result .h5ad written by `gpu-sc run`")
    p.add_argument(
        "mapping", help='TOML ("0" = "CD4 T") or two-column CSV/TSV (cluster, cell type)'
    )
    p.add_argument("-o", "--out", required=True, help="annotated .h5ad (written atomically)")
    p.add_argument("--groupby", default="leiden", help="cluster column in obs (default leiden)")
    p.add_argument("--key", default="cell_type", help="new obs column (default cell_type)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing obs column KEY that no annotation wrote",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from ..io import check_output_path, read_h5ad, write_h5ad
    from ..report import apply_annotation

    if not str(args.out).endswith(".h5ad"):
        raise ValueError(f"--out must end in .h5ad, got {args.out}")
    check_output_path(args.out)
    adata = read_h5ad(args.result)
    apply_annotation(
        adata, args.mapping, groupby=args.groupby, key=args.key, overwrite=args.overwrite
    )
    write_h5ad(adata, args.out)
    counts = adata.obs[args.key].value_counts(sort=False)
    for name, n in counts.items():
        print(f"  {name:<30s} {n:8d}")
    print(f"wrote {args.out} (obs[{args.key!r}]: {len(counts)} cell types)")
    return 0
