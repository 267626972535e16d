#!/usr/bin/env bash
# Set up .venv if needed, then run the whole test suite (parity suite included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m pytest "$@"
