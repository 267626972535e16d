"""Shared fixtures: the real PBMC3k matrix from ../shared, small synthetic atlases."""

from __future__ import annotations

import os
import warnings
from pathlib import Path


def _simulate_cuda_kernels() -> bool:
    """Whether the fused CUDA kernels (gpu_sc.kernels.cuda) run on numba-cuda's simulator in
    this session: yes unless a real CUDA device answers (GPU_SC_CUDASIM=0/1 overrides)."""
    setting = os.environ.get("GPU_SC_CUDASIM")
    if setting is not None:
        return setting not in ("", "0")
    from gpu_sc.dispatch import cuda_status

    return not cuda_status().available


# numba reads NUMBA_ENABLE_CUDASIM when it is first imported: set it before anything imports it
# (the `ptx` tests compile in a subprocess without it).
if "NUMBA_ENABLE_CUDASIM" not in os.environ and _simulate_cuda_kernels():
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

import matplotlib  # noqa: E402
import pytest  # noqa: E402

matplotlib.use("Agg")

REPO = Path(__file__).resolve().parents[1]


def _data_dir() -> Path:
    """$GPU_SC_DATA (gpu_sc.datasets.data_dir; the old GPU_SC_PBMC3K still works, with a
    warning shown once), else ../shared/data/pbmc3k."""
    from gpu_sc.datasets.pbmc3k import data_dir

    with warnings.catch_warnings():
        warnings.simplefilter("always")  # shown, not an error at collection
        return data_dir() or REPO.parent / "shared" / "data" / "pbmc3k"


PBMC3K_DIR = _data_dir()


def _gpu_target() -> str:
    """Where `gpu` tests run: "cuda" (a real device answered the probe) or "double" (the
    CuPy double, gpu_sc.testing.cupy_double: CuPy 14.2's rules on NumPy, not a GPU)."""
    from gpu_sc.dispatch import cuda_status

    return "cuda" if cuda_status().available else "double"


def pytest_collection_modifyitems(config, items):
    # `gpu` tests always run: on real CUDA when usable, else on the CuPy double (below). They
    # share this session's fixtures (the PBMC3k tutorial results above all), which is what keeps
    # the whole suite, twins included, within CI's 20 minutes on 2 cores.
    return


def pytest_report_header(config):
    from gpu_sc.dispatch import cuda_status

    status = cuda_status()
    if status.available:
        return f"gpu tests: on real CUDA ({status.device_name}, CuPy {status.cupy_version})"
    return f"gpu tests: on the CuPy double (no usable CUDA: {status.reason})"


#: (test id, increase of the peak RSS in KiB) for the tests that raised this process's peak
#: (ru_maxrss) or its children's: the CI budget's memory side (issue 19: peak RSS <= 8 GB).
_PEAK_RAISERS: list[tuple[str, str, int]] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    import resource

    before = [
        resource.getrusage(w).ru_maxrss for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    ]
    yield
    for who, w, b in zip(
        ("self", "children"), (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN), before, strict=True
    ):
        after = resource.getrusage(w).ru_maxrss
        if after > b:
            _PEAK_RAISERS.append((item.nodeid, who, after - b))


def _own_peaks() -> dict:
    """This process's peak RSS (GiB) and its children's, and the tests that raised them."""
    import resource

    peak = {
        who: resource.getrusage(w).ru_maxrss / 2**20
        for who, w in (("self", resource.RUSAGE_SELF), ("children", resource.RUSAGE_CHILDREN))
    }
    return {"peak": peak, "raisers": sorted(_PEAK_RAISERS, key=lambda r: -r[2])[:5]}


def _tree_pss_bytes(root: int) -> int:
    """Proportional set size of process ``root`` and all its descendants (shared pages
    counted once in total, unlike summed RSS: forked children share their parent's)."""
    import os

    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return total


class _TreeMemory:
    """Samples, once a second, the memory held at once by the whole test run: this process,
    the xdist workers and every child (Dask workers, subprocesses)."""

    def __init__(self) -> None:
        import os
        import threading

        self.peak = 0
        self._root = os.getpid()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-pss", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.peak = max(self.peak, _tree_pss_bytes(self._root))

    def start(self) -> None:
        import os

        if os.path.exists("/proc/self/smaps_rollup"):
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()


_TREE = _TreeMemory()


