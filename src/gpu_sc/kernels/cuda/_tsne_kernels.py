"""numba-cuda source of the fused t-SNE gradient (imported lazily: it imports numba.cuda).

Three kernels, one thread per point (or per grid box), 2-D embeddings:

* ``exact_forces``: the attraction over the row of ``P`` (float64 sums in ``P``'s column
  order, as the reference's CSR product) and the exact repulsion against every other point,
  the points read in tiles through shared memory (each tile read once per block); the
  kernel value ``w = 1 / (1 + d^2)`` of each pair is made once and feeds both ``Z`` and the
  force. Each block reduces its rows' ``sum_j w_ij`` in a fixed tree to one partial.
* ``grid_spread`` / ``grid_forces``: the FFT path's two point-grid passes. ``grid_spread``
  (one thread per box) sums the Lagrange weights of the box's points, taken in index order,
  into its ``3 x 3`` grid nodes (the reference's transposed CSR product, no atomics);
  ``grid_forces`` fuses the attraction with the interpolation of the convolved potentials.
* ``update``: ``Z`` from the partials (each block sums them in the same fixed order), the
  gradient ``4 (attr - rep / Z)``, and scikit-learn's gains and momentum step, in place.

No floating-point atomic anywhere: the same input gives the same bits on the same device.
"""

from __future__ import annotations

import math

from numba import cuda, float32, float64, int64

TPB = 128  # threads per block of every kernel here (the shared tiles and trees use it)
N_INTERP = 3  # Lagrange nodes per box and dimension (the reference's default)
N_NODES = N_INTERP * N_INTERP  # grid nodes per box


@cuda.jit(device=True, inline=True)
def attraction(y, i, p_ptr, p_idx, p_val):
    """``sum_j p_ij w_ij (y_i - y_j)`` in float64, summed in ``P``'s stored order."""
    yi0 = y[i, 0]
    yi1 = y[i, 1]
    s = 0.0
    s0 = 0.0
    s1 = 0.0
    for q in range(p_ptr[i], p_ptr[i + 1]):
        j = p_idx[q]
        d0 = float32(yi0 - y[j, 0])
        d1 = float32(yi1 - y[j, 1])
        d2 = float32(float32(d0 * d0) + float32(d1 * d1))
        w = float32(float32(1.0) / float32(float32(1.0) + d2))
        pw = p_val[q] * float64(w)
        s0 += pw * float64(y[j, 0])
        s1 += pw * float64(y[j, 1])
        s += pw
    return float64(yi0) * s - s0, float64(yi1) * s - s1


@cuda.jit(device=True, inline=True)
def block_sum(zs, value, tid):
    """Sum ``value`` over the block in a fixed tree (every thread must call it)."""
    zs[tid] = value
    cuda.syncthreads()
    step = TPB // 2
    while step > 0:
        if tid < step:
            zs[tid] += zs[tid + step]
        cuda.syncthreads()
        step //= 2
    return zs[0]


def exact_forces(y, p_ptr, p_idx, p_val, attr, rep, zpart):
    i = cuda.grid(1)
    tid = cuda.threadIdx.x
    n = y.shape[0]
    tile = cuda.shared.array((TPB, 2), float32)
    zs = cuda.shared.array(TPB, float64)
    yi0 = float32(0.0)
    yi1 = float32(0.0)
    if i < n:
        yi0 = y[i, 0]
        yi1 = y[i, 1]
    z = 0.0
    r0 = 0.0
    r1 = 0.0
    for j0 in range(0, n, TPB):
        j = j0 + tid
        if j < n:
            tile[tid, 0] = y[j, 0]
            tile[tid, 1] = y[j, 1]
        cuda.syncthreads()
        if i < n:
            lim = min(TPB, n - j0)
            for t in range(lim):
                if j0 + t != i:
                    d0 = float32(yi0 - tile[t, 0])
                    d1 = float32(yi1 - tile[t, 1])
                    d2 = float32(float32(d0 * d0) + float32(d1 * d1))
                    w = float32(float32(1.0) / float32(float32(1.0) + d2))
                    z += float64(w)
                    w2 = float64(float32(w * w))
                    r0 += w2 * float64(d0)
                    r1 += w2 * float64(d1)
        cuda.syncthreads()
    if i < n:
        a0, a1 = attraction(y, i, p_ptr, p_idx, p_val)
        attr[i, 0] = a0
        attr[i, 1] = a1
        rep[i, 0] = float32(r0)
        rep[i, 1] = float32(r1)
    total = block_sum(zs, z, tid)
    if tid == 0:
        zpart[cuda.blockIdx.x] = total


