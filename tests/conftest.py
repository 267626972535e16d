"""Shared fixtures: the real PBMC3k matrix from ../shared, small synthetic atlases."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

REPO = Path(__file__).resolve().parents[1]
PBMC3K_DIR = Path(os.environ.get("GPU_SC_PBMC3K", REPO.parent / "shared" / "data" / "pbmc3k"))


def pytest_collection_modifyitems(config, items):
    # Tests marked `gpu` need CUDA; without it they are reported as skipped with the reason.
    from gpu_sc.dispatch import cuda_status

    status = cuda_status()
    if status.available:
        return
    skip = pytest.mark.skip(reason=f"no usable CUDA: {status.reason}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def pbmc3k_raw():
    """The raw 10x PBMC3k counts (2700 x 32738), read once per session; copy before mutating."""
    if not PBMC3K_DIR.exists():
        pytest.fail(f"PBMC3k data not found at {PBMC3K_DIR}; set GPU_SC_PBMC3K")
    import gpu_sc

    return gpu_sc.datasets.pbmc3k(PBMC3K_DIR)


@pytest.fixture
def pbmc3k(pbmc3k_raw):
    return pbmc3k_raw.copy()
