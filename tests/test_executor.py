"""The row-block executors (gpu_sc.engine.executor): in memory and on Dask, one interface."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from gpu_sc.dispatch.arrays import array_module
from gpu_sc.dispatch.registry import EngineContext
from gpu_sc.engine._matrix import executor
from gpu_sc.engine.executor import InMemoryRows

da = pytest.importorskip("dask.array")

from gpu_sc.engine.dask_rows import DaskRows  # noqa: E402


def _col_sums(am, b, codes, scale):
    return am.xp.asarray(b.sum(axis=0)).ravel() * scale, int(b.shape[0])


def _row_sums(am, b, codes):
    return {"sum": am.xp.asarray(b.sum(axis=1)).ravel(), "code": codes}


def _times_rows(am, b, factor):
    return b.multiply(factor[:, None]).tocsr()


@pytest.fixture
def matrix():
    return sp.random(230, 17, density=0.3, format="csr", random_state=0, dtype=np.float64)


def _executors(matrix, chunk_rows=40):
    ctx = EngineContext(am=array_module("numpy"), chunked=True, chunk_rows=chunk_rows)
    lazy = da.from_array(matrix, chunks=(chunk_rows, -1), asarray=False)
    return InMemoryRows(ctx, matrix), executor(ctx, lazy)


def test_in_memory_and_dask_executors_give_the_same_results(matrix):
    codes = np.arange(matrix.shape[0]) % 3
    factor = np.linspace(1, 2, matrix.shape[0])
    mem, lazy = _executors(matrix)
    assert isinstance(lazy, DaskRows) and lazy.lazy and not mem.lazy
    for ex in (mem, lazy):
        assert ex.sparse and ex.shape == matrix.shape
    want = np.asarray(matrix.sum(axis=0)).ravel() * 2.0
    for ex in (mem, lazy):
        total, n = ex.map_reduce(_col_sums, 2.0, rows=(None,))
        np.testing.assert_allclose(total, want)
        assert n == matrix.shape[0]
        rows = ex.map_rows(_row_sums, rows=(codes,))
        np.testing.assert_array_equal(rows["code"], codes)
        np.testing.assert_allclose(rows["sum"], np.asarray(matrix.sum(axis=1)).ravel())
    out_mem = mem.map_matrix(_times_rows, rows=(factor,), dtype=np.float64, sparse=True)
    out_lazy = lazy.map_matrix(_times_rows, rows=(factor,), dtype=np.float64, sparse=True)
    assert isinstance(out_lazy, da.Array)
    np.testing.assert_array_equal(out_mem.toarray(), out_lazy.compute().toarray())


def test_dask_reductions_do_not_depend_on_the_scheduler(matrix):
    import dask

    _, lazy = _executors(matrix, chunk_rows=7)  # 33 blocks: a tree of several levels
    results = []
    for scheduler in ("sync", "threads"):
        with dask.config.set(scheduler=scheduler):
            results.append(lazy.map_reduce(_col_sums, 1.0, rows=(None,))[0])
    np.testing.assert_array_equal(results[0], results[1])
