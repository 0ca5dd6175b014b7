"""orchestrate.report.summarize against numbers worked out by hand from hand-made epoch tables."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from report_histories import epoch_rows, make_sweep, write_trial

from orchestrate.report import summarize


def row(table, variant, budget=1.0):
    sel = table[(table.variant == variant) & (table.budget == budget)]
    assert len(sel) == 1, (variant, budget, table[["variant", "budget"]])
    return sel.iloc[0]


@pytest.fixture(scope="module")
def s1(tmp_path_factory):
    root = tmp_path_factory.mktemp("sum")
    make_sweep(root)
    return summarize(root, "s1")


def test_groups_and_order(s1):
    assert list(zip(s1.variant, s1.budget)) == [
        ("baseline", 1.0), ("baseline", 0.5), ("mixtrain-cutmix", 1.0), ("mixtrain-mixup", 1.0), ("naive-cutmix", 1.0)]
    assert set(s1.model) == {"m"}
    assert s1.n_seeds.tolist() == [2, 2, 2, 0, 1]
    assert s1.n_failed.tolist() == [0, 0, 1, 1, 0]


def test_baseline_row(s1):
    b = row(s1, "baseline")
    assert b.top1 == pytest.approx(82.0)  # (80 + 84) / 2
    assert b.top1_std == pytest.approx(math.sqrt(8))  # sample std of 80, 84
    assert b.wall_seconds == pytest.approx(42.0)  # (40 + 44) / 2
    assert (b.delta_top1, b.speedup, b.inputs_ratio, b.iso_time_gain) == pytest.approx((0, 1, 1, 0))
    assert b.baseline_match == "exact" and b.missing == ""


def test_budget_baseline_row(s1):
    b = row(s1, "baseline", 0.5)
    assert b.top1 == pytest.approx(71.0) and b.wall_seconds == pytest.approx(21.0)
    assert b.speedup == pytest.approx(2.0) and b.inputs_ratio == pytest.approx(0.5)
    assert b.delta_top1 == pytest.approx(-11.0)
    assert b.iso_time_gain == 0.0  # on the frontier


def test_variant_row(s1):
    v = row(s1, "mixtrain-cutmix")
    assert v.top1 == pytest.approx(60.0)  # (58 + 62) / 2; the failed seed does not count
    assert v.top1_std == pytest.approx(math.sqrt(8))
    assert v.delta_top1 == pytest.approx(-22.0)
    assert v.wall_seconds == pytest.approx(30.0)  # (28 + 32) / 2
    assert v.speedup == pytest.approx(42 / 30)
    assert v.inputs_ratio == pytest.approx(280 / 400) and v.inputs_speedup == pytest.approx(400 / 280)
    assert v.n_inputs == 280 and v.n_forward == 0
    # frontier (21 s, 71 %) -- (42 s, 82 %): at 30 s, 71 + 11 * 9 / 21
    assert v.iso_time_gain == pytest.approx(60 - (71 + 11 * 9 / 21))
    # baseline mean curve 50, 61, 71, 82 % first reaches 60 % at epoch 1, after 21 of its 42 s
    assert v.early_term_epoch == 1 and v.early_term_speedup == pytest.approx(2.0)
    assert v.early_term_inputs_speedup == pytest.approx(400 / 200)  # 100 inputs per baseline epoch
    assert v.frac_mixed_final == pytest.approx(80.0) and v.frac_mixed_mean == pytest.approx(55.0)  # percent
    assert v.n_failed == 1 and "mc-2" in v.missing and "boom at epoch 2" in v.missing
    assert "Traceback" not in v.missing  # first line of the error only


def test_outside_frontier_and_single_seed(s1):
    v = row(s1, "naive-cutmix")
    assert v.wall_seconds == pytest.approx(15.0) and v.speedup == pytest.approx(42 / 15)
    assert math.isnan(v.iso_time_gain)  # 15 s is faster than the cheapest baseline (21 s): no extrapolation
    assert math.isnan(v.top1_std)  # one seed
    assert v.top1 == pytest.approx(55.0) and v.early_term_epoch == 1


def test_all_failed_group_is_blank(s1):
    v = row(s1, "mixtrain-mixup")
    assert v.n_seeds == 0 and v.n_failed == 1
    for col in ("top1", "delta_top1", "wall_seconds", "speedup", "inputs_ratio", "iso_time_gain"):
        assert math.isnan(v[col]), col
    assert pd.isna(v.early_term_epoch)
    assert "mm-0" in v.missing and "CUDA out of memory" in v.missing


def test_no_budget_baselines_and_label_matching(tmp_path):
    """No budget baselines: iso-time gain blank. A grid axis k: exact match on k, else the model's pooled
    full baselines; early termination blank when the baseline never gets there."""
    for k, acc in ((1, 0.8), (2, 0.9)):
        write_trial(tmp_path, "s2", f"b-k{k}", "baseline", 0, epoch_rows([0.5, acc], [5, 5], [10, 10]),
                    extra_labels={"k": k})
    write_trial(tmp_path, "s2", "v-k1", "mixtrain-mixup", 0, epoch_rows([0.5, 0.7], [4, 4], [10, 6]),
                extra_labels={"k": 1})
    write_trial(tmp_path, "s2", "v-k3", "mixtrain-mixup", 0, epoch_rows([0.5, 0.95], [2, 3], [10, 5]),
                extra_labels={"k": 3})
    t = summarize(tmp_path, "s2")
    assert t.iso_time_gain.isna().all()
    assert "k" in t.columns
    k1 = t[(t.variant == "mixtrain-mixup") & (t.k == 1)].iloc[0]
    assert k1.baseline_match == "exact" and k1.delta_top1 == pytest.approx(70 - 80)
    assert k1.speedup == pytest.approx(10 / 8) and k1.inputs_ratio == pytest.approx(16 / 20)
    assert k1.early_term_epoch == 1 and k1.early_term_speedup == pytest.approx(1.0)
    k3 = t[(t.variant == "mixtrain-mixup") & (t.k == 3)].iloc[0]
    assert k3.baseline_match == "model" and k3.delta_top1 == pytest.approx(95 - 85)  # pooled: (80 + 90) / 2
    assert k3.speedup == pytest.approx(10 / 5)
    assert pd.isna(k3.early_term_epoch) and math.isnan(k3.early_term_speedup)  # the baselines never reach 95 %
