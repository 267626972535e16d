"""CUDA source of the Leiden kernels (numba-cuda); the spec, drivers and cost are in
:mod:`gpu_sc.kernels.cuda.leiden`.

``leiden_move_sweeps`` and ``leiden_refine_sweeps`` are persistent kernels on a cooperative
grid: each runs up to ``perms.shape[0]`` whole sweeps of its phase, the vertex batches of a
sweep one after another with grid barriers between the propose, apply and activate steps,
and stops on the device when no node is left to visit. Device functions are inlined by hand
(numba-cuda compiles ``device=True`` functions for the current device, which ``compile_ptx``
without a driver does not have). Totals change by 64-bit integer atomics on fixed-point
copies (scale ``fix``): no floating-point atomics, so the result does not depend on the
order the atomics land in.
"""

from __future__ import annotations

import math
import threading

import numpy as np
from numba import config, cuda

if config.ENABLE_CUDASIM:
    # The simulator runs a cooperative grid as one block: its grid barrier is the block's
    # (what numba-cuda's simulated ``GridGroup.sync`` does).
    def _this_grid():
        return None

    def _grid_sync(group):
        threading.current_thread().syncthreads()
        return 0

else:
    # ``cuda.cg.this_grid()``/``.sync()`` are overloads, compiled as device functions for the
    # current device, which ``compile_ptx`` without a driver does not have; their intrinsics
    # (numba-cuda >= 0.20, numba/cuda/cg.py) are the same code without that lookup.
    from numba.cuda.cg import _grid_group_sync as _grid_sync
    from numba.cuda.cg import _this_grid

NONE = -1  # no move
EMPTY = -2  # move to an empty community; its id is given in batch order


@cuda.jit
def leiden_phase_init(k, memb, fix, kfix, Kfix, size):
    """Fixed-point degrees; totals and sizes of ``memb``'s communities (zeroed by the
    caller)."""
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for u in range(start, memb.shape[0], stride):
        kf = np.int64(math.floor(k[u] * fix + 0.5))
        kfix[u] = kf
        cuda.atomic.add(Kfix, memb[u], kf)
        cuda.atomic.add(size, memb[u], 1)


