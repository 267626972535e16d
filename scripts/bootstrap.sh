#!/usr/bin/env bash
# Create (once) the project's virtual environment in .venv with gpu_sc and its test extras,
# at the exact versions of constraints.txt (what the suite was last run with). Reinstalls when
# pyproject.toml or constraints.txt is newer than the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.gpu_sc-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[test]"
  touch "$stamp"
fi
