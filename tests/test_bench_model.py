"""The GPU cost model's arithmetic (the counting itself is the double's, tested elsewhere)."""

from __future__ import annotations

import pytest

from gpu_sc.bench import model as M


def _counts(**kw):
    return {k: kw.get(k, 0) for k in M.COUNTERS}


def test_projection_adds_the_roofline_terms_with_the_stated_constants():
    k = M.CONSTANTS
    t = M.projected_seconds(_counts(ops=1000, syncs=10, bytes_read=7e9, flops=11e12,
                                    h2d_bytes=25e9))  # fmt: skip
    assert t["launch"] == pytest.approx(1000 * k["launch_s"])
    assert t["sync"] == pytest.approx(10 * k["sync_s"])
    assert t["memory"] == pytest.approx(7e9 / k["hbm_bytes_per_s"])
    assert t["compute"] == pytest.approx(11e12 / k["fp32_flops_per_s"])
    assert t["transfer"] == pytest.approx(1.0)
    assert t["total"] == pytest.approx(sum(v for n, v in t.items() if n != "total"))


def test_extrapolation_fits_a_power_law_per_counter_and_keeps_host_steps_unmodelled():
    def run(n):
        return {"n_cells": n, "steps": [
            {"step": "scale", "backend": "cupy", **_counts(ops=26, bytes_read=8 * n, flops=n * n)},
            {"step": "tsne", "backend": "scanpy", **_counts()}]}  # fmt: skip

    ext = M.extrapolate([run(1000), run(2000), run(4000)], target=1_000_000)
    assert ext[0]["exponents"]["ops"] == 0 and ext[0]["exponents"]["bytes_read"] == 1
    assert ext[0]["counts"]["bytes_read"] == pytest.approx(8e6)
    assert ext[0]["counts"]["flops"] == pytest.approx(1e12)
    assert ext[1]["projected_s"] is None


def test_the_model_is_labelled_as_a_model():
    assert "MODEL" in M.LABEL and "not a measurement" in M.LABEL
