"""Deterministic segment helpers shared by the graph kernels (NumPy and CuPy alike): index
expansion, and sums over runs of equal keys in a fixed order (sorts, no floating-point atomics)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..dispatch.arrays import ArrayModule

__all__ = [
    "group_pairs",
    "reduce_runs",
    "run_starts",
    "scatter_add",
    "segment_ids",
    "segment_sum",
]


def segment_ids(am: ArrayModule, counts):
    """For segments of lengths ``counts``, the segment of each of the ``counts.sum()`` items.

    ``np.repeat(np.arange(len(counts)), counts)`` without array-valued ``repeats`` (which
    CuPy's ``repeat`` does not take): a binary search of the item positions in the offsets.
    """
    xp = am.xp
    ends = xp.cumsum(counts)
    total = int(ends[-1]) if ends.size else 0
    return xp.searchsorted(ends, xp.arange(total), side="right")


def run_starts(am: ArrayModule, sorted_keys):
    """Start index of each run of equal values in ``sorted_keys``, and the run count."""
    xp = am.xp
    if sorted_keys.shape[0] == 0:
        return xp.zeros(0, dtype=xp.int64), 0
    new = xp.ones(sorted_keys.shape[0], dtype=bool)
    new[1:] = sorted_keys[1:] != sorted_keys[:-1]
    starts = xp.nonzero(new)[0]
    return starts, int(starts.shape[0])


def reduce_runs(am: ArrayModule, values, starts):
    """Sum of ``values`` over the runs beginning at ``starts``, in a fixed pairwise order.

    A doubling (Hillis-Steele) suffix sum inside each run: after the pass at distance ``d``,
    element ``i`` holds the sum of up to ``2 d`` elements of its run from ``i`` on. Every
    backend adds the same pairs in the same order, with no atomics, and without the
    cancellation of prefix-sum differences (CuPy's ``add.reduceat`` subtracts a cumsum).
    Costs ``log2`` of the longest run passes.
    """
    xp = am.xp
    m = values.shape[0]
    if starts.shape[0] == 0:
        return xp.zeros(0, dtype=values.dtype)
    head = xp.zeros(m, dtype=xp.int64)
    head[starts] = 1
    run = xp.cumsum(head) - 1
    longest = int(xp.diff(starts, append=m).max())
    x = values.copy()
    d = 1
    while d < longest:
        x[:-d] = x[:-d] + xp.where(run[d:] == run[:-d], x[d:], 0)
        d *= 2
    return x[starts]


def segment_sum(am: ArrayModule, ids, values, n: int):
    """``out[g] = sum(values[ids == g])`` for ``g < n``, summed in a fixed order."""
    xp = am.xp
    out = xp.zeros(n, dtype=xp.float64)
    if ids.shape[0] == 0:
        return out
    order = xp.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts, _ = run_starts(am, sorted_ids)
    out[sorted_ids[starts]] = reduce_runs(am, values[order].astype(xp.float64), starts)
    return out


def scatter_add(am: ArrayModule, out, ids, values) -> None:
    """``out[ids] += values`` in place with repeated ids summed first in a fixed order
    (sorted ids, :func:`reduce_runs`), so no two updates race for one element."""
    xp = am.xp
    if ids.shape[0] == 0:
        return
    order = xp.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts, _ = run_starts(am, sorted_ids)
    out[sorted_ids[starts]] += reduce_runs(am, values[order], starts)


def group_pairs(am: ArrayModule, u, c, w, n: int):
    """Sum ``w`` over equal ``(u, c)`` pairs: the sparse row ``u`` of node-to-community weights."""
    xp = am.xp
    key = u * n + c
    order = xp.argsort(key, kind="stable")
    key = key[order]
    starts, _ = run_starts(am, key)
    sums = reduce_runs(am, w[order], starts)
    key = key[starts]
    return key // n, key % n, sums
