#!/usr/bin/env bash
# scanpy's own test suite as a conformance check: the relevant test files of the installed
# scanpy's sdist run three ways (unmodified; gpu_sc's functions substituted on the NumPy
# engine; the same in strict mode), and the regressions against the unmodified run are printed.
# The per-file table, per-test JSON and regression list go to benchmarks/results/scanpy_suite/.
#
#   scripts/test_scanpy_suite.sh                 # prepare, all three modes, report
#   scripts/test_scanpy_suite.sh run gpu_sc      # one mode (then: ... report)
#   scripts/test_scanpy_suite.sh all --pytest-args="-k pca"
#   scripts/test_scanpy_suite.sh run gpu_sc strict --ids benchmarks/results/scanpy_suite/rerun_ids.txt
#                                                # rerun some test ids (then: ... report)
#
# A separate venv (default /tmp/gpu_sc-suite-venv, or $SCANPY_SUITE_VENV) gets gpu_sc (editable,
# at constraints.txt) and scanpy's test dependencies; the sdist, its data and the JUnit XML live
# in $SCANPY_SUITE_DIR (default /tmp/gpu_sc-scanpy-suite). Data scanpy's tests download is
# rebuilt offline from ../shared/data/pbmc3k (or $GPU_SC_DATA); other downloads skip the test.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${SCANPY_SUITE_VENV:-/tmp/gpu_sc-suite-venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.gpu_sc-suite-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  # scanpy's [test] extra, less what these files don't use (xdist, randomly, cov, tuna, louvain)
  "$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[test]" \
    pytest-mock pytest-rerunfailures leidenalg igraph scikit-misc
  touch "$stamp"
fi
cmd=${1:-all}
[ $# -gt 0 ] && shift
exec "$VENV/bin/python" scripts/scanpy_suite/run_suite.py "$cmd" "$@"
