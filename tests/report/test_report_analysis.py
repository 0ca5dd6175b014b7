"""orchestrate.analysis on a hand-made 5-sample, 3-epoch history whose answers are worked out below."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image
from report_histories import epoch_rows

from mixtrain_trainer.history import HistoryWriter, load_epochs, load_samples
from orchestrate import analysis

IDS = [10, 11, 12, 13, 14]
# per epoch: loss, correct, mixed, region, mix_next, mix_path (samples 10..14)
T, F = True, False
EPOCHS = [
    dict(loss=[0.1, 2.0, 0.5, 3.0, 4.0], correct=[T, F, T, F, F], mixed=[F, F, F, F, F],
         region=[0, 0, 0, 0, 3], mix_next=[F, F, F, F, F], mix_path=["", "", "", "", ""]),
    dict(loss=[0.2, 2.5, 1.5, 0.8, 4.5], correct=[T, F, T, F, F], mixed=[F, F, F, F, F],
         region=[1, 3, 2, 1, 3], mix_next=[T, T, F, T, F], mix_path=["region1", "region3", "", "region1", ""]),
    dict(loss=[0.3, 1.0, 0.4, 3.5, 5.0], correct=[T, T, T, F, F], mixed=[T, F, F, T, F],
         region=[1, 2, 1, 3, 3], mix_next=[T, F, T, F, F], mix_path=["region1", "", "region1", "", ""]),
]
L_MID = [None, 1.0, 0.9]


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    root = tmp_path_factory.mktemp("hist")
    w = HistoryWriter(root, "sw", "t")
    for e, cols in enumerate(EPOCHS):
        mixed = cols["mixed"]
        w.write_samples(e, {
            "sample_id": IDS, **cols, "partner_id": [13 if i == 10 and m else 10 if m else -1
                                                     for i, m in zip(IDS, mixed)],
            "weight": [0.5 if m else 1.0 for m in mixed], "skipped": [F] * 5,
        })
    w.write_epochs(epoch_rows([0.3, 0.4, 0.5], [1.0] * 3, [5, 5, 4], n_samples=5, l_mid=L_MID))
    # a second trial, one epoch, nothing mixed: must stay separate from "t"
    u = HistoryWriter(root, "sw", "u")
    u.write_samples(0, {"sample_id": IDS, **EPOCHS[0], "partner_id": [-1] * 5, "weight": [1.0] * 5,
                        "skipped": [F] * 5})
    u.write_epochs(epoch_rows([0.3], [1.0], [5], n_samples=5))
    return load_samples(root, "sw"), load_epochs(root, "sw")


def _row(df, **where):
    sel = np.ones(len(df), bool)
    for k, v in where.items():
        sel &= (df[k] == v).to_numpy()
    assert sel.sum() == 1, where
    return df[sel].iloc[0]


def test_mix_fraction_by_path(history):
    samples, _ = history
    out = analysis.mix_fraction_by_path(samples)
    assert len(out) == 4  # t: 3 epochs, u: 1
    e0, e1, e2 = (_row(out, trial="t", epoch=e) for e in range(3))
    assert (e0.next_region1, e0.next_region3, e0.next_total, e0.mixed) == (0, 0, 0, 0)
    # after epoch 1: 10 and 13 enter via Region 1, 11 via Region 3 (of 5 samples); nothing mixed in epoch 1
    assert (e1.next_region1, e1.next_region3, e1.next_other, e1.next_total, e1.mixed) == pytest.approx(
        (0.4, 0.2, 0.0, 0.6, 0.0))
    # after epoch 2: 10 stays, 12 enters, both via Region 1; 10 and 13 were mixed in epoch 2
    assert (e2.next_region1, e2.next_region3, e2.next_total, e2.mixed) == pytest.approx((0.4, 0.0, 0.4, 0.4))
    assert e2.n_samples == 5
    assert _row(out, trial="u", epoch=0).next_total == 0


def test_lmid_separation(history):
    samples, epochs = history
    out = analysis.lmid_separation(samples, epochs)
    t = out[out.trial == "t"].set_index("epoch")
    # epoch 0: L_mid undefined
    assert math.isnan(t.loc[0, "l_mid"]) and math.isnan(t.loc[0, "frac_correct_below"])
    assert math.isnan(t.loc[0, "frac_incorrect_below"])
    # epoch 1, L_mid 1.0, all unmixed: correct {0.2, 1.5} -> 1/2; incorrect {2.5, 0.8, 4.5} -> 1/3
    assert t.loc[1, "frac_correct_below"] == pytest.approx(1 / 2)
    assert t.loc[1, "frac_incorrect_below"] == pytest.approx(1 / 3)
    assert (t.loc[1, "n_correct"], t.loc[1, "n_incorrect"]) == (2, 3)
    # epoch 2, L_mid 0.9, unmixed 11, 12, 14: correct {1.0, 0.4} -> 1/2; incorrect {5.0} -> 0
    assert t.loc[2, "frac_correct_below"] == pytest.approx(1 / 2)
    assert t.loc[2, "frac_incorrect_below"] == 0.0
    assert (t.loc[2, "n_correct"], t.loc[2, "n_incorrect"]) == (2, 1)


def test_region3_occupancy(history):
    samples, _ = history
    out = analysis.region3_occupancy(samples[samples.trial == "t"])
    assert len(out) == 20 and list(out.bin_label.unique()) == analysis.OCCUPANCY_BINS
    counts = {(r.final, r.bin): r["count"] for _, r in out.iterrows() if r["count"]}
    # Region 3 shares over 3 epochs: 10: 0, 11: 1/3, 12: 0, 13: 1/3, 14: 3/3.
    # Correct at the end (C): 10, 11, 12 -> bin 0 twice, bin 3 once; incorrect (I): 13 -> bin 3, 14 -> bin 9
    assert counts == {("correct", 0): 2, ("correct", 3): 1, ("incorrect", 3): 1, ("incorrect", 9): 1}
    frac = out.set_index(["final", "bin"])["fraction"]
    assert frac[("correct", 0)] == pytest.approx(2 / 3) and frac[("incorrect", 9)] == pytest.approx(0.5)
    assert frac[("correct", 5)] == 0


def test_loss_change(history):
    samples, _ = history
    out = analysis.loss_change(samples).query("trial == 't'").set_index("epoch")
    assert out.loc[0, "mean_loss"] == pytest.approx(9.6 / 5)
    assert math.isnan(out.loc[0, "mean_change"])
    # epoch 1 - epoch 0: [0.1, 0.5, 1.0, -2.2, 0.5]; epoch 2 - epoch 1: [0.1, -1.5, -1.1, 2.7, 0.5]
    assert out.loc[1, "mean_change"] == pytest.approx(-0.1 / 5, abs=1e-6)
    assert out.loc[1, "mean_abs_change"] == pytest.approx(4.3 / 5, abs=1e-6)
    assert out.loc[2, "mean_change"] == pytest.approx(0.7 / 5, abs=1e-6)
    assert out.loc[2, "mean_abs_change"] == pytest.approx(5.9 / 5, abs=1e-6)
    assert out.loc[2, "n_samples"] == 5


def test_trajectories(history):
    samples, _ = history
    out = analysis.trajectories(samples[samples.trial == "t"], [13, 11])
    assert list(zip(out.sample_id, out.epoch)) == [(11, 0), (11, 1), (11, 2), (13, 0), (13, 1), (13, 2)]
    assert out.loss.tolist() == pytest.approx([2.0, 2.5, 1.0, 3.0, 0.8, 3.5])
    assert out.region.tolist() == [0, 3, 2, 0, 1, 3]
    assert out.mixed.tolist() == [F, F, F, F, F, T]


def test_plots_are_valid_images(history, tmp_path):
    samples, epochs = history
    figures = {
        "mix": analysis.plot_mix_fraction_by_path(analysis.mix_fraction_by_path(samples), {"t": "mixtrain"}),
        "lmid": analysis.plot_lmid_separation(analysis.lmid_separation(samples, epochs)),
        "r3": analysis.plot_region3_occupancy(analysis.region3_occupancy(samples)),
        "loss": analysis.plot_loss_change(analysis.loss_change(samples)),
        "traj": analysis.plot_trajectories(analysis.trajectories(samples, [10, 13])),
    }
    for name, fig in figures.items():
        assert any(ax.get_xlabel() for ax in fig.axes) and all(ax.get_ylabel() for ax in fig.axes[:1]), name
        assert fig.axes[0].get_title() or fig._suptitle is not None, name
        assert any(ax.get_legend() for ax in fig.axes), name
        path = tmp_path / f"{name}.png"
        fig.savefig(path)
        plt.close(fig)
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            assert im.size[0] > 100 and im.size[1] > 100
