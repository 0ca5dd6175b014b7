"""Smaller parts of the trainer: batch layout, input scaling, the LR schedule, variant resolution, trial ids and
Selective-Backprop's selection rule."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from trainer_helpers import tiny_config

from mixtrain_trainer.config import DatasetConfig
from mixtrain_trainer.data import load_dataset
from mixtrain_trainer.data.loader import ResidentSource
from mixtrain_trainer.rivals.input_scaling import downscale as _downscale
from mixtrain_trainer.rivals.selective_backprop import select_by_percentile
from mixtrain_trainer.schedule import learning_rate
from mixtrain_trainer.trainer import default_trial_id
from mixtrain_trainer.variants import VARIANTS, resolve_variant


@pytest.mark.parametrize("channels_last", [False, True])
def test_batches_have_the_configured_memory_layout(channels_last):
    bundle = load_dataset(
        DatasetConfig(name="synthetic", synthetic_train=16, synthetic_test=8, image_size=16)
    )
    source = ResidentSource(bundle, "cpu", augment=True, channels_last=channels_last)
    x = source.fetch(torch.arange(8), torch.Generator().manual_seed(0))
    assert x.shape == (8, 3, 16, 16) and x.dtype == torch.float32
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert x.is_contiguous(memory_format=layout)


def test_normalised_batches_use_the_training_set_statistics():
    bundle = load_dataset(
        DatasetConfig(name="synthetic", synthetic_train=64, synthetic_test=8, image_size=16)
    )
    source = ResidentSource(bundle, "cpu", augment=False, channels_last=False)
    x = source.fetch(torch.arange(64), torch.Generator())
    assert x.mean(dim=(0, 2, 3)).abs().max() < 1e-3
    assert (x.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-2


def test_downscale_keeps_empty_batches_the_same_size_as_full_ones():
    full = _downscale(torch.zeros(2, 3, 16, 16), 0.75)
    empty = _downscale(torch.zeros(0, 3, 16, 16), 0.75)
    assert full.shape == (2, 3, 12, 12) and empty.shape == (0, 3, 12, 12)
    assert (
        _downscale(torch.zeros(0, 3, 32, 32), 0.6).shape[-2:]
        == F.interpolate(torch.zeros(1, 3, 32, 32), scale_factor=0.6, mode="bilinear").shape[-2:]
    )


def test_learning_rate_schedules(tmp_path):
    cos = tiny_config(tmp_path, epochs=10, optimizer={"lr": 0.1})
    assert learning_rate(cos, 0) == pytest.approx(0.1)
    assert learning_rate(cos, 5) == pytest.approx(0.05)
    assert learning_rate(cos, 10) == pytest.approx(0.0, abs=1e-12)
    step = tiny_config(
        tmp_path, epochs=30, optimizer={"lr": 0.1}, schedule={"kind": "step", "step_epochs": 10, "gamma": 0.1}
    )
    assert [learning_rate(step, e) for e in (0, 9.9, 10, 25)] == pytest.approx([0.1, 0.1, 0.01, 0.001])
    warm = tiny_config(
        tmp_path, epochs=10, optimizer={"lr": 0.1}, schedule={"kind": "constant", "warmup_epochs": 2}
    )
    assert learning_rate(warm, 1) == pytest.approx(0.05) and learning_rate(warm, 3) == pytest.approx(0.1)
    half = tiny_config(tmp_path, epochs=10, budget=0.5, optimizer={"lr": 0.1})
    assert half.trained_epochs == 5
    assert learning_rate(half, 2.5) == pytest.approx(0.05), "the schedule spans the trained epochs"


def test_operator_override_carries_interference_reduction():
    v = resolve_variant("mixtrain-cutmix", "mixup")
    assert (v.operator, v.split, v.adaptive, v.rule) == ("mixup", False, True, "mixtrain")
    v = resolve_variant("naive-mixup", "cutmix")
    assert (v.operator, v.split, v.adaptive) == ("cutmix", False, False)
    assert resolve_variant("baseline", "cutmix") is VARIANTS["baseline"]
    assert resolve_variant("mixtrain-mixup", "mixup") is VARIANTS["mixtrain-mixup"]


def test_every_method_variant_is_registered():
    documented = {
        "baseline",
        "naive-cutmix",
        "naive-mixup",
        "naive-cutmix-split",
        "naive-mixup-adaptive",
        "mixtrain-cutmix",
        "mixtrain-mixup",
        "selective-nosplit",
        "region1-only",
        "threshold-accuracy",
        "threshold-avgloss",
        "region1-all-region3",
        "skip-region3",
        "selective-backprop",
        "stale-sb",
        "minibatch-skip",
        "input-scaling",
    }
    assert documented <= set(VARIANTS)
    assert VARIANTS["mixtrain-cutmix"].split and VARIANTS["mixtrain-mixup"].adaptive
    assert not VARIANTS["selective-nosplit"].split and not VARIANTS["naive-cutmix"].split


def test_trial_id_is_stable_and_ignores_storage_debug_and_name(tmp_path):
    a = tiny_config(tmp_path / "a", "mixtrain-cutmix")
    b = tiny_config(tmp_path / "b", "mixtrain-cutmix", name="other", debug__crash_once_at_epoch=1)
    c = tiny_config(tmp_path / "a", "mixtrain-cutmix", k=2)
    assert default_trial_id(a) == default_trial_id(b)
    assert default_trial_id(a) != default_trial_id(c)
    assert default_trial_id(a).startswith("mixtrain-cutmix-")


def test_selective_backprop_selects_by_percentile():
    history = torch.arange(10, dtype=torch.float32)
    losses = torch.tensor([-1.0, 100.0, -5.0, 50.0])  # percentiles 0, 1, 0, 1: no randomness left
    chosen = select_by_percentile(losses, history, beta=2.0, generator=torch.Generator().manual_seed(0))
    assert chosen.tolist() == [False, True, False, True]
    everything = select_by_percentile(losses, history[:0], beta=2.0, generator=torch.Generator())
    assert everything.all(), "with no history yet every sample is selected"
    mid = torch.full((4000,), 4.5)  # 5 of 10 below: p = 0.5 ** 2
    share = (
        select_by_percentile(mid, history, beta=2.0, generator=torch.Generator().manual_seed(1))
        .float()
        .mean()
    )
    assert float(share) == pytest.approx(0.25, abs=0.03)
