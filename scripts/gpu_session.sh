#!/usr/bin/env bash
# The GPU session in one script: CuPy tests, PBMC3k parity scanpy vs cupy, and the benchmark.
#
# Nothing here has run on a GPU yet: the first session with a device runs it and commits
# what it brings back (benchmarks/results/, with the GPU name) and fixes what fails.
#
# ---- on the developer machine (repository root), once per session ---------------------------
#   bash scripts/gpu_session.sh prepare
# downloads into .whl/ the cp312 wheels the device image lacks (../shared/device/wheels.txt;
# GPU_SC_SHARED names another shared folder),
# pinned to the versions of this machine's venv so both sides run the same scanpy/anndata, and
# copies the PBMC3k tarball into .data/pbmc3k/. Both folders are in .gitignore: they travel
# only as `carry` and are never committed.
#
# ---- on the device: one `run` call of the device tool per phase --------------------------------
# (each command may last 600 s; $OUT is emptied before each call, so each phase packs its own
# results into one tarball plus a log, well under the 8 files that come back):
#   run(command="bash scripts/gpu_session.sh check",  carry=[".whl", ".data"], timeout_s=300)
#     (optional, cheap: installs the wheels and checks cupy/scanpy/anndata and the device)
#   run(command="bash scripts/gpu_session.sh tests",  carry=[".whl", ".data"], timeout_s=600)
#   run(command="bash scripts/gpu_session.sh parity", carry=[".whl", ".data"], timeout_s=600)
#   run(command="bash scripts/gpu_session.sh bench",  carry=[".whl", ".data"], timeout_s=600)
#   run(command="bash scripts/gpu_session.sh kernels", carry=[".whl", ".data"], timeout_s=300)
#     (every fused kernel of gpu_sc.kernels.cuda timed against its declared cost: measured s,
#     declared bytes and flops, implied GB/s and TFLOP/s, the H200 model's time; KERNEL_SCALE
#     (1), KERNEL_REPEATS (5). Rehearsed without a GPU: NUMBA_ENABLE_CUDASIM=1 python -m
#     gpu_sc.bench.kernel_timing --scale 0 runs the same code on the simulator.)
# or, while the device time allows it, all four in one call (`... gpu_session.sh all`, each
# phase then gets PHASE_SECONDS, default 170 s). Settings (environment): PHASE_SECONDS (default
# 540 for one phase), BENCH_CELLS (100000,1000000), BENCH_REPEATS (3), BENCH_BUDGET (seconds per
# scanpy step, default 60), PYTEST_ARGS (extra pytest arguments).
# Each phase prints a short table last; the device tool returns it in output_tail.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PHASE=${1:-all}
OUT=${OUT:-$ROOT/out/gpu_session}
SUMMARY=$OUT/summary.txt

note() { echo "$*" | tee -a "$SUMMARY"; }

# Beyond wheels.txt (shared, not ours to edit), found by rehearsing the device on a CPU
# machine with the image's packages (numpy 2.5.2, pandas 3.x, no scanpy):
#  - pandas, pytz, tzdata: the image's pandas is 3.x (it has neither pytz nor tzdata, which
#    every pandas 2 needs), while anndata 0.12.19 requires pandas<3 and, under pandas 3,
#    refuses to write an .h5ad (obs_names become a nullable StringArray: "RuntimeError:
#    anndata.settings.allow_write_nullable_strings is False"). Carry the venv's pandas 2.
#  - py-cpuinfo2: what pytest-benchmark 5.3 requires; py-cpuinfo (in wheels.txt) is skipped
#    because both ship the same top-level `cpuinfo` package into /tmp/site.
#  - numba-cuda and its cuda-python dependencies: the fused kernels (gpu_sc.kernels.cuda). It
#    also needs libNVVM (the nvidia-cuda-nvcc wheel or a CUDA toolkit on the image); without it
#    the kernels phase reports each kernel as failed to compile and the engine runs the
#    references (noted in the provenance).
EXTRA_WHEELS=(pandas pytz tzdata py-cpuinfo2 numba-cuda cuda-bindings cuda-core cuda-pathfinder)
SKIP_WHEELS=(py-cpuinfo)

