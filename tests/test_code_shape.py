"""The shape of the package's code: no function over 80 lines without a stated reason.

A function (or method) counts from its ``def`` line to its last line, docstring included,
decorators not. One over :data:`MAX_LINES` passes only when the line just above its ``def``
(above its decorators, if any) or its first body line is in a comment block with a line
starting ``# long:`` that says why it is one function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import gpu_sc

ROOT = Path(gpu_sc.__file__).parent
MAX_LINES = 80
MARK = "# long:"


def _comment_block(lines: list[str], end: int, step: int) -> list[str]:
    """The comment lines running from 0-based line ``end`` in direction ``step``."""
    block = []
    while 0 <= end < len(lines) and lines[end].strip().startswith("#"):
        block.append(lines[end].strip())
        end += step
    return block


def _has_reason(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    above = _comment_block(lines, first - 2, -1)  # the comment block just above the def
    body = _comment_block(lines, node.body[0].lineno - 2, -1)  # ... just above the body
    return any(line.startswith(MARK) for line in above) or any(
        line.startswith(MARK) for line in body
    )


def long_functions() -> list[tuple[int, str]]:
    """Every function over ``MAX_LINES`` without a ``# long:`` reason, as (length, where)."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        text = path.read_text()
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_LINES and not _has_reason(lines, node):
                where = f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"
                found.append((length, where))
    return sorted(found, reverse=True)


def test_no_long_function_without_a_reason():
    offenders = long_functions()
    listing = "\n".join(f"  {n} lines  {where}" for n, where in offenders)
    assert not offenders, (
        f"functions over {MAX_LINES} lines without a '{MARK} <reason>' comment above the def "
        f"or on the first body line (split them, or say why not):\n{listing}"
    )
