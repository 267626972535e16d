"""CUDA source of ``wilcoxon_rank_sums`` (imports numba.cuda: load through the registry only).

One block of :data:`BLOCK` threads per gene (column) of a CSC block whose stored values are
sorted within each column (the sort stays a library call). Every stored value finds its run
of ties by two binary searches in its sorted column, so its average rank needs no scan; the
implicit zeros are one run between the negative and the positive values. Rank sums per group
and the column's tie sum are accumulated in shared memory: the ranks are half-integers and the
tie terms integers, so the sums are exact in float64 and do not depend on the order the
atomics land in (deterministic, and equal to the reference bit for bit).
"""

from __future__ import annotations

import numba
from numba import cuda

#: threads per block (one block per gene)
BLOCK = 128
#: most groups the shared accumulators hold
GMAX = 256


@cuda.jit
def wilcoxon_rank_sums(values, rows, indptr, n_rows, codes, sizes, rank_sums, tie_sums):
    col = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    n_groups = rank_sums.shape[0]
    acc = cuda.shared.array(GMAX, numba.float64)  # rank sums of stored values per group
    cnt = cuda.shared.array(GMAX, numba.float64)  # stored values per group
    ties = cuda.shared.array(1, numba.float64)
    neg = cuda.shared.array(1, numba.int64)
    if col >= rank_sums.shape[1]:
        return
    t = tid
    while t < n_groups:
        acc[t] = 0.0
        cnt[t] = 0.0
        t += BLOCK
    a = indptr[col]
    b = indptr[col + 1]
    zeros = n_rows - (b - a)
    if tid == 0:
        ties[0] = 0.0
        lo = a  # first stored value >= 0: the negatives' count
        hi = b
        while lo < hi:
            mid = (lo + hi) // 2
            if values[mid] < 0:
                lo = mid + 1
            else:
                hi = mid
        neg[0] = lo - a
    cuda.syncthreads()
    p = a + tid
    while p < b:
        v = values[p]
        lo = a  # first index of v's run
        hi = p
        while lo < hi:
            mid = (lo + hi) // 2
            if values[mid] < v:
                lo = mid + 1
            else:
                hi = mid
        start = lo
        lo = p + 1  # one past the run's end
        hi = b
        while lo < hi:
            mid = (lo + hi) // 2
            if values[mid] <= v:
                lo = mid + 1
            else:
                hi = mid
        length = numba.float64(lo - start)
        pos = numba.float64(start - a)
        if v > 0:
            pos += zeros
        if p == start:
            cuda.atomic.add(ties, 0, length * length * length - length)
        g = codes[rows[p]]
        if g >= 0:
            cuda.atomic.add(acc, g, pos + (length + 1.0) / 2.0)
            cuda.atomic.add(cnt, g, 1.0)
        p += BLOCK
    cuda.syncthreads()
    z = numba.float64(zeros)
    zero_rank = numba.float64(neg[0]) + (z + 1.0) / 2.0
    t = tid
    while t < n_groups:
        rank_sums[t, col] = acc[t] + (sizes[t] - cnt[t]) * zero_rank
        t += BLOCK
    if tid == 0:
        tie_sums[col] = ties[0] + (z * z * z - z)
