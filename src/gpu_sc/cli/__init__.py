"""The ``gpu-sc`` command line. One module per sub-command, each with
``add_parser(subparsers)`` and ``run(args) -> int``; this file only wires them together."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

__all__ = ["main"]

#: Sub-command modules of :mod:`gpu_sc.cli`, in the order ``--help`` lists them.
COMMANDS = ["run", "demo", "info", "parity", "bench", "report", "annotate"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpu-sc",
        description="The scanpy single-cell workflow on the GPU (CuPy) or on scanpy's CPU path.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("gpu-sc: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line for the user; --verbose shows the traceback
        if args.verbose:
            raise
        print(f"gpu-sc {args.command}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
