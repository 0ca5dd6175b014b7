"""Per-sample statistics of the summary against a hand-computed history (orchestrate/report/samples.py)."""

from __future__ import annotations

import math

import pytest
from report_histories import epoch_rows, write_trial

from mixtrain_trainer.history import HistoryWriter
from orchestrate.report import STAT_COLUMNS, summarize

# sample:      s0     s1     s2     s3     s4     s5
LOSS = [[1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        [0.5, 1.5, 0.8, 2.0, 3.0, 2.2],   # L_mid 1.0
        [0.2, 0.3, 0.1, 2.5, 0.5, 2.4]]   # L_mid 0.9
CORRECT = [[1, 1, 0, 0, 0, 1],
           [1, 1, 0, 0, 0, 1],
           [1, 1, 1, 0, 0, 1]]
REGION = [[0, 0, 0, 3, 0, 0],
          [1, 3, 1, 3, 3, 3],
          [1, 1, 1, 3, 3, 3]]
MIXED = [[0] * 6, [0] * 6, [0, 0, 1, 0, 0, 0]]     # s2 mixed in epoch 2: not in Fig. 6's shares
SKIPPED = [[0] * 6, [0] * 6, [0, 0, 0, 0, 0, 1]]   # s5 skipped in epoch 2: neither


def write_history(root, sweep, trial_id):
    w = HistoryWriter(root, sweep, trial_id)
    for e in range(3):
        w.write_samples(e, {
            "sample_id": list(range(6)), "loss": LOSS[e], "correct": [bool(c) for c in CORRECT[e]],
            "mixed": [bool(m) for m in MIXED[e]], "partner_id": [-1] * 6, "weight": [1.0] * 6,
            "region": REGION[e], "mix_next": [False] * 6, "mix_path": [""] * 6,
            "skipped": [bool(s) for s in SKIPPED[e]],
        })


def rows_with_decisions():
    rows = epoch_rows([0.5, 0.6, 0.7], [1, 1, 1], [6, 6, 5], n_samples=6, l_mid=[None, 1.0, 0.9])
    for row, (mix, r1, r3) in zip(rows, ((2, 2, 0), (4, 3, 1), (5, 1, 4))):  # the last decision never trains
        row.update(n_mix_next=mix, n_next_region1=r1, n_next_region3=r3)
    return rows


@pytest.fixture
def sweep(tmp_path):
    write_trial(tmp_path, "st", "mc-0", "mixtrain-cutmix", 0, rows_with_decisions())
    write_history(tmp_path, "st", "mc-0")
    rows = epoch_rows([0.5, 0.6, 0.7], [1, 1, 1], [6, 6, 6], n_samples=6)  # no thresholds: blank shares
    for row in rows:
        row.update(n_mix_next=0, n_next_region1=0, n_next_region3=0)
    write_trial(tmp_path, "st", "base-0", "baseline", 0, rows)
    write_history(tmp_path, "st", "base-0")
    return tmp_path


def test_statistics_by_hand(sweep):
    t = summarize(sweep, "st").set_index("variant")
    mc = t.loc["mixtrain-cutmix"]
    # Fig. 6: epoch 1: correct s0 s1 s5 -> 1/3 below 1.0; incorrect s2 s3 s4 -> 1/3 below.
    #         epoch 2: correct unmixed unskipped s0 s1 -> 2/2 below 0.9; incorrect s3 s4 -> 1/2 (s4: 0.5).
    assert mc.lmid_correct_below == pytest.approx(100 * (1 / 3 + 1) / 2)
    assert mc.lmid_incorrect_below == pytest.approx(100 * (1 / 3 + 1 / 2) / 2)
    # Fig. 8 over 3 epochs: I = {s3 (3 in R3 -> 100 %), s4 (2 -> 66.7 %, bin 6)}: 1 of 2 at >= 70 %;
    # C = {s0 (0), s1 (1 -> 33 %), s2 (0), s5 (2 -> 66.7 %)}: 1 of 4 at >= 60 %.
    assert mc.region3_incorrect_over70 == pytest.approx(50.0)
    assert mc.region3_correct_over60 == pytest.approx(25.0)
    # Fig. 7 / 9a from the epoch table, the last decision left out: (2 + 3) / (2 + 4) via R1, 1 / 6 via R3,
    # mixed via R3 per epoch: mean(0 / 6, 1 / 6).
    assert mc.region1_share == pytest.approx(100 * 5 / 6) and mc.region3_share == pytest.approx(100 / 6)
    assert mc.region3_frac_mean == pytest.approx(100 / 12)
    base = t.loc["baseline"]
    for col in STAT_COLUMNS:
        if col != "region3_frac_mean":
            assert math.isnan(base[col]), col  # no L_mid ever, nothing mixed: blank, not 0
    assert base.region3_frac_mean == 0.0


def test_without_samples_only_epoch_statistics(sweep):
    mc = summarize(sweep, "st", with_samples=False).set_index("variant").loc["mixtrain-cutmix"]
    assert math.isnan(mc.lmid_correct_below) and math.isnan(mc.region3_incorrect_over70)
    assert mc.region1_share == pytest.approx(100 * 5 / 6)


def test_mean_over_seeds_and_claims_reach_them(sweep):
    """A second seed whose Fig. 6 shares differ: the summary holds the mean; a claim reads it."""
    from orchestrate.report.claims import evaluate_claims

    rows = rows_with_decisions()
    rows[2]["l_mid"] = 0.25  # epoch 2: correct s0 (0.2) below, s1 (0.3) not -> 1/2; incorrect: 0/2
    write_trial(sweep, "st", "mc-1", "mixtrain-cutmix", 1, rows)
    write_history(sweep, "st", "mc-1")
    mc = summarize(sweep, "st").set_index("variant").loc["mixtrain-cutmix"]
    seed1 = 100 * (1 / 3 + 1 / 2) / 2
    assert mc.lmid_correct_below == pytest.approx((100 * (1 / 3 + 1) / 2 + seed1) / 2)
    assert mc.lmid_incorrect_below == pytest.approx((100 * (1 / 3 + 1 / 2) / 2 + 100 * (1 / 3) / 2) / 2)
    (v,) = evaluate_claims([{"id": "fig6", "text": "", "check": "mixtrain-cutmix.lmid_correct_below > 95 and "
                                                             "mixtrain-cutmix.lmid_incorrect_below < 10"}],
                           summarize(sweep, "st"))
    assert v.verdict == "fails"
