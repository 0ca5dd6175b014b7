"""The ``*_from_files`` analyses (DuckDB / Arrow over the Parquet files) give the pandas functions' numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from report_histories import epoch_rows
from test_report_analysis import EPOCHS, IDS, L_MID

from mixtrain_trainer.history import HistoryWriter, load_epochs, load_samples
from orchestrate import analysis


def _hand_made(root):
    """The 5-sample, 3-epoch history of test_report_analysis (answers worked out there) plus trial "u"."""
    w = HistoryWriter(root, "sw", "t")
    for e, cols in enumerate(EPOCHS):
        w.write_samples(e, {"sample_id": IDS, **cols, "partner_id": [-1] * 5, "weight": [1.0] * 5,
                            "skipped": [False] * 5})
    w.write_epochs(epoch_rows([0.3, 0.4, 0.5], [1.0] * 3, [5, 5, 4], n_samples=5, l_mid=L_MID))
    u = HistoryWriter(root, "sw", "u")
    u.write_samples(0, {"sample_id": IDS, **EPOCHS[0], "partner_id": [-1] * 5, "weight": [1.0] * 5,
                        "skipped": [False] * 5})
    u.write_epochs(epoch_rows([0.3], [1.0], [5], n_samples=5))


def _random(root, seed=0):
    """Three trials of 300 samples with the awkward cases: samples missing from some epochs (and from the
    last), an epoch missing from the samples (a gap), skipped rows, null paths, undefined L_mid."""
    rng = np.random.default_rng(seed)
    paths = np.array(["region1", "region3", "", None], dtype=object)
    for t, n_epochs in (("a", 6), ("b", 4), ("c", 1)):
        w = HistoryWriter(root, "rnd", t)
        l_mid = [None] + [float(x) for x in rng.uniform(0.5, 2.0, n_epochs - 1)]
        for e in range(n_epochs):
            if t == "a" and e == 3:
                continue  # a gap: no pairs for epoch 4
            ids = np.sort(rng.choice(400, size=300, replace=False))
            mixed = rng.random(300) < 0.3
            w.write_samples(e, {
                "sample_id": ids, "loss": rng.exponential(1.0, 300).astype(np.float32),
                "correct": rng.random(300) < 0.6, "mixed": mixed,
                "partner_id": np.where(mixed, rng.integers(0, 400, 300), -1),
                "weight": np.where(mixed, 0.5, 1.0).astype(np.float32),
                "region": rng.integers(0, 4, 300).astype(np.int8), "mix_next": rng.random(300) < 0.4,
                "mix_path": list(rng.choice(paths, 300)), "skipped": rng.random(300) < 0.1,
            })
        w.write_epochs(epoch_rows([0.5] * n_epochs, [1.0] * n_epochs, [300] * n_epochs, n_samples=300,
                                  l_mid=l_mid))


@pytest.fixture(scope="module", params=["hand", "random"])
def sweep(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("hist")
    if request.param == "hand":
        _hand_made(root)
        return root, "sw"
    _random(root)
    return root, "rnd"


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns)
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), check_dtype=False,
                                  rtol=1e-9, atol=1e-12)


def test_mix_fraction_by_path(sweep):
    root, name = sweep
    _same(analysis.mix_fraction_by_path_from_files(root, name), analysis.mix_fraction_by_path(load_samples(root, name)))


def test_lmid_separation(sweep):
    root, name = sweep
    _same(analysis.lmid_separation_from_files(root, name),
          analysis.lmid_separation(load_samples(root, name), load_epochs(root, name)))


def test_region3_occupancy(sweep):
    root, name = sweep
    got = analysis.region3_occupancy_from_files(root, name)
    _same(got, analysis.region3_occupancy(load_samples(root, name)))
    assert got["count"].sum() > 0


def test_loss_change(sweep):
    root, name = sweep
    got = analysis.loss_change_from_files(root, name)
    _same(got, analysis.loss_change(load_samples(root, name)))
    assert got["mean_change"].notna().any()


def test_trajectories(sweep):
    root, name = sweep
    ids = [11, 13, 250, 399]
    _same(analysis.trajectories_from_files(root, name, ids), analysis.trajectories(load_samples(root, name), ids))


def test_trial_filter_reads_only_that_trial(sweep):
    root, name = sweep
    one = sorted(load_samples(root, name, columns=["sample_id"])["trial"].unique())[0]
    got = analysis.mix_fraction_by_path_from_files(root, name, trials=[one])
    assert set(got["trial"]) == {one}
    _same(got, analysis.mix_fraction_by_path(load_samples(root, name, trials=[one])))
    _same(analysis.loss_change_from_files(root, name, trials=[one]),
          analysis.loss_change(load_samples(root, name, trials=[one])))