# long: a CUDA kernel is one function by nature; device-function calls cost registers
# and change register pressure in the sweep loop, whose locals are the point.
@cuda.jit
def leiden_move_sweeps(
    indptr,
    indices,
    weight,
    k,
    kfix,
    memb,
    Kfix,
    size,
    active,
    perms,
    bounds,
    scale,
    inv_fix,
    hkey,
    hval,
    prop,
    old,
    go,
    leaver,
    counters,
):
    """Up to ``perms.shape[0]`` sweeps of fast local moving.

    ``counters[0]``: sweeps run; ``[1]``: moves made; ``[2 + s]``: threads that saw an active
    node at the start of sweep ``s``; ``[2 + S + s * B + b]``: empty-community movers of batch
    ``b`` of sweep ``s`` (all zeroed by the caller). ``prop``/``old``/``leaver`` start at -1,
    ``go`` at 0, and are left so."""
    grid = _this_grid()
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    n = memb.shape[0]
    n_sweeps = perms.shape[0]
    n_batches = bounds.shape[0] - 1
    for sweep in range(n_sweeps):
        seen = 0
        for u in range(start, n, stride):
            if active[u] != 0:
                seen = 1
                break
        if seen:
            cuda.atomic.add(counters, 2 + sweep, 1)
        _grid_sync(grid)
        if counters[2 + sweep] == 0:
            return
        if start == 0:
            counters[0] += 1
        slot = 2 + n_sweeps + sweep * n_batches
        for b in range(n_batches):
            lo = bounds[b]
            hi = bounds[b + 1]
            # 1. propose, from the state at the batch's start
            for i in range(lo + start, hi, stride):
                u = perms[sweep, i]
                if active[u] == 0:
                    continue
                active[u] = 0
                # node-to-community weights: an open-addressing table in u's slice
                e0 = indptr[u]
                e1 = indptr[u + 1]
                slots = 2 * (e1 - e0)
                base = 2 * e0
                for s in range(slots):
                    hkey[base + s] = -1
                for j in range(e0, e1):
                    v = indices[j]
                    if v == u:
                        continue
                    c = memb[v]
                    h = c % slots
                    while True:
                        kk = hkey[base + h]
                        if kk == c:
                            hval[base + h] += weight[j]
                            break
                        if kk == -1:
                            hkey[base + h] = c
                            hval[base + h] = weight[j]
                            break
                        h += 1
                        if h == slots:
                            h = 0
                own = memb[u]
                ku = k[u]
                k_own = (Kfix[own] - kfix[u]) * inv_fix
                stay = -scale * ku * k_own
                best_s = -math.inf
                best_c = -1
                for s in range(slots):
                    c = hkey[base + s]
                    if c < 0:
                        continue
                    wc = hval[base + s]
                    if c == own:
                        stay = wc - scale * ku * k_own
                    else:
                        score = wc - scale * ku * (Kfix[c] * inv_fix)
                        if score > best_s or (score == best_s and c < best_c):
                            best_s = score
                            best_c = c
                to_empty = size[own] > 1 and best_s < 0.0
                if to_empty:
                    best_s = 0.0
                if (best_s - stay) > 1e-12 * ku:
                    if to_empty:
                        prop[u] = EMPTY
                        go[u] = 1
                        cuda.atomic.add(counters, slot + b, 1)
                    else:
                        prop[u] = best_c
                        go[u] = 2 if size[best_c] == 1 else 1
                    if size[own] == 1:
                        leaver[own] = u
                        old[u] = own
            _grid_sync(grid)
            # 2. empty communities in batch order: the i-th such mover takes the i-th empty id
            if counters[slot + b] > 0:
                if start == 0:
                    c = 0
                    for i in range(lo, hi):
                        u = perms[sweep, i]
                        if prop[u] == EMPTY:
                            while c < n and size[c] != 0:
                                c += 1
                            if c < n:
                                prop[u] = c
                                c += 1
                            else:  # no empty id left (the reference fails here): stay
                                prop[u] = NONE
                                go[u] = 0
                                if old[u] >= 0:
                                    leaver[old[u]] = -1
                                    old[u] = -1
                _grid_sync(grid)
            # 3. apply, except a move into a singleton whose member moves in this batch too
            #    (kept only if mutual and towards the smaller id)
            for i in range(lo + start, hi, stride):
                u = perms[sweep, i]
                t = prop[u]
                if t < 0:
                    continue
                own = memb[u]
                if go[u] == 2:
                    m = leaver[t]
                    if m >= 0 and not (prop[m] == own and t < own):
                        go[u] = 0
                        continue
                go[u] = 1
                memb[u] = t
                cuda.atomic.add(Kfix, own, -kfix[u])
                cuda.atomic.add(Kfix, t, kfix[u])
                cuda.atomic.add(size, own, -1)
                cuda.atomic.add(size, t, 1)
                cuda.atomic.add(counters, 1, 1)
            _grid_sync(grid)
            # 4. re-activate the movers' neighbours outside their new community; reset
            for i in range(lo + start, hi, stride):
                u = perms[sweep, i]
                if prop[u] == NONE:
                    continue
                if go[u] == 1:
                    cu = memb[u]
                    for j in range(indptr[u], indptr[u + 1]):
                        v = indices[j]
                        if v != u and memb[v] != cu:
                            active[v] = 1
                if old[u] >= 0:
                    leaver[old[u]] = -1
                    old[u] = -1
                go[u] = 0
                prop[u] = NONE
            _grid_sync(grid)


@cuda.jit
def leiden_refine_init(
    indptr,
    indices,
    weight,
    k,
    kfix,
    memb,
    Kc_fix,
    scale,
    inv_fix,
    fix,
    ext_node,
    ref,
    Kr_fix,
    ext_fix,
    rsize,
    pending,
):
    """The refinement's singletons: each node's weight to the rest of its community (fixed
    point), and whether it is well connected to it (``Kc_fix``: community totals)."""
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for u in range(start, memb.shape[0], stride):
        cu = memb[u]
        ext = 0.0
        for j in range(indptr[u], indptr[u + 1]):
            v = indices[j]
            if v != u and memb[v] == cu:
                ext += weight[j]
        ef = np.int64(math.floor(ext * fix + 0.5))
        ext_node[u] = ef
        ref[u] = u
        Kr_fix[u] = kfix[u]
        ext_fix[u] = ef
        rsize[u] = 1
        ok = ext >= scale * k[u] * ((Kc_fix[cu] - kfix[u]) * inv_fix)
        pending[u] = 1 if ok else 0