@cuda.jit(device=True, inline=True)
def lagrange(t, k):
    """The ``k``-th Lagrange basis value at ``t`` for nodes ``(m + 0.5) / N_INTERP``."""
    nk = (k + 0.5) / N_INTERP
    v = 1.0
    for m in range(N_INTERP):
        if m != k:
            nm = (m + 0.5) / N_INTERP
            v = v * (t - nm) / (nk - nm)
    return v


@cuda.jit(device=True, inline=True)
def box_of(y, i, c, lo, h, n_boxes):
    rel = (float64(y[i, c]) - lo) / h
    box = int64(math.floor(rel))
    if box > n_boxes - 1:
        box = n_boxes - 1
    return box, rel - box


def grid_spread(y, order, box_ptr, lo0, lo1, h, n_boxes, padded):
    b = cuda.grid(1)
    if b >= n_boxes * n_boxes:
        return
    acc = cuda.local.array(N_NODES, float64)
    for q in range(N_NODES):
        acc[q] = 0.0
    bx = b // n_boxes
    by = b - bx * n_boxes
    for q in range(box_ptr[b], box_ptr[b + 1]):
        i = order[q]
        _, t0 = box_of(y, i, 0, lo0, h, n_boxes)
        _, t1 = box_of(y, i, 1, lo1, h, n_boxes)
        for kx in range(N_INTERP):
            wx = lagrange(t0, kx)
            for ky in range(N_INTERP):
                acc[kx * N_INTERP + ky] += wx * lagrange(t1, ky)
    for kx in range(N_INTERP):
        for ky in range(N_INTERP):
            padded[bx * N_INTERP + kx, by * N_INTERP + ky] = acc[kx * N_INTERP + ky]


def grid_forces(y, p_ptr, p_idx, p_val, pot, lo0, lo1, h, n_boxes, attr, rep, zpart):
    i = cuda.grid(1)
    tid = cuda.threadIdx.x
    n = y.shape[0]
    zs = cuda.shared.array(TPB, float64)
    at0 = 0.0
    if i < n:
        a0, a1 = attraction(y, i, p_ptr, p_idx, p_val)
        attr[i, 0] = a0
        attr[i, 1] = a1
        m = n_boxes * N_INTERP
        b0, t0 = box_of(y, i, 0, lo0, h, n_boxes)
        b1, t1 = box_of(y, i, 1, lo1, h, n_boxes)
        at1 = 0.0
        at2 = 0.0
        for kx in range(N_INTERP):
            wx = lagrange(t0, kx)
            for ky in range(N_INTERP):
                w = wx * lagrange(t1, ky)
                node = (b0 * N_INTERP + kx) * m + (b1 * N_INTERP + ky)
                at0 += w * pot[node, 0]
                at1 += w * pot[node, 1]
                at2 += w * pot[node, 2]
        rep[i, 0] = float32(at1)
        rep[i, 1] = float32(at2)
    total = block_sum(zs, at0, tid)
    if tid == 0:
        zpart[cuda.blockIdx.x] = total


def update(attr, rep, zpart, z_offset, y, upd, gains, grad, z_out, momentum, learning_rate):
    i = cuda.grid(1)
    tid = cuda.threadIdx.x
    n = y.shape[0]
    zs = cuda.shared.array(TPB, float64)
    acc = 0.0
    for q in range(tid, zpart.shape[0], TPB):
        acc += zpart[q]
    z = block_sum(zs, acc, tid) + z_offset
    if i == 0:
        z_out[0] = z
    if i < n:
        z32 = float32(z)
        for c in range(2):
            g = float32(4.0 * (attr[i, c] - float64(float32(rep[i, c] / z32))))
            u = upd[i, c]
            gn = gains[i, c]
            if float32(u * g) < float32(0.0):
                gn = float32(gn + float32(0.2))
            else:
                gn = float32(gn * float32(0.8))
            gn = max(gn, float32(0.01))
            g = float32(g * gn)
            u = float32(float32(momentum * u) - float32(learning_rate * g))
            y[i, c] = float32(y[i, c] + u)
            upd[i, c] = u
            gains[i, c] = gn
            grad[i, c] = g


tsne_exact_forces = cuda.jit(exact_forces)
tsne_grid_spread = cuda.jit(grid_spread)
tsne_grid_forces = cuda.jit(grid_forces)
tsne_update = cuda.jit(update)
