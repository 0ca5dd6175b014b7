"""The host-memory source (``dataset.device_resident: no``): the same batches as the device-resident
source, gathered with the plan's CPU positions, and a whole run with it writes the same history."""

from __future__ import annotations

import torch
from trainer_helpers import frames_equal, tiny_config

from mixtrain_trainer.config import DatasetConfig
from mixtrain_trainer.data import load_dataset
from mixtrain_trainer.data.loader import HostSource, ResidentSource
from mixtrain_trainer.history import load_epochs, load_samples
from mixtrain_trainer.sampler import plan_epoch
from mixtrain_trainer.trainer import Trainer


def test_host_and_resident_sources_give_the_same_batches():
    bundle = load_dataset(DatasetConfig(name="synthetic", synthetic_train=40, synthetic_test=30, image_size=16))
    mix = torch.zeros(40, dtype=torch.bool)
    mix[::3] = True
    plan = plan_epoch(mix, 8, torch.Generator().manual_seed(0))
    assert plan.first_host is not None and torch.equal(plan.first_host, plan.first)
    host = HostSource(bundle, "cpu", augment=True, channels_last=False)
    resident = ResidentSource(bundle, "cpu", augment=True, channels_last=False)
    a = list(host.epoch_batches(plan, torch.Generator().manual_seed(1)))
    b = list(resident.epoch_batches(plan, torch.Generator().manual_seed(1)))
    assert len(a) == len(b) == plan.num_batches
    assert sum(x[3].shape[0] + x[4].shape[0] for x in a) == 40
    for (f1, s1, n1, x1, y1), (f2, s2, n2, x2, y2) in zip(a, b):
        assert torch.equal(f1, f2) and torch.equal(s1, s2) and n1 == n2
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    ea, eb = list(host.eval_batches(12)), list(resident.eval_batches(12))
    assert [x.shape[0] for x, _ in ea] == [12, 12, 6]
    for (x1, y1), (x2, y2) in zip(ea, eb):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_a_run_from_host_memory_equals_a_device_resident_run(tmp_path):
    histories = []
    for resident in ("yes", "no"):
        cfg = tiny_config(tmp_path / resident, "naive-cutmix-split", epochs=2, dataset__device_resident=resident)
        trainer = Trainer(cfg)
        assert isinstance(trainer.source, HostSource) == (resident == "no")
        trainer.fit()
        histories.append((load_samples(cfg.storage.root, cfg.name), load_epochs(cfg.storage.root, cfg.name)))
    (s1, e1), (s2, e2) = histories
    assert s1["mixed"].all()
    frames_equal(s1, s2, ["epoch", "sample_id", "loss", "correct", "mixed", "partner_id", "weight"])
    frames_equal(e1, e2, ["n_inputs", "train_loss", "train_acc", "test_acc", "test_loss"])