# long: a CUDA kernel is one function by nature; device-function calls cost registers
# and change register pressure in the sweep loop, whose locals are the point.
@cuda.jit
def leiden_refine_sweeps(
    indptr,
    indices,
    weight,
    k,
    kfix,
    memb,
    Kc_fix,
    ext_node,
    ref,
    Kr_fix,
    ext_fix,
    rsize,
    pending,
    perms,
    bounds,
    scale,
    inv_fix,
    fix,
    hkey,
    hval,
    prop,
    wt,
    old,
    go,
    leaver,
    counters,
):
    """Up to ``perms.shape[0]`` sweeps of the refinement.

    ``counters[0]``: sweeps run; ``[1]``: moves made; ``[2 + s]``: threads that saw a pending
    node at the start of sweep ``s`` (zeroed by the caller). ``prop``/``old``/``leaver`` start
    at -1, ``go`` at 0, and are left so."""
    grid = _this_grid()
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    n = memb.shape[0]
    n_sweeps = perms.shape[0]
    n_batches = bounds.shape[0] - 1
    for sweep in range(n_sweeps):
        seen = 0
        for u in range(start, n, stride):
            if pending[u] != 0:
                seen = 1
                break
        if seen:
            cuda.atomic.add(counters, 2 + sweep, 1)
        _grid_sync(grid)
        if counters[2 + sweep] == 0:
            return
        if start == 0:
            counters[0] += 1
        for b in range(n_batches + 1):
            # 0. reset the previous batch's proposals (nothing below reads them)
            if b > 0:
                for i in range(bounds[b - 1] + start, bounds[b], stride):
                    u = perms[sweep, i]
                    if prop[u] != NONE:
                        if old[u] >= 0:
                            leaver[old[u]] = -1
                            old[u] = -1
                        go[u] = 0
                        prop[u] = NONE
            if b == n_batches:
                _grid_sync(grid)
                break
            lo = bounds[b]
            hi = bounds[b + 1]
            # 1. propose: pending nodes still alone join the best well-connected refined
            #    community of their community with a strictly positive gain
            for i in range(lo + start, hi, stride):
                u = perms[sweep, i]
                candidate = pending[u] != 0 and rsize[ref[u]] == 1
                pending[u] = 0
                if not candidate:
                    continue
                e0 = indptr[u]
                e1 = indptr[u + 1]
                slots = 2 * (e1 - e0)
                base = 2 * e0
                for s in range(slots):
                    hkey[base + s] = -1
                cu = memb[u]
                for j in range(e0, e1):
                    v = indices[j]
                    if v == u or memb[v] != cu:
                        continue
                    c = ref[v]
                    h = c % slots
                    while True:
                        kk = hkey[base + h]
                        if kk == c:
                            hval[base + h] += weight[j]
                            break
                        if kk == -1:
                            hkey[base + h] = c
                            hval[base + h] = weight[j]
                            break
                        h += 1
                        if h == slots:
                            h = 0
                own = ref[u]
                kc = Kc_fix[cu]
                ku = k[u]
                best_s = -math.inf
                best_t = -1
                best_w = 0.0
                for s in range(slots):
                    t = hkey[base + s]
                    if t < 0 or t == own:
                        continue
                    w_t = hval[base + s]
                    kr = Kr_fix[t]
                    ok = ext_fix[t] * inv_fix >= scale * (kr * inv_fix) * ((kc - kr) * inv_fix)
                    score = w_t - scale * ku * (kr * inv_fix)
                    if ok and score > 0.0:
                        if score > best_s or (score == best_s and t < best_t):
                            best_s = score
                            best_t = t
                            best_w = w_t
                if best_t >= 0:
                    prop[u] = best_t
                    wt[u] = best_w
                    go[u] = 2 if rsize[best_t] == 1 else 1
                    leaver[own] = u
                    old[u] = own
            _grid_sync(grid)
            # 2. cancel a move into a singleton whose member moves too (kept if mutual and
            #    towards the smaller id); a cancelled node is retried in a later sweep
            for i in range(lo + start, hi, stride):
                u = perms[sweep, i]
                t = prop[u]
                if t < 0:
                    continue
                keep = 1
                if go[u] == 2:
                    m = leaver[t]
                    if m >= 0 and not (prop[m] == ref[u] and t < ref[u]):
                        keep = 0
                go[u] = keep
                if keep == 0:
                    pending[u] = 1
            _grid_sync(grid)
            # 3. apply: ext_T += ext_v - 2 w(v, T) - w(v, other movers joining T)
            for i in range(lo + start, hi, stride):
                u = perms[sweep, i]
                t = prop[u]
                if t < 0 or go[u] == 0:
                    continue
                delta = ext_node[u] - 2 * np.int64(math.floor(wt[u] * fix + 0.5))
                for j in range(indptr[u], indptr[u + 1]):
                    v = indices[j]
                    if v != u and go[v] != 0 and prop[v] == t:
                        delta -= np.int64(math.floor(weight[j] * fix + 0.5))
                cuda.atomic.add(ext_fix, t, delta)
                cuda.atomic.add(Kr_fix, t, kfix[u])
                cuda.atomic.add(rsize, t, 1)
                cuda.atomic.add(counters, 1, 1)
                own = ref[u]
                rsize[own] = 0
                Kr_fix[own] = 0
                ext_fix[own] = 0
                ref[u] = t
            _grid_sync(grid)
