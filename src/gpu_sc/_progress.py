"""Progress bars for the engine's long loops (kNN row tiles, UMAP epochs, t-SNE iterations,
wilcoxon gene blocks): tqdm on stderr, silent when stderr is not a terminal."""

from __future__ import annotations

import os
from collections.abc import Iterable

__all__ = ["progress"]


def progress(iterable: Iterable, *, desc: str, total: int | None = None, unit: str = "it"):
    """Wrap ``iterable`` in a tqdm bar labelled ``desc``.

    The bar shows only on a terminal (tqdm's ``disable=None``) and never when the environment
    sets ``GPU_SC_PROGRESS=0``; it is cleared when the loop ends.
    """
    if os.environ.get("GPU_SC_PROGRESS", "").strip() == "0":
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=f"gpu_sc {desc}", total=total, unit=unit, disable=None,
                leave=False, mininterval=0.5)  # fmt: skip
