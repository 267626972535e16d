"""Where `gpu` work runs in tests: real CUDA when usable, else the CuPy double.

The autouse fixture in conftest.py installs the double around each `gpu` *test*; fixtures of
wider scope (module, session) run outside it, so those that compute on ``cupy`` wrap their work
in :func:`cupy_for`.
"""

from __future__ import annotations

import contextlib


def cupy_for(backends) -> contextlib.AbstractContextManager:
    """The CuPy double installed while the block runs when ``backends`` include ``"cupy"``
    and no real CUDA is usable (and it is not installed already); else a no-op."""
    from gpu_sc.dispatch import cuda_status
    from gpu_sc.testing.cupy_double import install, installed

    if "cupy" not in tuple(backends) or installed() or cuda_status().available:
        return contextlib.nullcontext()
    return install()
