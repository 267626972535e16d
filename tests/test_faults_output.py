"""Fault catalogue, output: the destination is checked before any computing; the result gets
the umask's mode; no temporary file survives a failure (an exception, a rename onto a
directory, SIGINT/SIGTERM during the run or the write, a full disk); one left by SIGKILL is
swept at the next write into that directory."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpu_sc.cli import main
from gpu_sc.io import (
    OutputError,
    atomic_path,
    check_free_space,
    check_output_path,
    run_isolated,
    sweep_stale_temporaries,
    write_h5ad,
)
from tests._faults import FAST_TOML, assert_one_line, small_counts

REPO = Path(__file__).resolve().parents[1]


def _env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO), env.get("PYTHONPATH", "")])
    env.update({k: str(v) for k, v in extra.items()})
    return env


@pytest.fixture(scope="module")
def small():
    return small_counts(300, 300, seed=4)


@pytest.fixture(scope="module")
def small_input(tmp_path_factory, small):
    path = tmp_path_factory.mktemp("faults_out") / "small.h5ad"
    write_h5ad(small, path)
    return path


@pytest.fixture(scope="module")
def fast_toml(tmp_path_factory):
    path = tmp_path_factory.mktemp("faults_cfg") / "fast.toml"
    path.write_text(FAST_TOML)
    return path


def _run_cmd(small_input, fast_toml, out) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gpu_sc.cli",
        "run",
        str(small_input),
        "-o",
        str(out),
        "--backend",
        "numpy",
        "--config",
        str(fast_toml),
    ]


# -- checked before any computing ---------------------------------------------------------


@pytest.mark.parametrize(
    "where,words",
    [
        ("missing_parent", ["does not exist", "mkdir -p"]),
        ("parent_is_a_file", ["is not a directory"]),
        ("target_is_a_directory", ["is a directory", "give a file name"]),
    ],
    ids=lambda x: x if isinstance(x, str) else None,
)
def test_check_output_path(tmp_path, where, words):
    target = {
        "missing_parent": tmp_path / "no" / "such" / "res.h5ad",
        "parent_is_a_file": tmp_path / "file.txt" / "res.h5ad",
        "target_is_a_directory": tmp_path / "res.h5ad",
    }[where]
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "res.h5ad").mkdir()
    with pytest.raises(OutputError) as err:
        check_output_path(target)
    assert_one_line(err.value, *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "res.h5ad"]


def test_check_output_path_ok_leaves_nothing(tmp_path):
    assert check_output_path(tmp_path / "res.h5ad") == tmp_path / "res.h5ad"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv,words",
    [
        (["run", "{input}", "-o", "{tmp}/missing/res.h5ad"], ["does not exist"]),
        (["run", "{input}", "-o", "{tmp}/adir.h5ad"], ["is a directory"]),
        (
            ["run", "{input}", "-o", "{tmp}/res.h5ad", "--report", "{tmp}/afile"],
            ["a file of that name exists"],
        ),
        (["demo", "--cells", "100000", "-o", "{tmp}/missing/demo.h5ad"], ["does not exist"]),
        (["report", "{input}", "-o", "{tmp}/afile"], ["a file of that name exists"]),
        (
            ["annotate", "{input}", "{tmp}/map.toml", "-o", "{tmp}/missing/a.h5ad"],
            ["does not exist"],
        ),
    ],
    ids=[
        "run_missing_dir",
        "run_target_dir",
        "run_report_is_file",
        "demo_missing_dir",
        "report_is_file",
        "annotate_missing_dir",
    ],
)
def test_cli_checks_output_before_computing(tmp_path, small_input, argv, words, capsys):
    (tmp_path / "adir.h5ad").mkdir()
    (tmp_path / "afile").write_text("keep")
    argv = [a.format(input=small_input, tmp=tmp_path) for a in argv]
    t0 = time.perf_counter()
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert_one_line(captured.err, "error", "OutputError", *words)
    assert "read " not in captured.err and "synthetic atlas" not in captured.err  # nothing ran
    assert time.perf_counter() - t0 < 5  # a 10^5-cell demo was not generated
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir.h5ad", "afile"]
    assert (tmp_path / "afile").read_text() == "keep"


# -- mode, rename failures, exceptions, crashes ------------------------------------------


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_result_gets_the_umask_mode(tmp_path, small, umask, mode):
    old = os.umask(umask)
    try:
        write_h5ad(small[:20, :20].copy(), tmp_path / "r.h5ad")
    finally:
        os.umask(old)
    assert (tmp_path / "r.h5ad").stat().st_mode & 0o777 == mode


def test_rename_onto_a_directory_removes_the_temporary(tmp_path):
    target = tmp_path / "r.txt"
    with pytest.raises(OutputError) as err:
        with atomic_path(target) as tmp:
            tmp.write_text("x")
            target.mkdir()  # the target turns into a directory during the write
            (target / "inside").write_text("y")
    assert_one_line(err.value, "is a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.txt"]


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt, SystemExit])
def test_exception_during_write_removes_the_temporary(tmp_path, exc):
    with pytest.raises(exc):
        with atomic_path(tmp_path / "r.h5ad") as tmp:
            tmp.write_bytes(b"half")
            raise exc()
    assert list(tmp_path.iterdir()) == []


def test_writer_crash_cannot_take_the_caller_down(tmp_path):
    """HDF5 can crash its process after a failed write: the writer is a forked child."""

    def segfault(path):
        path.write_bytes(b"half")
        os.kill(os.getpid(), signal.SIGSEGV)

    with pytest.raises(OSError) as err:
        with atomic_path(tmp_path / "r.h5ad") as tmp:
            run_isolated(segfault, tmp)
    assert_one_line(err.value, "writer process died", "SIGSEGV", "nothing was written")
    assert list(tmp_path.iterdir()) == []


def test_not_enough_free_space_is_refused_up_front(tmp_path):
    with pytest.raises(OutputError) as err:
        check_free_space(tmp_path, 10**18, tmp_path / "r.h5ad")
    assert_one_line(err.value, "not enough space", "free some space")


def test_file_size_limit_mid_write_efbig(tmp_path):
    """RLIMIT_FSIZE makes the HDF5 write fail half way (EFBIG) on any machine."""
    script = f"""
