"""CUDA source of ``knn_tile_topk`` (imports numba.cuda: load through the registry only).

One block of :data:`BLOCK` threads per row of the GEMM tile. The row's running top ``k``
(sorted by distance, then index) sits in shared memory; the threads read the row's tile
entries coalesced, turn each into a distance exactly as the reference does (same operations,
same order, float32 rounding after each operation for a float32 tile), and append the entries
that beat the row's current ``k``-th (distance, index) to a shared candidate buffer; one thread
then inserts them into the sorted list. The result does not depend on the order candidates are
appended in (the key (distance, index) is a total order), so it is deterministic.
"""

from __future__ import annotations

import math

import numba
from numba import cuda

#: threads per block (one block per tile row)
BLOCK = 128
#: largest k the kernel keeps in shared memory
KMAX = 256


@cuda.jit
def knn_tile_topk(g, sq_a, sq_b, col_ids, self_col, best_d, best_i, metric, single, round32):
    row = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    k = best_d.shape[1]
    sd = cuda.shared.array(KMAX, numba.float64)
    si = cuda.shared.array(KMAX, numba.int64)
    cd = cuda.shared.array(BLOCK, numba.float64)
    ci = cuda.shared.array(BLOCK, numba.int64)
    cnt = cuda.shared.array(1, numba.int32)
    if row >= g.shape[0]:
        return
    t = tid
    while t < k:
        sd[t] = best_d[row, t]
        si[t] = best_i[row, t]
        t += BLOCK
    sa = sq_a[row]
    own = self_col[row]
    ncols = g.shape[1]
    cuda.syncthreads()
    for base in range(0, ncols, BLOCK):
        if tid == 0:
            cnt[0] = 0
        cuda.syncthreads()
        j = base + tid
        if j < ncols:
            x = g[row, j]
            if metric == 0:  # (|a|^2 - 2 a.b) + |b|^2, clipped at 0
                v = -2.0 * x
                if single:
                    v = numba.float64(numba.float32(v))
                v = v + sa
                if single:
                    v = numba.float64(numba.float32(v))
                v = v + sq_b[j]
                if single:
                    v = numba.float64(numba.float32(v))
                if v < 0.0:
                    v = 0.0
            else:  # cosine: 1 - a.b on normalised rows, clipped to [0, 2]
                v = 1.0 - x
                if single:
                    v = numba.float64(numba.float32(v))
                if v < 0.0:
                    v = 0.0
                if v > 2.0:
                    v = 2.0
            if round32:
                v = numba.float64(numba.float32(v))
            if j == own:
                v = -math.inf
            idx = col_ids[j]
            td = sd[k - 1]
            if v < td or (v == td and idx < si[k - 1]):
                p = cuda.atomic.add(cnt, 0, 1)
                cd[p] = v
                ci[p] = idx
        cuda.syncthreads()
        if tid == 0:
            for q in range(cnt[0]):
                v = cd[q]
                idx = ci[q]
                if v < sd[k - 1] or (v == sd[k - 1] and idx < si[k - 1]):
                    p = k - 1
                    while p > 0 and (sd[p - 1] > v or (sd[p - 1] == v and si[p - 1] > idx)):
                        sd[p] = sd[p - 1]
                        si[p] = si[p - 1]
                        p -= 1
                    sd[p] = v
                    si[p] = idx
        cuda.syncthreads()
    t = tid
    while t < k:
        best_d[row, t] = sd[t]
        best_i[row, t] = si[t]
        t += BLOCK
