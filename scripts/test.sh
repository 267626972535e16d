#!/usr/bin/env bash
# Set up .venv if needed, lint, then run the whole test suite (parity and slow tests included).
# Quick loop while developing: bash scripts/test.sh -m "not slow" (or "not slow and not parity")
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy  # the files of [tool.mypy] in pyproject.toml (cached: .mypy_cache)
# Both cores: pytest-xdist, one worker per core, a test file per worker at a time (loadfile:
# the module-scoped fixtures, e.g. the parity runs, are computed once). GPU_SC_TEST_WORKERS=0
# runs in this process; pytest arguments after these (-n 0, --dist ...) override them.
exec .venv/bin/python -m pytest -n "${GPU_SC_TEST_WORKERS:-2}" --dist loadfile "$@"