import resource, signal, numpy as np, scipy.sparse as sp, anndata as ad
from gpu_sc.io import write_h5ad
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
a = ad.AnnData(sp.random(1500, 1500, density=0.2, format="csr", dtype=np.float32, rng=0))
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.RLIM_INFINITY))
try:
    write_h5ad(a, {str(tmp_path / "r.h5ad")!r})
except Exception as exc:
    print(type(exc).__name__ + ": " + str(exc))
"""
    res = subprocess.run(
        [sys.executable, "-c", script], env=_env(), capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert_one_line(res.stdout, "OutputError", "File too large", "nothing was written")
    assert "Traceback" not in res.stderr
    assert list(tmp_path.iterdir()) == []


# -- stale temporaries of killed processes ------------------------------------------------


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_sweep_removes_only_dead_processes_temporaries(tmp_path, caplog):
    from gpu_sc.io import _host

    host = _host()
    dead = tmp_path / f".r.h5ad.gpu_sc-{host}-{_dead_pid()}-abcd1234.tmp.h5ad"
    alive = tmp_path / f".r.h5ad.gpu_sc-{host}-{os.getppid()}-abcd1234.tmp.h5ad"
    other_host = tmp_path / f".r.h5ad.gpu_sc-otherhost-{_dead_pid()}-abcd1234.tmp.h5ad"
    user_file = tmp_path / "notes.tmp"
    for p in (dead, alive, other_host, user_file):
        p.write_bytes(b"x")
    with caplog.at_level(logging.WARNING, logger="gpu_sc"):
        removed = sweep_stale_temporaries(tmp_path)
    assert removed == [dead]
    assert not dead.exists() and alive.exists() and other_host.exists() and user_file.exists()
    assert any("killed gpu_sc process" in r.getMessage() for r in caplog.records)


# -- signals during the run and during the write (gpu-sc run as a subprocess) --------------


def _wait_for_line(proc, needle: str, timeout: float = 90) -> str:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return line
    proc.kill()
    pytest.fail(f"{needle!r} never appeared; stderr: {''.join(seen)[-2000:]}")


def _wait_for_temporary(directory: Path, proc, timeout: float = 90) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hits = [p for p in directory.iterdir() if ".gpu_sc-" in p.name and "probe" not in p.name]
        if hits:
            return hits[0]
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"no temporary appeared; rc={proc.poll()} stderr={proc.stderr.read()[-2000:]}")


def _as_from_a_terminal() -> None:
    """Start the command with the signal state a shell gives it: nothing blocked, SIGINT at
    its default. Blocked masks and ignored dispositions are inherited across exec, and the
    pytest process (after hundreds of tests, some of them forking writers) need not be clean."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


