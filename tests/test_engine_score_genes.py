"""``tl.score_genes`` on the engine: scanpy's control genes and scores, and its parity stage."""

from __future__ import annotations

import numpy as np
import pytest
import scanpy as sc

import gpu_sc
from gpu_sc.dispatch.provenance import provenance
from gpu_sc.provenance import last as last_record


@pytest.fixture(scope="module")
def lognorm():
    a = gpu_sc.datasets.synthetic(400, seed=3)
    sc.pp.filter_genes(a, min_cells=3)
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    return a


@pytest.mark.parametrize("dense", [False, True], ids=["sparse", "dense"])
@pytest.mark.parametrize("seed", [0, 5])
def test_scores_match_scanpy(lognorm, dense, seed):
    a = lognorm.copy()
    if dense:
        a.X = a.X.toarray()
    genes = list(a.var_names[::37][:20]) + ["NOT_A_GENE"]
    ref = a.copy()
    sc.tl.score_genes(ref, genes, random_state=seed, ctrl_size=30, n_bins=10)
    eng = a.copy()
    gpu_sc.tl.score_genes(eng, genes, random_state=seed, ctrl_size=30, n_bins=10, backend="numpy")
    assert last_record(eng)["backend"] == "numpy"
    r, e = ref.obs["score"].to_numpy(), eng.obs["score"].to_numpy()
    assert eng.obs["score"].dtype == np.float64
    # Same control genes; scanpy sums sparse values in float32, the engine in float64.
    np.testing.assert_allclose(e, r, rtol=0, atol=1e-5 * r.std())
    if dense:
        np.testing.assert_array_equal(e, r)


def test_seed_policy_and_raw(lognorm):
    a = lognorm.copy()
    a.raw = a
    genes = list(a.var_names[:15])
    gpu_sc.tl.score_genes(a, genes, random_state=None, backend="numpy")
    rec = last_record(a)
    assert rec["backend"] == "scanpy" and "random_state=None" in rec["fallback_reason"]
    b = a[:, :200].copy()  # .raw keeps every gene: scored there by default, as scanpy does
    ref = b.copy()
    sc.tl.score_genes(ref, genes, score_name="s")
    gpu_sc.tl.score_genes(b, genes, score_name="s", backend="numpy")
    np.testing.assert_allclose(b.obs["s"], ref.obs["s"], rtol=0, atol=1e-5 * ref.obs["s"].std())


def test_pipeline_section_and_parity_stage(lognorm):
    from gpu_sc.parity import compare

    raw = gpu_sc.datasets.synthetic(300, seed=2)
    genes = list(raw.var_names[5:40])
    cfg = {
        "score_genes": {"enabled": True, "gene_list": genes, "score_name": "sig"},
        "tsne": {"enabled": False},
        "umap": {"enabled": False},
        "rank_genes_groups": {"methods": ["t-test"]},
    }
    out = gpu_sc.pipeline(raw.copy(), cfg, backend="numpy")
    assert provenance(out)[-1]["step"] == "score_genes"
    assert provenance(out)[-1]["backend"] == "numpy" and "sig" in out.obs
    report = compare(raw, ("scanpy", "numpy"), cfg, determinism=False)
    rows = [r for r in report.rows if r.stage == "score_genes"]
    assert {r.mode for r in rows} == {"isolated", "e2e"}
    assert all(r.metric == "score_genes_max_rel_diff" and r.passed for r in rows), rows
