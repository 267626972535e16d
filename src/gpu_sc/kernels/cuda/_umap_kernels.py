"""numba-cuda source of the fused UMAP epoch (imported lazily: importing it imports numba.cuda).

One thread per vertex ``v``, one launch per epoch. The thread reads the positions of the
epoch's start (``y_in``) and writes ``v``'s new position to ``y_out``: the host swaps the two
buffers between epochs. The edge schedule ``next_sample`` is double-buffered the same way
(``ns_in`` / ``ns_out``): an edge's tail thread must see the same "active this epoch" test as
its head thread, which updates it. ``next_neg`` is read and written by the head thread only.

For ``v`` the thread sums, in the order of :func:`gpu_sc.kernels.umap.optimize_layout` (the
order of its incidence product: edge ids ascending, merging the edges whose tail is ``v``
with those whose head is ``v``), the clipped attraction of each active edge (``+`` at the
head, ``-`` at the tail: both endpoints compute the same value from the same inputs), then
separately the repulsions of the negative samples of the active edges ``v`` heads (the
vertices from :func:`gpu_sc.kernels.umap.negative_samples`, recomputed here), and writes
``y_in[v] + alpha * (attraction + repulsion)``. No thread writes what another reads within
the launch, and no floating-point atomic is used: the result does not depend on scheduling.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda, float32, float64, int64, uint64

from ..umap import HASH_GOLDEN, HASH_M1, HASH_M2

MAX_DIM = 8
_M32 = np.uint64(0xFFFFFFFF)
_M1 = np.uint64(HASH_M1)
_M2 = np.uint64(HASH_M2)
_GOLDEN = np.uint64(HASH_GOLDEN)
_S15 = np.uint64(15)
_S16 = np.uint64(16)


@cuda.jit(device=True, inline=True)
def mix32(x):
    x = x ^ (x >> _S16)
    x = (x * _M1) & _M32
    x = x ^ (x >> _S15)
    x = (x * _M2) & _M32
    return x ^ (x >> _S16)


@cuda.jit(device=True, inline=True)
def attract(y, u, w, dim, a, b, sign, acc):
    """``acc += sign * clip(attraction of edge (u, w))`` (float32, as the reference)."""
    d2 = float32(0.0)
    for d in range(dim):
        t = float32(y[u, d] - y[w, d])
        d2 = float32(d2 + float32(t * t))
    if d2 > float32(0.0):
        bm1 = float32(b - float32(1.0))
        num = float32(float32(float32(float32(-2.0) * a) * b) * float32(math.pow(d2, bm1)))
        coeff = float32(num / float32(float32(a * float32(math.pow(d2, b))) + float32(1.0)))
        for d in range(dim):
            g = float32(coeff * float32(y[u, d] - y[w, d]))
            g = min(max(g, float32(-4.0)), float32(4.0))
            acc[d] = float32(acc[d] + sign * g)


@cuda.jit(device=True, inline=True)
def repel(y, u, k, dim, a, b, two_gamma_b, acc):
    d2 = float32(0.0)
    for d in range(dim):
        t = float32(y[u, d] - y[k, d])
        d2 = float32(d2 + float32(t * t))
    if d2 > float32(0.0):
        q = float32(float32(a * float32(math.pow(d2, b))) + float32(1.0))
        den = float32(float32(float32(0.001) + d2) * q)
        coeff = float32(two_gamma_b / den)
        for d in range(dim):
            g = float32(coeff * float32(y[u, d] - y[k, d]))
            g = min(max(g, float32(-4.0)), float32(4.0))
            acc[d] = float32(acc[d] + g)


def _umap_epoch(
    y_in,
    y_out,
    out_ptr,
    out_tail,
    in_ptr,
    in_edge,
    in_head,
    eps,
    eps_neg,
    ns_in,
    ns_out,
    next_neg,
    epoch,
    alpha,
    a,
    b,
    two_gamma_b,
    seed_hash,
):
    v = cuda.grid(1)
    n = y_in.shape[0]
    if v >= n:
        return
    dim = y_in.shape[1]
    attr = cuda.local.array(MAX_DIM, float32)
    rep = cuda.local.array(MAX_DIM, float32)
    for d in range(dim):
        attr[d] = float32(0.0)
        rep[d] = float32(0.0)
    ep = float64(epoch)
    h_epoch = mix32(seed_hash ^ (uint64(epoch) & _M32))
    n64 = uint64(n)
    e0 = out_ptr[v]
    e1 = out_ptr[v + 1]
    i = in_ptr[v]
    i1 = in_ptr[v + 1]
    # Edges whose tail is v and whose id is below v's own: they come first in the reference.
    while i < i1 and in_edge[i] < e0:
        e = in_edge[i]
        if eps[e] > 0.0 and ns_in[e] <= ep:
            attract(y_in, in_head[i], v, dim, a, b, float32(-1.0), attr)
        i += 1
    for e in range(e0, e1):
        if eps[e] > 0.0 and ns_in[e] <= ep:
            attract(y_in, v, out_tail[e], dim, a, b, float32(1.0), attr)
            n_neg = math.floor((ep - next_neg[e]) / eps_neg[e])
            if n_neg < 0.0:
                n_neg = 0.0
            next_neg[e] = next_neg[e] + n_neg * eps_neg[e]
            ns_out[e] = ns_in[e] + eps[e]
            h_edge = mix32(h_epoch ^ (uint64(e) & _M32))
            for s in range(int64(n_neg)):
                k = int64(mix32(h_edge ^ uint64(s)) % n64)
                repel(y_in, v, k, dim, a, b, two_gamma_b, rep)
        else:
            ns_out[e] = ns_in[e]
    while i < i1:
        e = in_edge[i]
        if eps[e] > 0.0 and ns_in[e] <= ep:
            attract(y_in, in_head[i], v, dim, a, b, float32(-1.0), attr)
        i += 1
    for d in range(dim):
        y_out[v, d] = float32(y_in[v, d] + float32(alpha * float32(attr[d] + rep[d])))


umap_epoch = cuda.jit(_umap_epoch)


#: The kernel's signature for ``compile_ptx`` (C-contiguous arrays, float32 positions); the
#: copy in :data:`gpu_sc.kernels.cuda.umap.SPEC` is what the ``ptx`` tests compile.
SIGNATURE = (
    "void(float32[:, ::1], float32[:, ::1], int64[::1], int64[::1], int64[::1], int64[::1], "
    "int64[::1], float64[::1], float64[::1], float64[::1], float64[::1], float64[::1], int64, "
    "float32, float32, float32, float32, uint64)"
)
