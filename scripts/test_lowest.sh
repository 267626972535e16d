#!/usr/bin/env bash
# Test the bottom of the dependency range: a separate venv (default /tmp/gpu_sc-lowest, or
# $LOWEST_VENV) with constraints-lowest.txt (scanpy 1.11.5, anndata 0.10.0, numpy 1.26.0, ...)
# and a quick subset of the suite: signatures, dispatch, the preprocessing engine, one
# synthetic pipeline. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
VENV=${LOWEST_VENV:-/tmp/gpu_sc-lowest}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.gpu_sc-lowest-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints-lowest.txt -nt "$stamp" ]; then
  "$VENV/bin/python" -m pip install -q -c constraints-lowest.txt -r constraints-lowest.txt
  "$VENV/bin/python" -m pip install -q -c constraints-lowest.txt -e ".[test]"
  touch "$stamp"
fi
"$VENV/bin/python" -m pip list 2>/dev/null | grep -iE '^(scanpy|anndata|numpy|scipy|pandas|numba|scikit-learn) '
exec "$VENV/bin/python" -m pytest -p no:cacheprovider \
  tests/test_engine_signatures.py \
  tests/test_dispatch.py \
  tests/test_engine_preprocessing.py \
  tests/test_pipeline_robust.py::test_copy_true_returns_the_result_and_leaves_the_input \
  tests/test_datasets_synthetic.py::test_scanpy_tutorial_pipeline_recovers_overlapping_types_only_partly \
  "$@"
