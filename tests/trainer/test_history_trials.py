"""``load_trials``: a DataFrame like ``load_samples``/``load_epochs``, one row per trial, the record's fields
flattened; the raw records stay reachable through ``load_trial_records``."""

from __future__ import annotations

from mixtrain_trainer import load_trial_records, load_trials
from mixtrain_trainer.history import HistoryWriter


def test_load_trials_is_a_flat_frame(tmp_path):
    done = {"trial_id": "b-2", "variant": "baseline", "status": "done", "labels": {"variant": "baseline", "k": 1},
            "config": {"epochs": 3, "optimizer": {"lr": 0.1}}, "final": {"final_test_acc": 0.75}}
    failed = {"trial_id": "a-1", "variant": "mixtrain-cutmix", "status": "failed", "error": "non-finite loss",
              "labels": {"variant": "mixtrain-cutmix"}, "config": {"epochs": 3, "optimizer": {"lr": 0.2}}}
    HistoryWriter(tmp_path, "s", "b-2").write_trial(done)
    HistoryWriter(tmp_path, "s", "a-1").write_trial(failed)
    (tmp_path / "s" / "trials" / ".b-2.json.99.tmp").write_text("{half")  # a writer's temporary: ignored

    trials = load_trials(tmp_path, "s")
    assert trials.trial_id.tolist() == ["a-1", "b-2"]  # one row per trial, by id
    assert trials["config.optimizer.lr"].tolist() == [0.2, 0.1]
    assert trials["labels.k"].isna().tolist() == [True, False] and trials.loc[1, "labels.k"] == 1
    assert trials.loc[1, "final.final_test_acc"] == 0.75 and trials.loc[0, "error"] == "non-finite loss"
    assert trials.groupby("status").size().to_dict() == {"done": 1, "failed": 1}
    assert load_trial_records(tmp_path, "s") == [failed, done]  # the raw, nested records

    empty = load_trials(tmp_path, "nothing-here")
    assert empty.empty and "trial_id" in empty.columns and "status" in empty.columns
    assert load_trial_records(tmp_path, "nothing-here") == []