SIGNALS = [
    ("SIGINT_during_run", signal.SIGINT, "run", 130),
    ("SIGTERM_during_run", signal.SIGTERM, "run", 143),
    ("SIGKILL_during_run", signal.SIGKILL, "run", -9),
    ("SIGINT_during_write", signal.SIGINT, "write", 130),
    ("SIGTERM_during_write", signal.SIGTERM, "write", 143),
    ("SIGKILL_during_write", signal.SIGKILL, "write", -9),
]


@pytest.mark.parametrize("sig,phase,rc", [c[1:] for c in SIGNALS], ids=[c[0] for c in SIGNALS])
def test_signal_leaves_no_file(tmp_path, small_input, fast_toml, small, sig, phase, rc, caplog):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    hook = {"GPU_SC_TEST_STEP_DELAY": 30} if phase == "run" else {"GPU_SC_TEST_WRITE_DELAY": 30}
    proc = subprocess.Popen(
        _run_cmd(small_input, fast_toml, out_dir / "res.h5ad"),
        env=_env(**hook),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_as_from_a_terminal,
    )
    try:
        if phase == "run":
            _wait_for_line(proc, "var_names_make_unique")  # the first step's progress line
        else:
            _wait_for_temporary(out_dir, proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == rc, err[-2000:]
    left = sorted(p.name for p in out_dir.iterdir())
    if sig != signal.SIGKILL:
        last = err.strip().splitlines()[-1]
        assert_one_line(last, f"interrupted by {signal.Signals(sig).name}", "output removed")
        assert "Traceback" not in err
        assert left == []
        return
    if phase == "run":
        assert left == []
        return
    # SIGKILL cannot be caught: the temporary (pid in its name) stays until the next write.
    assert len(left) == 1 and f"-{proc.pid}-" in left[0], left
    time.sleep(0.2)  # the writer child dies with its parent (PR_SET_PDEATHSIG)
    with caplog.at_level(logging.WARNING, logger="gpu_sc"):
        write_h5ad(small[:10, :10].copy(), out_dir / "res.h5ad")
    assert sorted(p.name for p in out_dir.iterdir()) == ["res.h5ad"]
    assert any("killed gpu_sc process" in r.getMessage() for r in caplog.records)


# -- read-only and full output file systems (a private mount namespace) -------------------


def _in_namespace(tmp_path: Path, options: str, command: str) -> subprocess.CompletedProcess:
    """Run ``command`` with a fresh tmpfs (``options``) on ``tmp_path/mnt``, in a private mount
    namespace (``unshare -m``; root). Prints what is left in the mount as ``LEFT:...``."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) is not installed")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = (
        f"mount -t tmpfs -o {options} tmpfs {mnt} || exit 97; {command}; rc=$?; "
        f"echo LEFT:$(ls -A {mnt}); exit $rc"
    )
    res = subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    if res.returncode == 97 or "unshare failed" in res.stderr:
        pytest.skip(f"mounting a tmpfs is refused here: {res.stderr.strip()[:200]}")
    return res


def test_read_only_output_dir_is_reported_before_computing(tmp_path, small_input, fast_toml):
    cmd = " ".join(_run_cmd(small_input, fast_toml, tmp_path / "mnt" / "res.h5ad"))
    res = _in_namespace(tmp_path, "ro,size=1m", cmd)
    assert res.returncode == 1, res.stderr[-2000:]
    assert_one_line(res.stderr, "OutputError", "not writable", "Read-only file system")
    assert "read " not in res.stderr  # the input was not even read
    assert "LEFT:\n" in res.stdout or res.stdout.rstrip().endswith("LEFT:")


def test_full_disk_is_refused_before_writing(tmp_path, small_input, fast_toml):
    cmd = " ".join(_run_cmd(small_input, fast_toml, tmp_path / "mnt" / "res.h5ad"))
    res = _in_namespace(tmp_path, "size=64k", cmd)
    assert res.returncode == 1, res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert_one_line(last, "OutputError", "not enough space", "free some space")
    assert res.stdout.rstrip().endswith("LEFT:")


def test_disk_full_mid_write_no_segfault_no_leftover(tmp_path):
    """ENOSPC inside HDF5 (past the up-front check): today h5py segfaults afterwards."""
    target = tmp_path / "mnt" / "r.h5ad"
    code = f"""
import numpy as np, scipy.sparse as sp, anndata as ad
from gpu_sc.io import atomic_path, run_isolated
a = ad.AnnData(sp.random(1500, 1500, density=0.2, format="csr", dtype=np.float32, rng=0))
try:
    with atomic_path({str(target)!r}) as tmp:  # no needed_bytes: skip the free-space check
        run_isolated(a.write_h5ad, tmp)
except Exception as exc:
    print(type(exc).__name__ + ": " + str(exc))
"""
    script = tmp_path / "w.py"
    script.write_text(code)
    res = _in_namespace(tmp_path, "size=1m", f"{sys.executable} {script}")
    assert res.returncode == 0, res.stderr[-2000:]  # no segfault (139)
    lines = res.stdout.strip().splitlines()
    assert_one_line(lines[0], "OutputError", "No space left on device", "nothing was written")
    assert lines[-1] == "LEFT:"
    assert "Traceback" not in res.stderr


def test_cli_keeps_an_ignored_sighup_and_restores_handlers(monkeypatch):
    """``nohup gpu-sc run ...`` must survive the hangup; handlers are restored afterwards."""
    import gpu_sc.cli.info

    during = {}

    def record(args):
        during.update(hup=signal.getsignal(signal.SIGHUP), term=signal.getsignal(signal.SIGTERM))
        return 0

    monkeypatch.setattr(gpu_sc.cli.info, "run", record)
    old_hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    old_term = signal.getsignal(signal.SIGTERM)
    try:
        assert main(["info"]) == 0
        assert during["hup"] is signal.SIG_IGN  # kept ignored during the command
        assert during["term"] is not old_term  # SIGTERM is turned into an interrupt
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is old_term
    finally:
        signal.signal(signal.SIGHUP, old_hup)


@pytest.mark.parametrize(
    "exc",
    [
        OSError(28, "No space left on device"),
        OSError(122, "Disk quota exceeded"),
        RuntimeError(
            "Can't decrement id ref count (file write failed: errno = 28, error message = "
            "'No space left on device')"
        ),
    ],
    ids=["ENOSPC", "EDQUOT", "hdf5_text_only"],
)
def test_no_space_errors_become_one_line_and_leave_nothing(tmp_path, exc):
    with pytest.raises(OutputError) as err:
        with atomic_path(tmp_path / "r.h5ad") as tmp:
            tmp.write_bytes(b"half")
            raise exc
    assert_one_line(err.value, "cannot write", "nothing was written", "free some space")
    assert list(tmp_path.iterdir()) == []
