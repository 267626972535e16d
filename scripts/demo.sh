#!/usr/bin/env bash
# Set up .venv if needed, then run the whole pipeline on a synthetic atlas: `gpu-sc demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/gpu-sc demo "$@"
