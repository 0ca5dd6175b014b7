"""The compiled train step (``compile: true``; CUDA compiles by default) trains exactly like the eager one.

On the CPU (inductor's C++ kernels; a small MLP with MixUp, since compiling a CNN's step with gcc takes
minutes on a CI core): the same pair batches through an eager and a compiled ``TrainStep``
give the same losses, per-sample outcomes and parameters after the optimizer updates, within float
tolerance; the shorter last batch runs eagerly (no recompilation). A whole run records that its step was
compiled and how long that took, outside every epoch's time.
"""

from __future__ import annotations

import copy
import json

import torch
from trainer_helpers import tiny_config

from mixtrain_trainer.models import create_model
from mixtrain_trainer.step import PairBatch, StepSpec, TrainStep, compile_mode, make_optimizer
from mixtrain_trainer.trainer import Trainer

B = 16  # the tiny runs' batch size: the whole-run test below reuses this compiled graph from the cache


def _batches(n_batches: int, last: int):
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n_batches):
        b = B if i < n_batches - 1 else last
        composite = torch.arange(b) >= b // 2
        r = torch.where(composite, torch.rand(b, generator=g), 1.0)
        out.append(PairBatch(
            x1=torch.randn(b, 3, 16, 16, generator=g), x2=torch.randn(b, 3, 16, 16, generator=g), mask=None,
            r=r, y1=torch.randint(0, 10, (b,), generator=g),
            y2=torch.randint(0, 10, (b,), generator=g), w=torch.ones(b), composite=composite,
        ))
    return out


def test_compile_modes():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert compile_mode("auto", cpu, 1) is None and compile_mode(False, cuda, 1) is None
    assert compile_mode("auto", cuda, 1) == "reduce-overhead" and compile_mode(True, cuda, 2) == "default"
    assert compile_mode(True, cpu, 1) == "default"


def test_compiled_step_equals_the_eager_step(tmp_path):
    cfg = tiny_config(tmp_path, "naive-mixup", model="mlp", optimizer={"lr": 0.1})
    torch.manual_seed(0)
    model = create_model("mlp", 10, (3, 16, 16), width=32).train()
    twin = copy.deepcopy(model)
    spec = StepSpec(operator="mixup")
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    eager = TrainStep(model, make_optimizer(model, cfg), scaler, spec, B)
    compiled = TrainStep(twin, make_optimizer(twin, cfg), scaler, spec, B, mode="default")
    assert compiled.is_compiled and not eager.is_compiled
    batches = _batches(3, last=5)
    assert compiled.warm_up(batches[0], calls=1) > 0
    for i, batch in enumerate(batches):
        a = eager.train_step(batch, i, len(batches), lr=0.1)
        b = compiled.train_step(batch, i, len(batches), lr=0.1)
        assert torch.allclose(a.loss, b.loss, rtol=1e-4, atol=1e-5)
        assert torch.allclose(a.ce1, b.ce1, rtol=1e-4, atol=1e-5) and torch.allclose(a.ce2, b.ce2, rtol=1e-4, atol=1e-5)
        assert torch.equal(a.correct1, b.correct1) and torch.equal(a.correct2, b.correct2)
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.allclose(p, q, rtol=1e-3, atol=1e-5)


def test_a_compiled_run_records_its_compilation(tmp_path):
    small = {"model": "mlp", "model_width": 32}
    cfg = tiny_config(tmp_path, "naive-mixup", epochs=1, compile=True, **small)
    trainer = Trainer(cfg)
    final = trainer.fit()
    assert trainer.step.is_compiled and final["compile_seconds"] > 0
    record = json.loads((tmp_path / cfg.name / "trials" / f"{trainer.trial_id}.json").read_text())
    assert record["step"]["compiled"] is True and record["step"]["compile_seconds"] == final["compile_seconds"]
    assert record["step"]["compile_mode"] == "default"
    eager = Trainer(tiny_config(tmp_path / "eager", "naive-mixup", epochs=1, **small))
    assert not eager.step.is_compiled, "compile: auto leaves the CPU eager"
    eager.fit()
    assert abs(eager.epoch_rows[0]["train_loss"] - trainer.epoch_rows[0]["train_loss"]) < 1e-3
    assert abs(eager.epoch_rows[0]["test_acc"] - trainer.epoch_rows[0]["test_acc"]) <= 1 / 64  # one flip at most
