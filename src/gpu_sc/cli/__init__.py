"""The ``gpu-sc`` command line. One module per sub-command, each with
``add_parser(subparsers)`` and ``run(args) -> int``; this file only wires them together."""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
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
    parser.add_argument(
        "--version",
        action="version",
        version=_version_line(),
        help="print gpu_sc's version (and scanpy's, anndata's) and exit",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return parser


def _version_line() -> str:
    """``gpu-sc X.Y.Z (scanpy A, anndata B, Python C)``: the installed distribution's version."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def v(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    return (
        f"gpu-sc {v('gpu-sc')} (scanpy {v('scanpy')}, anndata {v('anndata')}, "
        f"Python {platform.python_version()})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(message)s",
    )
    previous = _catch_termination()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        print(
            f"gpu-sc {args.command}: interrupted by {signal.Signals(signum).name}; "
            "unfinished output removed",
            file=sys.stderr,
        )
        return 128 + signum
    except Exception as exc:  # one line for the user; --verbose shows the traceback
        if args.verbose:
            raise
        message = " ".join(str(exc).split())
        print(f"gpu-sc {args.command}: error: {type(exc).__name__}: {message}", file=sys.stderr)
        return 1
    finally:
        _restore(previous)


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM/SIGHUP, so ``finally`` blocks and context
    managers (the atomic output's cleanup) run as for Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_terminated(signum, _frame):
    raise Terminated(signum)


def _catch_termination() -> dict:
    previous = {}
    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is None:
            continue
        try:
            if signal.getsignal(sig) is signal.SIG_IGN:
                continue  # ignored on purpose (nohup): keep it so
            previous[sig] = signal.signal(sig, _raise_terminated)
        except (ValueError, OSError):  # not the main thread
            pass
    return previous


def _restore(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
