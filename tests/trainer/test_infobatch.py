"""InfoBatch as a trainer strategy, checked against METHOD.md on a real run's history (which samples are
pruned, how many, with which weights; annealing), and resume equal to an uninterrupted run. Also the
research variants built on it train and prune as documented."""

from __future__ import annotations

import math

import numpy as np
import pytest
from trainer_helpers import N_TRAIN, frames_equal, tiny_config

from mixtrain_trainer.history import load_epochs, load_samples
from mixtrain_trainer.loop import Trainer

EPOCHS = 6  # anneal 0.7: nothing pruned from epoch ceil(4.2) = 5


def run(root, variant="infobatch", **kw):
    cfg = tiny_config(root, variant, epochs=EPOCHS, rival__prune_ratio=0.5, rival__anneal=0.7, **kw)
    trainer = Trainer(cfg)
    trainer.fit()
    return cfg, trainer.trial_id


def history(cfg, trial):
    return (load_samples(cfg.storage.root, cfg.name, trials=[trial]),
            load_epochs(cfg.storage.root, cfg.name, trials=[trial]))


def test_infobatch_prunes_as_method_md_says(tmp_path):
    cfg, trial = run(tmp_path)
    samples, epochs = history(cfg, trial)
    scores = np.full(N_TRAIN, np.nan)  # most recent per-sample loss; a pruned sample keeps its last one
    for e in range(EPOCHS):
        rows = samples[samples.epoch == e].set_index("sample_id").sort_index()
        skipped = rows.skipped.to_numpy()
        if e == 0 or e >= 5:
            assert not skipped.any() and (rows.weight == 1.0).all(), e
        else:
            well = scores < scores.mean()  # W after epoch e - 1
            assert skipped.sum() == round(0.5 * well.sum()), e
            assert not (skipped & ~well).any(), e  # only well-learned samples are pruned
            kept_well = well & ~skipped
            assert np.allclose(rows.weight.to_numpy()[kept_well], 2.0), e  # 1 / (1 - r)
            assert np.allclose(rows.weight.to_numpy()[~well], 1.0), e
        assert not rows.mixed.any()
        ep = epochs[epochs.epoch == e].iloc[0]
        assert ep.n_inputs == N_TRAIN - skipped.sum()  # inputs = N - pruned
        trained = ~skipped
        scores[trained] = rows.loss.to_numpy()[trained]


def test_infobatch_resume_equals_uninterrupted(tmp_path):
    whole, trial = run(tmp_path / "a")
    sa, ea = history(whole, trial)
    broken = tiny_config(tmp_path / "b", "infobatch", epochs=EPOCHS, rival__prune_ratio=0.5, rival__anneal=0.7,
                         debug__crash_once_at_epoch=3)
    with pytest.raises(RuntimeError, match="injected crash"):
        Trainer(broken).fit()
    resumed = Trainer(broken)
    resumed.fit(resume=True)
    sb, eb = history(broken, resumed.trial_id)
    frames_equal(sa, sb, ["epoch", "sample_id", "loss", "correct", "weight", "skipped"])
    frames_equal(ea, eb, ["epoch", "n_inputs", "train_loss", "test_acc"])


def test_mixtrain_prune_skips_part_of_s_mix(tmp_path):
    cfg, trial = run(tmp_path, "mixtrain-cutmix-prune")
    samples, epochs = history(cfg, trial)
    prev = None
    for e in range(EPOCHS):
        rows = samples[samples.epoch == e].set_index("sample_id").sort_index()
        if prev is not None and e < 5:
            chosen = prev.mix_next.to_numpy()  # S_mix decided after epoch e - 1
            skipped, mixed = rows.skipped.to_numpy(), rows.mixed.to_numpy()
            assert skipped.sum() == round(0.5 * chosen.sum()) and not (skipped & ~chosen).any(), e
            assert not (mixed & ~chosen).any(), e
        if e >= 5:
            assert not rows.skipped.any()
        prev = rows


def test_mixtrain_lrgate_mixes_only_after_the_first_decay(tmp_path):
    cfg, trial = run(tmp_path, "mixtrain-cutmix-lrgate", schedule__kind="step", schedule__step_epochs=3)
    _, epochs = history(cfg, trial)
    assert (epochs[epochs.epoch < 3].n_mixed == 0).all()  # lr 0.05: gated
    assert math.isclose(epochs[epochs.epoch == 3].lr.iloc[0], 0.005, rel_tol=1e-6)
