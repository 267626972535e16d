"""gpu_sc._scanpy_compat: what differs between the scanpy releases pyproject.toml admits.

Runs with every scanpy (1.11.5 in CI, 1.12.x in scripts/test_newest.sh); what depends on the
installed release is asserted against :data:`SCANPY_VERSION`.
"""

from __future__ import annotations

import functools
import inspect

import numpy as np
import scanpy as sc

from gpu_sc._scanpy_compat import (
    SCANPY_VERSION,
    engine_gap,
    engine_params,
    host_function,
    qc_var_mean,
)


def test_installed_version_is_in_the_tested_range():
    assert (1, 11) <= SCANPY_VERSION < (1, 13)


def test_newer_default_spellings_reach_the_engine_as_it_knows_them():
    assert engine_params("neighbors", {"metric": None, "distances": None})["metric"] == "euclidean"
    assert engine_params("neighbors", {"metric": "cosine"})["metric"] == "cosine"
    given = np.zeros((2, 2))  # precomputed distances: scanpy keeps metric=None, so do we
    assert engine_params("neighbors", {"metric": None, "distances": given})["metric"] is None
    assert engine_params("leiden", {"flavor": None})["flavor"] == "leidenalg"
    assert engine_params("leiden", {"flavor": "igraph"})["flavor"] == "igraph"
    params = {"target_sum": 1e4}
    assert engine_params("normalize_total", params) == params
    assert engine_params("normalize_total", params) is not params  # a copy: never mutated


def test_qc_var_mean_has_the_installed_scanpys_dtype():
    sums = np.array([3.0, 1.0, 2.0])
    mean = qc_var_mean(sums, np.float32, 3)
    assert mean.dtype == (np.float32 if SCANPY_VERSION >= (1, 12) else np.float64)
    np.testing.assert_allclose(mean, [1.0, 1 / 3, 2 / 3], rtol=1e-7)
    assert qc_var_mean(sums, np.int64, 3).dtype == np.float64


def test_batched_seurat_v3_is_a_gap_from_scanpy_1_12_only():
    batched = {"flavor": "seurat_v3", "batch_key": "batch"}
    assert (engine_gap("highly_variable_genes", batched) is not None) == (SCANPY_VERSION >= (1, 12))
    assert engine_gap("highly_variable_genes", {**batched, "batch_key": None}) is None
    assert engine_gap("highly_variable_genes", {**batched, "flavor": "seurat"}) is None
    assert engine_gap("pca", {}) is None


def test_host_function_reads_below_a_backend_dispatcher():
    """A dispatched scanpy function (scverse-backends' wrapper: scanpy's signature plus
    ``backend``) is read and called through the function it wraps."""
    func = sc.pp.normalize_total

    @functools.wraps(func)
    def dispatched(*args, backend=None, **kwargs):
        raise AssertionError("gpu_sc must not call back into the dispatcher")

    sig = inspect.signature(func)
    backend = inspect.Parameter("backend", inspect.Parameter.KEYWORD_ONLY, default=None)
    dispatched.__signature__ = sig.replace(parameters=[*sig.parameters.values(), backend])

    assert host_function(dispatched) is func
    assert host_function(func) is func

    @functools.wraps(func)
    def plain(*args, **kwargs):  # a wrapper without backend= is scanpy's own
        return func(*args, **kwargs)

    assert host_function(plain) is plain
