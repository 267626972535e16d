"""Shared helpers of the bad-input and fault catalogue (tests/test_faults_*.py)."""

from __future__ import annotations

import numpy as np

#: A quick pipeline: the tutorial without the embeddings and with one marker method.
FAST = {
    "paga": {"enabled": False},
    "umap": {"enabled": False},
    "tsne": {"enabled": False},
    "rank_genes_groups": {"methods": ["t-test"]},
}

FAST_TOML = """
[paga]
enabled = false
[umap]
enabled = false
[tsne]
enabled = false
[rank_genes_groups]
methods = ["t-test"]
"""


def assert_one_line(text: str, *words: str) -> str:
    """``text`` (an error message) is one line and names every one of ``words``."""
    text = str(text).strip()
    assert text, "empty message"
    assert "\n" not in text, f"message is not one line: {text!r}"
    for w in words:
        assert w.lower() in text.lower(), f"{w!r} not in message: {text!r}"
    return text


def small_counts(n_obs: int = 300, n_genes: int = 300, seed: int = 1):
    import gpu_sc

    return gpu_sc.datasets.synthetic(n_obs, n_genes=n_genes, seed=seed)


def same_result(res, ref) -> None:
    """Two pipeline results agree: same cells, genes, HVG set and Leiden partition."""
    from sklearn.metrics import adjusted_rand_score

    assert list(res.obs_names) == list(ref.obs_names)
    assert list(res.var_names) == list(ref.var_names)
    ari = adjusted_rand_score(ref.obs["leiden"], res.obs["leiden"])
    assert ari == 1.0, f"Leiden ARI {ari} against the float32 CSR run"
    np.testing.assert_allclose(
        np.abs(res.obsm["X_pca"][:, :5]), np.abs(ref.obsm["X_pca"][:, :5]), rtol=1e-3, atol=1e-3
    )
