#!/usr/bin/env bash
# Regenerate the committed parity results on PBMC3k and the README's parity table from them.
#   bash scripts/parity_table.sh [BACKENDS]       (default: scanpy,numpy)
# Writes benchmarks/results/parity_pbmc3k.{json,md}; the JSON's numbers are seeded (seed 0) and
# reproducible; only its "generated" field changes between runs. Exits 1 (after writing the
# files and the README) when a metric of an engine stage misses its threshold.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python
DATA=${GPU_SC_DATA:-${GPU_SC_PBMC3K:-../shared/data/pbmc3k}}/filtered_gene_bc_matrices/hg19
BACKENDS=${1:-scanpy,numpy}
OUT=benchmarks/results
mkdir -p "$OUT"
PYTHONPATH=src "$PY" -m gpu_sc.cli parity "$DATA" --name pbmc3k --backends "$BACKENDS" --seed 0 \
    --out "$OUT/parity_pbmc3k.json" --markdown "$OUT/parity_pbmc3k.md"
rc=$?
if [ -f "$OUT/parity_pbmc3k.md" ] && grep -q "<!-- parity:start -->" README.md; then
    "$PY" scripts/readme_section.py parity "$OUT/parity_pbmc3k.md" || exit 1
else
    echo "README has no parity block yet; table left in $OUT/parity_pbmc3k.md" >&2
fi
exit $rc
