"""Small deterministic index helpers shared by the graph kernels (NumPy and CuPy alike)."""

from __future__ import annotations

__all__ = ["segment_ids"]


def segment_ids(xp, counts):
    """For segments of lengths ``counts``, the segment of each of the ``counts.sum()`` items.

    ``np.repeat(np.arange(len(counts)), counts)`` without array-valued ``repeats`` (which
    CuPy's ``repeat`` does not take): a binary search of the item positions in the offsets.
    """
    ends = xp.cumsum(counts)
    total = int(ends[-1]) if ends.size else 0
    return xp.searchsorted(ends, xp.arange(total), side="right")
