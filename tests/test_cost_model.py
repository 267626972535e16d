"""The GPU cost model (issue 13): counts from the CuPy double, priced and extrapolated.

The model is labelled as a model wherever it is printed; these tests pin its arithmetic, its
growth fit, and that the counts come from a cupy run in which every engine step ran on cupy.
"""

from __future__ import annotations

import json
import math

import pytest

from gpu_sc.bench.model import (
    H200,
    L40S,
    GpuConstants,
    StepCounts,
    extrapolate,
    growth_exponent,
    markdown,
    project,
)
from gpu_sc.testing.cost_counts import run_model

UNIT = GpuConstants(
    "unit",
    launch_s=1.0,
    sync_s=10.0,
    hbm_bytes_per_s=100.0,
    flop_per_s=1000.0,
    pcie_bytes_per_s=1.0,
)


def test_projection_adds_each_count_times_its_cost():
    c = StepCounts(ops=3, syncs=2, h2d_bytes=5, d2h_bytes=1, bytes=400, flops=7000)
    m = project(c, UNIT)
    assert m == {
        "launch": 3.0,
        "sync": 20.0,
        "memory": 4.0,
        "compute": 7.0,
        "transfer": 6.0,
        "total": 40.0,
    }


def test_fp64_flops_are_priced_at_the_cards_fp64_rate():
    card = GpuConstants(
        "unit64",
        launch_s=0,
        sync_s=0,
        hbm_bytes_per_s=1.0,
        flop_per_s=1000.0,
        pcie_bytes_per_s=1.0,
        fp64_flop_per_s=10.0,
    )
    m = project(StepCounts(flops=3000, flops_fp64=100), card)
    assert m["compute"] == pytest.approx(2900 / 1000 + 100 / 10)
    assert project(StepCounts(flops=3000), UNIT)["compute"] == pytest.approx(3.0)  # FP64 = FP32
    # a float32-class card: FP64 at 1/64 of FP32, so FP64 GEMMs cost ~64x the FP32 ones
    assert 50 <= L40S.flop_per_s / L40S.fp64_rate <= 80
    assert L40S.hbm_bytes_per_s < H200.hbm_bytes_per_s and L40S.sources
    assert H200.fp64_rate == H200.flop_per_s  # FP64 tensor cores: 67 TFLOP/s like FP32


def test_the_double_counts_fp64_flops_by_operand_dtype():
    from gpu_sc.testing.cupy_double import install

    with install() as double:
        import cupy

        a64 = cupy.ones((4, 5))
        a32 = cupy.ones((4, 5), dtype=cupy.float32)
        before = double.counters.snapshot()
        a64 @ a64.T
        after64 = double.counters.snapshot()
        cupy.matmul(a32, a32.T)
        after32 = double.counters.snapshot()
    assert after64["flops"] - before["flops"] == 2 * 4 * 5 * 4
    assert after64["flops_fp64"] - before["flops_fp64"] == 2 * 4 * 5 * 4
    assert after32["flops"] - after64["flops"] == 2 * 4 * 5 * 4
    assert after32["flops_fp64"] == after64["flops_fp64"]  # float32 GEMM: no FP64 flops


def test_growth_exponent_recovers_linear_quadratic_and_constant_work():
    assert growth_exponent(10, 5, 40, 20) == pytest.approx(1.0)
    assert growth_exponent(10, 5, 40, 80) == pytest.approx(2.0)
    assert growth_exponent(10, 7, 40, 7) == pytest.approx(0.0)
    assert growth_exponent(10, 0, 40, 7) == 0.0  # no growth can be read off a zero count
    # fewer calls at more cells (UMAP: 500 epochs below 10^4 cells, 200 above): held constant
    assert growth_exponent(10_000, 40_961, 50_000, 16_361) == 0.0


def test_extrapolation_follows_the_two_largest_sizes():
    by_size = {
        100: StepCounts(ops=999, bytes=1),  # ignored: only the two largest sizes are fitted
        1000: StepCounts(ops=50, syncs=4, bytes=1e6, flops=1e6),
        2000: StepCounts(ops=50, syncs=8, bytes=2e6, flops=4e6),
    }
    c, exps = extrapolate(by_size, 20_000)
    assert c.ops == pytest.approx(50)
    assert c.syncs == pytest.approx(80)
    assert c.bytes == pytest.approx(2e7)
    assert c.flops == pytest.approx(4e8)
    assert exps["flops"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="two sizes"):
        extrapolate({1000: StepCounts()}, 10)


def test_h200_constants_are_within_the_ranges_the_issue_states():
    assert 5e-6 <= H200.launch_s <= 20e-6
    assert 10e-6 <= H200.sync_s <= 20e-6
    assert 3e12 <= H200.hbm_bytes_per_s <= 4e12
    assert 50e12 <= H200.flop_per_s <= 60e12
    assert H200.sources


