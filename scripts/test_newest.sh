#!/usr/bin/env bash
# Test the top of the dependency range: scanpy 1.12.x and anndata 0.13.x need Python >= 3.12,
# which this machine (Debian 12, Python 3.11) lacks. So: a Debian 13 (trixie) root made with
# debootstrap (default /tmp/gpu_sc-trixie, or $TRIXIE_ROOT; reused if present), whose
# python3.13 gets a venv (/opt/venv inside) with constraints-newest.txt, and a subset of the
# suite run there: signatures, dispatch, the preprocessing engine, neighbors/leiden/markers,
# a synthetic pipeline, the PBMC3k pipeline, the write_h5ad/write_zarr round trip, and the
# scverse-backends entry point (tests/test_scverse_backend.py). Extra arguments go to pytest
# (they replace the default test selection when they name tests: e.g. tests/test_dispatch.py).
# Needs root (debootstrap, chroot, mounts); the mounts live in a private mount namespace
# (unshare) and vanish with it. Debian's packages and the package index must be reachable.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
ROOT=${TRIXIE_ROOT:-/tmp/gpu_sc-trixie}
DATA=${GPU_SC_PBMC3K:-$REPO/../shared/data/pbmc3k}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ "$(id -u)" != 0 ]; then
  echo "test_newest.sh: needs root (debootstrap, chroot, mount)" >&2
  exit 2
fi
if [ ! -x "$ROOT/usr/bin/python3.13" ]; then
  if ! command -v debootstrap >/dev/null; then
    apt-get update -q && apt-get install -y -q debootstrap
  fi
  rm -rf "$ROOT"
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    trixie "$ROOT" "$MIRROR"
fi
# pip inside trusts what this machine trusts (a proxy's CA included).
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/host-ca.crt"
mkdir -p "$ROOT/gpu_sc/repo" "$ROOT/gpu_sc/shared/data/pbmc3k" "$ROOT/proc" "$ROOT/sys" "$ROOT/dev"
# The copy of the checkout is laid anew each run (tracked and untracked, not ignored files).
rm -rf "$ROOT/gpu_sc/repo"
mkdir -p "$ROOT/gpu_sc/repo"
git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' f; do if [ -e "$f" ]; then printf '%s\0' "$f"; fi; done |
  tar --null -T - -cf - | tar -xf - -C "$ROOT/gpu_sc/repo"

default_tests=(
  tests/test_engine_signatures.py
  tests/test_dispatch.py
  tests/test_engine_preprocessing.py
  tests/test_engine_neighbors.py
  tests/test_engine_leiden.py
  tests/test_engine_markers.py
  tests/test_results_roundtrip.py
  tests/test_scverse_backend.py
  tests/test_scanpy_compat.py
  tests/test_pipeline_robust.py::test_copy_true_returns_the_result_and_leaves_the_input
  tests/test_datasets_synthetic.py::test_scanpy_tutorial_pipeline_recovers_overlapping_types_only_partly
  tests/test_pipeline_pbmc3k.py
)
tests=("${default_tests[@]}")
for a in "$@"; do
  case "$a" in tests/*) tests=(); break ;; esac
done

cat > "$ROOT/gpu_sc/run-tests.sh" <<'INNER'
set -euo pipefail
cd /gpu_sc/repo
if [ ! -x /opt/venv/bin/python ]; then python3.13 -m venv /opt/venv; fi
stamp=/opt/venv/.gpu_sc-newest-installed
sum=$(cat pyproject.toml constraints-newest.txt | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ]; then
  /opt/venv/bin/python -m pip install -q -c constraints-newest.txt -r constraints-newest.txt
  /opt/venv/bin/python -m pip install -q -c constraints-newest.txt -e ".[test,dask,scverse]"
  echo "$sum" > "$stamp"
fi
/opt/venv/bin/python -m pip list 2>/dev/null |
  grep -iE '^(scanpy|anndata|numpy|scipy|pandas|numba|scikit-learn|zarr|dask|scverse-backends) '
/opt/venv/bin/python --version
exec /opt/venv/bin/python -m pytest -p no:cacheprovider "$@"
INNER

# The environment inside: only what the tests need (this machine's OpenBLAS settings too).
envs=(PATH=/usr/bin:/bin HOME=/root LANG=C.UTF-8 PIP_CERT=/etc/ssl/certs/host-ca.crt
  PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180)
for v in OPENBLAS_NUM_THREADS OPENBLAS_CORETYPE OPENBLAS_L2_SIZE; do
  if [ -n "${!v:-}" ]; then envs+=("$v=${!v}"); fi
done
# A private mount namespace: /proc (dask reads it), /sys (loky counts cores there), /dev (with
# /dev/shm for multiprocessing) and the data, all gone when the run ends.
exec unshare --mount --propagation private bash -c '
  set -e
  ROOT=$1 DATA=$2 n=$3
  shift 3
  mount -t proc proc "$ROOT/proc"
  mount -t sysfs sysfs "$ROOT/sys"
  mount --rbind /dev "$ROOT/dev"
  mount --bind -o ro "$DATA" "$ROOT/gpu_sc/shared/data/pbmc3k"
  exec chroot "$ROOT" /usr/bin/env -i "${@:1:$n}" bash /gpu_sc/run-tests.sh "${@:$((n + 1))}"
' newest "$ROOT" "$DATA" "${#envs[@]}" "${envs[@]}" "${tests[@]}" "$@"