prepare() {
    local venv=${VENV_PYTHON:-/work/main/.venv/bin/python}
    local shared=${GPU_SC_SHARED:-$ROOT/../shared}
    [ -d "$shared" ] || shared=/work/shared  # a helper's worktree sits one level deeper
    local wheels=$shared/device/wheels.txt
    local names=() name pinned version
    mkdir -p .whl .data/pbmc3k
    for name in $(grep -v '^\s*#' "$wheels" | sed '/^\s*$/d') "${EXTRA_WHEELS[@]}"; do
        [[ " ${SKIP_WHEELS[*]} " == *" $name "* ]] && continue
        version=$("$venv" -m pip show "$name" 2>/dev/null | awk '/^Version:/ {print $2}')
        pinned=$name${version:+==$version}
        [ -n "$version" ] || echo "prepare: $name is not in $venv: taking the newest" >&2
        names+=("$pinned")
    done
    local plat=()
    for p in manylinux_2_39 manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 \
        manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux_2_5 manylinux1; do
        plat+=(--platform "${p}_x86_64")
    done
    for pinned in "${names[@]}"; do
        python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
            --python-version 3.12 --implementation cp "${plat[@]}" -d .whl "$pinned" \
            || echo "prepare: could not get $pinned" >&2
    done
    cp -f "$shared/data/pbmc3k/pbmc3k_filtered_gene_bc_matrices.tar.gz" .data/pbmc3k/
    # two versions of one package stop the device's pip install: say so now
    ls .whl | sed -E 's/-[0-9][^-]*-.*//' | sort | uniq -d | sed 's/^/prepare: two wheels of /'
    du -sh .whl .data
}

setup_device() {
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || { note "setup: wheel install failed"; return 1; }
    export PYTHONPATH=/tmp/site:$ROOT/src:$ROOT PYTHONUNBUFFERED=1
    export GPU_SC_DATA=$ROOT/.data/pbmc3k MPLBACKEND=Agg
    # one line per package (version and where it comes from), then the device; a failed import
    # is one line naming the package, not a traceback, and fails the phase
    python3 - <<'EOF' 2>&1 | tee -a "$SUMMARY"
import importlib, sys, warnings
warnings.simplefilter("ignore", FutureWarning)  # scanpy/anndata: `__version__` is deprecated
ok = True
for name in ("numpy", "scipy", "pandas", "numba", "sklearn", "anndata", "scanpy", "igraph",
             "leidenalg", "pynndescent", "umap", "skmisc", "cupy", "gpu_sc"):
    try:
        mod = importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - any import failure, in one line
        ok = False
        msg = str(exc).splitlines()[0] if str(exc) else ""
        print(f"setup: cannot import {name}: {type(exc).__name__}: {msg}")
        continue
    where = (getattr(mod, "__file__", None) or "?").split("/site-packages/")[-1]
    print(f"  {name:<12} {str(getattr(mod, '__version__', '?')):<12} {where}")
if not ok:
    print(f"setup: FAILED (python {sys.version.split()[0]} at {sys.executable})")
    raise SystemExit(1)
import cupy
from gpu_sc.dispatch import cuda_status
try:
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    cuda = cupy.cuda.runtime.runtimeGetVersion()
except Exception as exc:  # noqa: BLE001
    print(f"setup: FAILED: cupy imports but sees no device: {type(exc).__name__}: {exc}")
    raise SystemExit(1)
print(f"device: {name}; CUDA runtime {cuda}")
status = cuda_status()
print(f"gpu_sc cuda_status: available={status.available} ({status.reason})")
raise SystemExit(0 if status.available else 1)
EOF
}

gpu_tag() {
    python3 -c "import cupy; n = cupy.cuda.runtime.getDeviceProperties(0)['name']; \
n = n.decode() if isinstance(n, bytes) else n; print(''.join(c if c.isalnum() else '-' for c in n))"
}

run_tests() {
    local limit=$1
    note "== tests: pytest -m gpu (the cupy parametrizations, parity suite on cupy included)"
    timeout "$limit" python3 -m pytest -m gpu -q -rfEs -p no:cacheprovider \
        --junitxml="$OUT/pytest-gpu.xml" ${PYTEST_ARGS:-} tests >"$OUT/pytest-gpu.log" 2>&1
    local rc=$?
    tail -n 25 "$OUT/pytest-gpu.log"
    note "tests: exit $rc ($(grep -Eo '[0-9]+ (passed|failed|skipped|error)' "$OUT/pytest-gpu.log" \
        | tr '\n' ' '))"
}