@pytest.fixture(scope="module")
def small_model():
    # Two small atlases; t-SNE and UMAP left out to keep CI fast (their counts are in the
    # committed model under benchmarks/results/model/).
    config = {"tsne": {"enabled": False}, "umap": {"enabled": False}}
    return run_model([400, 800], target=10**6, config=config)


def test_counts_come_from_a_cupy_run_without_fallback(small_model):
    counted = [r for r in small_model["rows"] if r["counted"]]
    engine_rows = [r for r in counted if r["ran_on"] != ["anndata"]]
    assert engine_rows
    assert all(r["ran_on"] == ["cupy"] and r["fallback_reason"] is None for r in engine_rows), [
        (r["step"], r["ran_on"], r["fallback_reason"]) for r in engine_rows
    ]
    by_step = {r["step"]: r for r in counted if r["n_cells"] == 800}
    assert by_step["pca"]["counts"]["flops"] > 0  # the Gram matrix is a matrix product
    assert by_step["neighbors"]["counts"]["flops"] > 0
    assert by_step["leiden"]["counts"]["ops"] > 100  # an iterative algorithm: many launches


def test_model_report_is_labelled_a_model_and_serialisable(small_model):
    text = markdown(small_model)
    assert text.startswith("# GPU cost model (a MODEL, not a measurement)")
    assert "no GPU ran" in text
    assert small_model["kind"] == "model"
    json.dumps(small_model)  # what `gpu-sc bench --model` writes
    totals = small_model["totals_s"]
    assert set(totals) == {"400", "800", "1000000"}
    assert all(math.isfinite(v) and v >= 0 for v in totals.values())
    assert len(small_model["offenders"]) == 3


def test_a_report_can_be_priced_again_from_its_counts(small_model):
    from gpu_sc.bench.model import price, runs_of

    meta = {
        k: small_model[k] for k in ("n_genes", "seed", "double_device_bytes", "versions", "created")
    }
    again = price(runs_of(small_model), meta, target=small_model["target"])
    assert again["totals_s"] == small_model["totals_s"]
    # more targets (a 10^7 row) and the float32-class card beside the H200
    wide = price(runs_of(small_model), meta, target=10**6, extra_targets=[10**7])
    assert set(wide["totals_s"]) == {"400", "800", "1000000", "10000000"}
    (l40s,) = wide["other_gpus"]
    assert l40s["gpu"]["name"] == L40S.name
    assert set(l40s["totals_s"]) == set(wide["totals_s"])
    assert l40s["totals_s"]["1000000"] > wide["totals_s"]["1000000"]  # a slower card
    text = markdown(wide)
    assert "NVIDIA L40S" in text and "10,000,000" in text
    slower = price(
        runs_of(small_model), meta, target=10**6, gpu=GpuConstants("slow", 1.0, 1.0, 1.0, 1.0, 1.0)
    )
    assert slower["totals_s"]["1000000"] > small_model["totals_s"]["1000000"]


def test_steps_counted_at_other_sizes_join_the_model():
    # t-SNE counted on its own at smaller sizes (a whole run at the larger sizes would take
    # hours on the double): it is extrapolated from its own two largest sizes, placed in
    # pipeline order, and those sizes' totals are marked as partial.
    from gpu_sc.bench.model import price

    def run(n, steps):
        return {
            "n_cells": n,
            "steps": [
                {
                    "step": s,
                    "ran_on": ["cupy"],
                    "fallback_reason": None,
                    "double_seconds": 0.0,
                    "counts": StepCounts(ops=10, bytes=n * 100.0).to_dict(),
                }
                for s in steps
            ],
        }

    runs = [
        run(1000, ["pca", "neighbors", "umap"]),
        run(2000, ["pca", "neighbors", "umap"]),
        run(100, ["tsne"]),
        run(200, ["tsne"]),
    ]
    meta = {
        "n_genes": 10,
        "seed": 0,
        "double_device_bytes": 1,
        "versions": {"gpu_sc": "x"},
        "created": "now",
    }
    report = price(runs, meta, target=10**6, gpu=UNIT, other_gpus=())
    at_target = [r["step"] for r in report["rows"] if r["n_cells"] == 10**6]
    assert at_target == ["pca", "neighbors", "umap", "tsne"]
    tsne = next(r for r in report["rows"] if r["step"] == "tsne" and r["n_cells"] == 10**6)
    assert tsne["counts"]["bytes"] == pytest.approx(10**6 * 100.0)  # from 100 and 200 cells
    assert set(report["partial_sizes"]) == {"100", "200", "1000", "2000"}
    text = markdown(report)
    assert "| 200 (only: tsne) |" in text and "| 2,000 (without: tsne) |" in text
