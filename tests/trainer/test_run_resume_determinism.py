"""Whole runs: resume from a mid-run checkpoint equals the uninterrupted run, the same configuration gives
the same history, and a non-finite loss fails the trial cleanly."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from trainer_helpers import N_TRAIN, frames_equal, tiny_config

from mixtrain_trainer.errors import MixtrainError, NonFiniteLossError
from mixtrain_trainer.history import load_epochs, load_samples
from mixtrain_trainer.trainer import Trainer

COMPARED = [
    "epoch",
    "sample_id",
    "loss",
    "correct",
    "mix_next",
    "mixed",
    "partner_id",
    "weight",
    "region",
    "mix_path",
    "skipped",
]
EPOCH_COMPARED = [
    "epoch",
    "l_corr",
    "l_incorr",
    "l_mid",
    "n_mixed",
    "n_inputs",
    "train_loss",
    "train_acc",
    "test_acc",
    "test_top5",
    "lr",
]


def _history(cfg, trial):
    return (
        load_samples(cfg.storage.root, cfg.name, trials=[trial]),
        load_epochs(cfg.storage.root, cfg.name, trials=[trial]),
    )


@pytest.mark.parametrize("variant", ["mixtrain-cutmix", "mixtrain-mixup", "stale-sb"])
def test_resume_from_a_mid_run_checkpoint_equals_the_uninterrupted_run(tmp_path, variant):
    whole = tiny_config(tmp_path / "a", variant, epochs=4)
    trainer = Trainer(whole)
    trainer.fit()
    sa, ea = _history(whole, trainer.trial_id)

    broken = tiny_config(tmp_path / "b", variant, epochs=4, debug__crash_once_at_epoch=2)
    first = Trainer(broken)
    with pytest.raises(RuntimeError, match="injected crash at epoch 2"):
        first.fit()
    trial = first.trial_id
    assert trial == trainer.trial_id, "storage and debug switches do not change the trial id"
    record = json.loads((tmp_path / "b" / broken.name / "trials" / f"{trial}.json").read_text())
    assert record["status"] == "failed" and "injected crash" in record["error"]
    partial, _ = _history(broken, trial)
    assert sorted(partial["epoch"].unique()) == [0, 1]

    # a stray later partition (as a crash after a write could leave) must not survive the resume
    samples_dir = tmp_path / "b" / broken.name / "history" / "samples" / f"trial={trial}"
    stray = samples_dir / "epoch=3" / "part-0.parquet"
    stray.parent.mkdir()
    pq.write_table(pq.read_table(samples_dir / "epoch=1" / "part-0.parquet"), stray)

    resumed = Trainer(broken)
    resumed.fit(resume=True)
    assert resumed.start_epoch == 2
    sb, eb = _history(broken, trial)
    assert len(sb) == len(sa) == 4 * N_TRAIN
    assert not sb.duplicated(["epoch", "sample_id"]).any()
    frames_equal(sa, sb, COMPARED)
    assert eb["epoch"].tolist() == [0, 1, 2, 3]
    frames_equal(ea, eb, EPOCH_COMPARED)
    record = json.loads((tmp_path / "b" / broken.name / "trials" / f"{trial}.json").read_text())
    assert record["status"] == "done" and record["started_epoch"] == 2
    if variant.startswith("mixtrain"):
        assert sa["mixed"].any(), "the compared epochs include mixing"


def test_resume_without_a_checkpoint_starts_from_epoch_0(tmp_path):
    cfg = tiny_config(tmp_path, "baseline", epochs=1)
    trainer = Trainer(cfg)
    assert trainer.resume() is False
    trainer.fit(resume=True)
    assert trainer.start_epoch == 0
    assert load_epochs(cfg.storage.root, cfg.name)["epoch"].tolist() == [0]


@pytest.mark.parametrize(
    "variant", ["mixtrain-cutmix", "naive-mixup-adaptive", "minibatch-skip", "selective-backprop"]
)
def test_the_same_configuration_gives_the_same_history(tmp_path, variant):
    histories = []
    for run in ("one", "two"):
        cfg = tiny_config(tmp_path / run, variant, epochs=3)
        trainer = Trainer(cfg)
        trainer.fit()
        histories.append(_history(cfg, trainer.trial_id))
    (s1, e1), (s2, e2) = histories
    assert len(s1) == len(s2) == 3 * N_TRAIN
    frames_equal(s1, s2, COMPARED)
    frames_equal(e1, e2, EPOCH_COMPARED)
    # and another seed gives another run
    other = tiny_config(tmp_path / "three", variant, epochs=1, seed=1)
    t = Trainer(other)
    t.fit()
    s3, _ = _history(other, t.trial_id)
    assert not (s3["loss"].to_numpy() == s1.loc[s1["epoch"] == 0, "loss"].to_numpy()).all()


@pytest.mark.parametrize("variant", ["mixtrain-cutmix", "naive-cutmix-split", "selective-backprop"])
def test_a_non_finite_loss_fails_the_trial_and_keeps_the_finished_epochs(tmp_path, variant):
    cfg = tiny_config(tmp_path, variant, epochs=3, debug__nonfinite_at_epoch=1)
    trainer = Trainer(cfg)
    with pytest.raises(NonFiniteLossError) as err:
        trainer.fit()
    assert str(err.value) == "non-finite loss at epoch 1 step 0"
    assert (err.value.epoch, err.value.step) == (1, 0)
    assert isinstance(err.value, MixtrainError)
    sweep = tmp_path / cfg.name
    samples_dir = sweep / "history" / "samples" / f"trial={trainer.trial_id}"
    assert sorted(p.name for p in samples_dir.iterdir()) == ["epoch=0"], "no epoch-1 partition"
    s, e = _history(cfg, trainer.trial_id)
    assert len(s) == N_TRAIN and (s["epoch"] == 0).all()
    assert e["epoch"].tolist() == [0]
    record = json.loads((sweep / "trials" / f"{trainer.trial_id}.json").read_text())
    assert record["status"] == "failed"
    assert record["error"] == "non-finite loss at epoch 1 step 0"
    assert record["retry"] is False
