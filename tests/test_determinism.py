"""Block kernels give the same bits whatever the host BLAS thread count (issue 19, point 5):
OpenBLAS splits a gemm differently with 1 and 2 threads, which moved 7 PCA values by 1e-8
between a Dask worker (1 thread) and the client (2)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from threadpoolctl import ThreadpoolController, threadpool_limits

from gpu_sc.dispatch.arrays import array_module
from gpu_sc.kernels import blas
from gpu_sc.kernels import pca as pca_k
from gpu_sc.kernels import regress as reg_k

AM = array_module("numpy")


def _blas_threads() -> int:
    """The thread count of every loaded BLAS (NumPy's and SciPy's OpenBLAS): one number."""
    (n,) = {i["num_threads"] for i in ThreadpoolController().select(user_api="blas").info()}
    return n


@pytest.fixture(scope="module")
def block():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1500, 600))
    with threadpool_limits(1, user_api="blas"):
        cov = np.cov(x[:, :300].T)
    return x, rng.standard_normal(600), rng.standard_normal((600, 40)), cov


def _kernels(block):
    x, mean, v, cov = block
    r = np.column_stack([np.ones(x.shape[0]), x[:, 0]])
    return [
        *pca_k.gram_block(AM, x),
        pca_k.project_block(AM, x, mean, v),
        pca_k.t_matmul(AM, x, x[:, :40]),
        *pca_k.top_eigh(AM, cov, 10),
        *reg_k.normal_equations(AM, x, r),
    ]


def test_block_kernels_are_bitwise_the_same_on_one_and_on_two_blas_threads(block):
    with threadpool_limits(1, user_api="blas"):
        one = _kernels(block)
    with threadpool_limits(2, user_api="blas"):
        two = _kernels(block)
        x, mean, v, _ = block
        unpinned = (x - mean[None, :]) @ v  # what project_block did before the pin
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a, b)
    # unpinned, 2 threads round a few products differently (by ~1e-13 here): equal to rounding
    np.testing.assert_allclose(unpinned, one[2], rtol=0, atol=1e-10)


def test_one_thread_pins_blas_on_any_thread_and_restores_it(block):
    """Dask runs blocks on pool threads: the pin holds there too (threadpoolctl's process-wide
    limit is ignored off the thread that set it first), and is undone on leaving."""
    x, mean, v, _ = block
    with threadpool_limits(1, user_api="blas"):
        want = (x - mean[None, :]) @ v
    got = {}

    def run(i):
        got[i] = pca_k.project_block(AM, x, mean, v)

    with threadpool_limits(2, user_api="blas"):
        before = _blas_threads()  # 2, unless another thread already controls the limit
        threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        run("main")
        assert _blas_threads() == before  # restored for the caller
    assert sorted(got, key=str) == [0, 1, 2, "main"]
    for out in got.values():
        np.testing.assert_array_equal(out, want)


def test_a_block_leaving_first_does_not_unpin_a_block_still_running(block):
    """OpenBLAS's setting is process-wide in the wheels' pthreads builds: the last block to
    leave restores it, not the first."""
    x, mean, v, _ = block
    with threadpool_limits(1, user_api="blas"):
        want = (x - mean[None, :]) @ v
    inside, go, got = threading.Event(), threading.Event(), {}

    def slow_block():
        with blas.one_thread(AM):
            inside.set()
            go.wait(10)
            got["late"] = (x - mean[None, :]) @ v  # after the other block left

    with threadpool_limits(2, user_api="blas"):
        before = _blas_threads()
        t = threading.Thread(target=slow_block)
        t.start()
        inside.wait(10)
        with blas.one_thread(AM):
            got["early"] = (x - mean[None, :]) @ v
        go.set()
        t.join(10)
        assert _blas_threads() == before
    for out in got.values():
        np.testing.assert_array_equal(out, want)
