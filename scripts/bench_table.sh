#!/usr/bin/env bash
# Regenerate the committed benchmark results and the README's bench block from them.
# Defaults: the CPU run of issue 7; override with BENCH_* variables (see benchmarks/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${BENCH_OUT:-benchmarks/results/cpu-2core}
args=(--cells "${BENCH_CELLS:-10000,50000}" --backends "${BENCH_BACKENDS:-scanpy,numpy}"
      --repeats "${BENCH_REPEATS:-3}" --steps "${BENCH_STEPS:-all}" --out "$OUT")
if [[ -n "${BENCH_BUDGET:-}" ]]; then args+=(--budget "$BENCH_BUDGET"); fi
"$PY" -m gpu_sc.cli bench "${args[@]}"
"$PY" scripts/readme_section.py bench "$OUT/bench.md"
