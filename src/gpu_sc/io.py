"""Reading and writing results: atomic h5ad output, provenance kept across the round trip.

Output safety: :func:`check_output_path` checks a destination before any computing;
:class:`atomic_path` writes beside it under a recognisable temporary name (host and pid in
it), gives the result the mode the umask gives, and removes the temporary on every failure;
temporaries left by a killed process (SIGKILL cannot be caught) are swept at the next write
into the same directory. :func:`write_h5ad` checks free space first and runs HDF5 in a forked
child, so a full disk (after which h5py may crash the process that wrote) never takes the
caller down nor leaves the temporary behind.
"""

from __future__ import annotations

import errno
import faulthandler
import logging
import os
import pickle
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

from .dispatch.arrays import is_dask
from .dispatch.provenance import UNS_KEY, to_native

__all__ = ["OutputError", "atomic_path", "check_output_path", "read_h5ad", "write_h5ad"]

logger = logging.getLogger("gpu_sc")

# Temporary files are named ``.<target name>.gpu_sc-<host>-<pid>-<random>.tmp<suffix>``.
_TMP_RE = re.compile(r"\.gpu_sc-(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-[A-Za-z0-9_]+\.tmp")
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class OutputError(OSError):
    """An output cannot be written where it was asked for; the message says why and what to do."""


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname() or "host")


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}.gpu_sc-{_host()}-{os.getpid()}-"


