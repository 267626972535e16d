#!/usr/bin/env python3
"""Replace the README block between `<!-- NAME:start -->` and `<!-- NAME:end -->` by a file.

Used to regenerate the README's result tables from committed results, never typed by hand:
    python scripts/readme_section.py parity benchmarks/results/parity_pbmc3k.md
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def replace_section(text: str, name: str, body: str) -> str:
    pattern = re.compile(
        rf"(<!-- {re.escape(name)}:start -->\n).*?(<!-- {re.escape(name)}:end -->)", re.S
    )
    if not pattern.search(text):
        raise SystemExit(f"README has no <!-- {name}:start --> ... <!-- {name}:end --> block")
    return pattern.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(2), text)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    name, path = argv
    README.write_text(replace_section(README.read_text(), name, Path(path).read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