def pytest_configure(config):
    if not hasattr(config, "workerinput"):  # the controller (or the only process)
        _TREE.start()


#: Under pytest-xdist (``-n``): each worker's :func:`_own_peaks`, sent when it finishes.
_WORKER_PEAKS: dict[str, dict] = {}


def pytest_sessionfinish(session):
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: hand its peaks to the controller
        workeroutput["gpu_sc_peaks"] = _own_peaks()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    peaks = getattr(node, "workeroutput", {}).get("gpu_sc_peaks")
    if peaks is not None:
        _WORKER_PEAKS[node.gateway.id] = peaks


def _memory_summary(terminalreporter) -> None:
    runs = dict(_WORKER_PEAKS) or {"pytest": _own_peaks()}
    raisers = []
    for name, got in sorted(runs.items()):
        peak = got["peak"]
        terminalreporter.write_line(
            f"peak RSS ({name}): {peak['self']:.2f} GiB (process), {peak['children']:.2f} GiB "
            "(largest child process: workers, subprocesses)"
        )
        raisers += [(name, *r) for r in got["raisers"]]
    _TREE.stop()
    if _TREE.peak:
        terminalreporter.write_line(
            "peak memory of the whole run (PSS of pytest, its workers and all their children, "
            f"sampled each second): {_TREE.peak / 2**30:.2f} GiB"
        )
    top = sorted(raisers, key=lambda r: -r[3])[:5]
    if top:
        terminalreporter.write_line(
            "raised by: "
            + "; ".join(
                f"{nodeid} (+{kib / 2**20:.2f} GiB, {who}, {name})"
                for name, nodeid, who, kib in top
            )
        )


def pytest_terminal_summary(terminalreporter):
    _memory_summary(terminalreporter)
    ran = [
        r
        for r in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", [])
        if "gpu" in r.keywords
    ]
    if ran:
        where = "real CUDA" if _gpu_target() == "cuda" else "the CuPy double (NumPy, not a GPU)"
        terminalreporter.write_line(f"gpu tests: {len(ran)} ran on {where}")


@pytest.fixture(autouse=True)
def _exact_precision(request):
    """Every test runs at ``precision="exact"`` (the cupy backend's default is ``"fast"``):
    the suite's cupy-versus-numpy/scanpy comparisons are of the same arithmetic. Tests marked
    ``precision_default`` keep the shipped default; the fast path has its own tests
    (``tests/test_precision.py``) and parity thresholds."""
    if request.node.get_closest_marker("precision_default") is not None:
        yield
        return
    from gpu_sc import settings

    with settings.override(precision="exact"):
        yield


@pytest.fixture(autouse=True)
def _cupy_for_gpu_tests(request):
    """`gpu` tests run on real CUDA when it is usable, else on the CuPy double, installed
    for that test only (and removed after it, caches of the CUDA probe cleared both ways)."""
    if request.node.get_closest_marker("gpu") is None or _gpu_target() == "cuda":
        yield None
        return
    from gpu_sc.testing.cupy_double import install

    with install() as double:
        yield double


@pytest.fixture(scope="session")
def pbmc3k_raw():
    """The raw 10x PBMC3k counts (2700 x 32738), read once per session; copy before mutating."""
    if not PBMC3K_DIR.exists():
        pytest.fail(f"PBMC3k data not found at {PBMC3K_DIR}; set GPU_SC_DATA")
    import gpu_sc

    return gpu_sc.datasets.pbmc3k(PBMC3K_DIR)


@pytest.fixture
def pbmc3k(pbmc3k_raw):
    return pbmc3k_raw.copy()


@pytest.fixture(scope="session")
def pbmc3k_tutorial_numpy(pbmc3k_raw):
    """The whole PBMC3k tutorial on the numpy engine, run once per session (it is the slowest
    fixture of the suite); tests must not modify it: copy first."""
    import gpu_sc

    return gpu_sc.pipeline(pbmc3k_raw.copy(), backend="numpy")


@pytest.fixture(scope="session")
def pbmc3k_tutorial_scanpy(pbmc3k_raw):
    """The whole PBMC3k tutorial on scanpy, run once per session; copy before modifying."""
    import gpu_sc

    return gpu_sc.pipeline(pbmc3k_raw.copy(), backend="scanpy")