run_parity() {
    local limit=$1
    note "== parity: PBMC3k, scanpy vs cupy"
    timeout "$limit" python3 -m gpu_sc.cli parity \
        "$ROOT/.data/pbmc3k/pbmc3k_filtered_gene_bc_matrices.tar.gz" --backends scanpy,cupy \
        --out "$OUT/parity-pbmc3k.json" --markdown "$OUT/parity-pbmc3k.md" \
        >"$OUT/parity.log" 2>&1
    local rc=$?
    note "parity: exit $rc (0 = every engine stage within its threshold)"
}

run_bench() {
    local limit=$1 dir
    dir=$OUT/bench-$(gpu_tag)
    note "== bench: ${BENCH_CELLS:-100000,1000000} cells, scanpy vs cupy -> $(basename "$dir")"
    if ! python3 -m gpu_sc.cli bench --help >/dev/null 2>&1; then
        note "bench: no 'gpu-sc bench' command in this checkout (merge the bench branch)"
        return 0
    fi
    timeout "$limit" python3 -m gpu_sc.cli bench --cells "${BENCH_CELLS:-100000,1000000}" \
        --backends scanpy,cupy --repeats "${BENCH_REPEATS:-3}" --budget "${BENCH_BUDGET:-60}" \
        --time-limit $((limit * 2 / 3)) \
        --out "$dir" >"$OUT/bench.log" 2>&1
    note "bench: exit $? (results are written after each size; --time-limit stops new repeats)"
}

run_kernels() {
    local limit=$1
    note "== kernels: each fused kernel against its declared cost (scale ${KERNEL_SCALE:-1})"
    timeout "$limit" python3 -m gpu_sc.bench.kernel_timing --scale "${KERNEL_SCALE:-1}" \
        --repeats "${KERNEL_REPEATS:-5}" --json "$OUT/kernels.json" >"$OUT/kernels.log" 2>&1
    local rc=$?
    tail -n 20 "$OUT/kernels.log" | tee -a "$SUMMARY"
    note "kernels: exit $rc (0 = every kernel compiled and ran)"
}

table() {
    # the short table printed last: tests, parity rows that failed, bench markdown head
    echo
    echo "==================== gpu_session summary ===================="
    cat "$SUMMARY"
    if [ -f "$OUT/parity-pbmc3k.md" ]; then
        echo "-- parity (rows marked FAIL, if any):"
        grep -E '^\| stage|FAIL' "$OUT/parity-pbmc3k.md" | head -n 20
    fi
    local md
    md=$(ls "$OUT"/bench-*/*.md 2>/dev/null | head -n 1)
    [ -n "$md" ] && { echo "-- bench:"; head -n 30 "$md"; }
    return 0
}

pack() {
    # at most 8 files come back: the summary and logs stay loose, everything else in one tarball
    (cd "$OUT" && find . -mindepth 1 -maxdepth 1 ! -name summary.txt ! -name '*.log' \
        ! -name "results-$PHASE.tar.gz" -print0 \
        | tar --null -czf "results-$PHASE.tar.gz" -T - --remove-files 2>/dev/null) || true
}

case "$PHASE" in
    prepare) prepare; exit $? ;;
    tests | parity | bench | kernels | all) ;;
    check) ;;
    *) echo "usage: $0 prepare|check|tests|parity|bench|kernels|all" >&2; exit 2 ;;
esac

mkdir -p "$OUT"
: >"$SUMMARY"
setup_device || { table; exit 1; }
case "$PHASE" in
    check) ;;
    tests) run_tests "${PHASE_SECONDS:-540}" ;;
    parity) run_parity "${PHASE_SECONDS:-540}" ;;
    bench) run_bench "${PHASE_SECONDS:-540}" ;;
    kernels) run_kernels "${PHASE_SECONDS:-540}" ;;
    all)
        run_kernels "${PHASE_SECONDS:-120}"
        run_tests "${PHASE_SECONDS:-170}"
        run_parity "${PHASE_SECONDS:-170}"
        run_bench "${PHASE_SECONDS:-170}"
        ;;
esac
table
pack