def current_umask() -> int:
    """Return the process umask, read without changing it where /proc allows (thread-safe)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def sweep_stale_temporaries(directory: str | Path) -> list[Path]:
    """Remove gpu_sc temporaries in ``directory`` left by dead processes of this host."""
    removed: list[Path] = []
    host = _host()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        m = _TMP_RE.search(entry.name)
        if not (entry.name.startswith(".") and m and m["host"] == host):
            continue
        if _pid_alive(int(m["pid"])) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
        logger.warning(
            "gpu_sc: removed %s, left by a killed gpu_sc process (pid %s)", entry.path, m["pid"]
        )
    return removed


def check_output_path(path: str | Path, *, directory: bool = False) -> Path:
    """Check, before any computing, that ``path`` can be written.

    Its parent exists and is writable (tried with a probe file, so read-only mounts and root
    count right) and it is not a directory (for ``directory=True``: not an existing file).

    Raises
    ------
    OutputError
        When ``path`` cannot be written, naming why.
    """
    path = Path(path)
    parent = path.parent
    what = "output directory" if directory else "output"
    if not parent.is_dir():
        if parent.exists():
            raise OutputError(
                f"cannot write {path}: {parent} is not a directory; choose another output path"
            )
        raise OutputError(
            f"cannot write {path}: directory {parent} does not exist; "
            f"create it (mkdir -p {parent}) or choose another output path"
        )
    if not directory and path.is_dir():
        raise OutputError(
            f"cannot write {path}: it is a directory; give a file name, e.g. {path / 'result.h5ad'}"
        )
    if directory and path.exists() and not path.is_dir():
        raise OutputError(
            f"cannot write the {what} {path}: a file of that name exists; "
            "remove it or choose another directory"
        )
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=_tmp_prefix(path), suffix=".tmp-probe")
    except OSError as exc:
        raise OutputError(
            f"cannot write {path}: directory {parent} is not writable "
            f"({exc.strerror}); choose a writable output path"
        ) from None
    os.close(fd)
    os.unlink(probe)
    return path


def check_free_space(directory: Path, needed: int, path: Path) -> None:
    """Raise :class:`OutputError` when ``directory`` has fewer than ``needed`` bytes free."""
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return
    if free < needed:
        raise OutputError(
            f"not enough space to write {path}: about {_mb(needed)} needed, {_mb(free)} free "
            f"in {directory}; free some space or write elsewhere"
        )


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


class atomic_path:
    """Context manager yielding a temporary path beside ``path``.

    The temporary is renamed onto ``path`` only when the block succeeds, so a failure never
    leaves a half-written file.

    The temporary is named ``.<name>.gpu_sc-<host>-<pid>-<random>.tmp<suffix>``; stale ones of
    dead processes in the directory are removed on entry. The result gets mode ``0o666`` less
    the umask (``mkstemp`` makes 0600). ``needed_bytes``: refuse up front, with
    :class:`OutputError`, when the file system has less free space. A failed write for lack of
    space (ENOSPC, EDQUOT, EFBIG) becomes an :class:`OutputError`; the temporary is removed on
    every failure, ``KeyboardInterrupt`` (and gpu-sc's SIGTERM) included.
    """

    def __init__(
        self, path: str | Path, suffix: str | None = None, *, needed_bytes: int | None = None
    ):
        self.path = Path(path)
        self.suffix = suffix if suffix is not None else self.path.suffix
        self.needed_bytes = needed_bytes

    def __enter__(self) -> Path:
        """Create the temporary's directory and return the temporary path."""
        parent = self.path.parent
        parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_dir():
            raise OutputError(f"cannot write {self.path}: it is a directory; give a file name")
        sweep_stale_temporaries(parent)
        if self.needed_bytes is not None:
            check_free_space(parent, self.needed_bytes, self.path)
        fd, tmp = tempfile.mkstemp(
            dir=parent, prefix=_tmp_prefix(self.path), suffix=f".tmp{self.suffix}"
        )
        os.close(fd)
        self.tmp = Path(tmp)
        return self.tmp

    def _discard(self) -> None:
        try:
            self.tmp.unlink(missing_ok=True)
        except IsADirectoryError:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __exit__(self, exc_type, exc, tb):
        """Rename the temporary onto the target on success, else remove it."""
        if exc_type is not None:
            self._discard()
            code = _no_space_errno(exc)
            if code is not None:
                raise OutputError(
                    f"cannot write {self.path}: {os.strerror(code)}; "
                    "nothing was written: free some space (or raise the quota or file-size "
                    "limit) or write elsewhere"
                ) from None
            return False
        try:
            os.chmod(self.tmp, 0o666 & ~current_umask())
            os.replace(self.tmp, self.path)
        except BaseException as err:
            self._discard()
            if isinstance(err, OSError) and self.path.is_dir():
                raise OutputError(
                    f"cannot write {self.path}: it is a directory; give a file name"
                ) from None
            raise
        return False


def _no_space_errno(exc: BaseException) -> int | None:
    """ENOSPC, EDQUOT or EFBIG when ``exc`` reports one (HDF5 may only say it in the text)."""
    if isinstance(exc, OutputError) or not isinstance(exc, Exception):
        return None
    number = getattr(exc, "errno", None)
    if number in _NO_SPACE:
        return number
    text = str(exc)
    for code in _NO_SPACE:
        if f"errno = {code}," in text or os.strerror(code) in text:
            return code
    return None


def _die_with_parent() -> None:
    """Linux: let the kernel kill this (forked) process when its parent dies."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _test_delay() -> None:
    # Test hook: sleep this many seconds with the temporary in place (fault-injection tests).
    delay = os.environ.get("GPU_SC_TEST_WRITE_DELAY")
    if delay:
        time.sleep(float(delay))


def run_isolated(func, *args) -> None:
    """Run ``func(*args)`` (a file writer) in a forked child and re-raise its exception here.

    HDF5 may crash the process after a failed write (h5py segfaults when its objects are
    freed after ENOSPC); in a child that crash cannot take the caller down. An interrupt
    here kills the child first. Off Linux, when ``fork`` fails, or with
    ``GPU_SC_WRITE_IN_PROCESS=1`` it runs in this process.
    """
    if not sys.platform.startswith("linux") or os.environ.get("GPU_SC_WRITE_IN_PROCESS"):
        _test_delay()
        func(*args)
        return
    r, w = os.pipe()
    # No signal handler may run inside fork's own hooks (an exception raised there is printed
    # and lost): hold SIGINT/SIGTERM/SIGHUP back until the fork is done, in both processes.
    held = {signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", signal.SIGTERM)}
    # A signal that arrived just before the mask still has its Python handler pending, and
    # that handler would run inside fork's Python hooks (logging's lock release), where its
    # KeyboardInterrupt is printed and lost: park such signals in a list until the fork is done.
    deferred: list[int] = []
    swapped = _defer_signals(held, deferred)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        pid = os.fork()
    except OSError as exc:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        _restore_signals(swapped, deferred)
        os.close(r)
        os.close(w)
        logger.warning("gpu_sc: cannot fork a writer process (%s); writing in this one", exc)
        _test_delay()
        func(*args)
        return
    if pid == 0:  # the child: write, report an exception through the pipe, never return
        _write_in_child(func, args, (r, w), swapped, mask)
    os.close(w)
    payload, status = _wait_for_writer(pid, r, swapped, deferred, mask)
    if payload:
        raise pickle.loads(payload)
    if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
        how = (
            f"signal {signal.Signals(os.WTERMSIG(status)).name}"
            if os.WIFSIGNALED(status)
            else f"exit status {os.WEXITSTATUS(status)}"
        )
        raise OSError(f"the writer process died ({how}); nothing was written")


def _write_in_child(func, args, pipe, swapped, mask):
    """Run ``func(*args)`` in the forked child and send an exception through ``pipe``.

    Never returns (``os._exit``).
    """
    r, w = pipe
    code = 0
    stderr = None
    try:
        _restore_signals(swapped, [])  # the parent handles what arrived meanwhile
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(r)
        _die_with_parent()
        # After a failed write h5py prints tracebacks of its failing frees; the failure
        # itself reaches the parent through the pipe. The child's stderr is therefore
        # held back, and passed on only when the write succeeds (warnings).
        sys.unraisablehook = lambda _unraisable: None
        faulthandler.disable()  # a crash here is the parent's to report
        stderr = (tempfile.TemporaryFile(), os.dup(2))
        sys.stderr.flush()
        os.dup2(stderr[0].fileno(), 2)
        _test_delay()
        func(*args)
        sys.stderr.flush()
        stderr[0].seek(0)
        os.write(stderr[1], stderr[0].read())
    except BaseException as exc:
        code = 1
        try:
            payload = pickle.dumps(exc)
        except Exception:
            payload = pickle.dumps(OSError(f"{type(exc).__name__}: {exc}"))
        try:
            with os.fdopen(w, "wb") as fh:
                fh.write(payload)
        except BaseException:
            pass
    finally:
        os._exit(code)


def _wait_for_writer(pid, r, swapped, deferred, mask):
    """Return the child's pickled exception (empty if none) and its wait status.

    An interrupt while waiting kills the child first.
    """
    try:
        _restore_signals(swapped, deferred)  # a parked signal is raised here ...
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # ... and a held one here
        with os.fdopen(r, "rb") as fh:
            payload = fh.read()
        _, status = os.waitpid(pid, 0)
    except BaseException:  # interrupted (SIGINT/SIGTERM): stop the writer, then propagate
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except OSError:
            pass
        raise
    return payload, status


def _defer_signals(signals, deferred: list[int]) -> dict:
    """Replace the Python handlers of ``signals`` by one that only records the signal."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}  # handlers can be set only from the main thread
    swapped = {}
    for sig in signals:
        handler = signal.getsignal(sig)
        if callable(handler):  # Python-level handlers, signal.default_int_handler included
            swapped[sig] = signal.signal(sig, lambda signum, _frame: deferred.append(signum))
    return swapped


def _restore_signals(swapped: dict, deferred: list[int]) -> None:
    """Put the handlers back, then deliver the first parked signal to them."""
    for sig, handler in swapped.items():
        signal.signal(sig, handler)
    if deferred:
        signal.raise_signal(deferred[0])


def estimate_h5ad_bytes(adata) -> int:
    """Estimate (from above) the size of ``adata`` written as uncompressed h5ad.

    Dask matrices are not counted (their stored size is unknown before they are computed);
    a full disk while they are written is still cleaned up by :func:`write_h5ad`.
    """
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    seen = 0

    def size(x) -> int:
        if x is None or is_dask(x):  # a lazy matrix's size is unknown until it is computed
            return 0
        if sp.issparse(x):
            return sum(
                a.nbytes
                for a in (
                    x.data,
                    getattr(x, "indices", x.data[:0]),
                    getattr(x, "indptr", x.data[:0]),
                )
            )
        if isinstance(x, pd.DataFrame):
            return int(x.memory_usage(deep=True).sum())
        if isinstance(x, pd.Series | pd.Index):
            return int(x.memory_usage(deep=True))
        if isinstance(x, dict):
            return sum(size(v) + len(str(k)) for k, v in x.items())
        if isinstance(x, list | tuple):
            return sum(size(v) for v in x)
        if isinstance(x, str | bytes):
            return len(x)
        nbytes = getattr(x, "nbytes", None)
        if nbytes is not None:
            return int(nbytes)
        return int(np.asarray(x).nbytes) if hasattr(x, "__array__") else 64

    seen += size(adata.X) + size(adata.obs) + size(adata.var) + size(dict(adata.uns))
    for mapping in (adata.layers, adata.obsm, adata.varm, adata.obsp, adata.varp):
        seen += sum(size(mapping[k]) for k in mapping.keys())
    if adata.raw is not None:
        seen += size(adata.raw.X) + size(adata.raw.var)
    return seen + 2**20  # HDF5 metadata


def write_h5ad(adata, path: str | Path) -> Path:
    """Write ``adata`` atomically: to a temporary file beside ``path``, renamed on success.

    ``uns['gpu_sc']`` is stored natively (see :mod:`gpu_sc.dispatch.provenance`), so
    ``anndata.read_h5ad`` reads the file back without gpu_sc. A block of an older form (lists
    of dicts) is first converted to that form in ``adata`` itself.
    """
    path = Path(path)
    if UNS_KEY in adata.uns:
        adata.uns[UNS_KEY] = to_native(adata.uns[UNS_KEY])
    with atomic_path(path, needed_bytes=estimate_h5ad_bytes(adata)) as tmp:
        if _has_dask(adata):
            # Dask matrices are computed block by block while they are written, on the current
            # scheduler; a distributed client's connections do not survive a fork, so this
            # write runs here (an error or interrupt still removes the temporary file).
            adata.write_h5ad(tmp)
        else:
            run_isolated(adata.write_h5ad, tmp)
    return path


def _has_dask(adata) -> bool:
    mats = [adata.X, *(m[k] for m in (adata.layers, adata.obsm, adata.obsp) for k in m.keys())]
    if adata.raw is not None:
        mats.append(adata.raw.X)
    return any(is_dask(m) for m in mats)


def read_h5ad(path: str | Path):
    """Read an h5ad (any, including one written by :func:`write_h5ad`).

    Files from earlier gpu_sc versions, which stored ``uns['gpu_sc']`` as JSON text, are
    converted to the current form; read ``provenance`` with
    :func:`gpu_sc.dispatch.provenance.provenance`.
    """
    import anndata as ad

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    adata = ad.read_h5ad(path)
    if UNS_KEY in adata.uns:
        adata.uns[UNS_KEY] = to_native(adata.uns[UNS_KEY])
    return adata
