"""The trainer on a 2-rank gloo group (issue 13, stage 6): `mixtrain train --workers 2` writes a valid
history whose plan is the one-worker plan; every rank holds the same policy state; data-parallel
training with global batch norm is the one-process training of the global batch."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch
import yaml

from mixtrain_trainer import distributed as D
from mixtrain_trainer.config import RunConfig
from mixtrain_trainer.trainer import Trainer
from orchestrate.cli import main
from tests.distributed.ranks import run_ranks

DATA = {"name": "synthetic", "synthetic_train": 69, "synthetic_test": 31, "image_size": 16}
# 69 samples, 16 per rank: global steps of 32 inputs, an uneven last one (2 + 3 on naive pairing's 35)


def _samples(root, name):
    table = pq.read_table(root / name / "history" / "samples").to_pandas()
    table["epoch"] = table["epoch"].astype(int)
    return table


def test_train_workers_2_history_valid_and_plan_equals_one_worker(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run = {"variant": "naive-cutmix", "model": "resnet8", "epochs": 2, "batch_size": 16, "seed": 5,
           "dataset": DATA, "storage": {"root": str(tmp_path / "root")}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**run, "name": "two"}))
    assert main(["train", "--config", str(path), "--workers", "2"]) == 0
    # the one-worker run of the same global batch
    path.write_text(yaml.safe_dump({**run, "name": "one", "batch_size": 32}))
    assert main(["train", "--config", str(path)]) == 0
    capsys.readouterr()

    two, one = _samples(tmp_path / "root", "two"), _samples(tmp_path / "root", "one")
    n = DATA["synthetic_train"]
    for epoch in (0, 1):
        rows = two[two.epoch == epoch].set_index("sample_id").sort_index()
        assert len(rows) == n and rows.index.is_unique  # one row per (sample, epoch)
        assert not rows.skipped.any() and rows.loss.notna().all()  # every sample trained exactly once
        # pairs are symmetric: my partner's partner is me
        paired = rows[rows.partner_id >= 0]
        assert (rows.loc[paired.partner_id.to_numpy(), "partner_id"].to_numpy() == paired.index.to_numpy()).all()
        want = one[one.epoch == epoch].set_index("sample_id").sort_index()
        assert (rows.partner_id == want.partner_id).all() and (rows.mixed == want.mixed).all()
    epochs_two = pq.read_table(tmp_path / "root" / "two" / "history" / "epochs").to_pandas()
    epochs_one = pq.read_table(tmp_path / "root" / "one" / "history" / "epochs").to_pandas()
    assert list(epochs_two.epoch) == [0, 1]
    assert list(epochs_two.n_inputs) == list(epochs_one.n_inputs) == [35, 35]  # 34 pairs + 1 odd out


def _policy_digests(rank: int, world: int, root: str) -> dict:
    """Every rank trains mixTrain and reports its own policy-state digest after every epoch."""
    cfg = RunConfig(variant="mixtrain-cutmix", model="resnet8", epochs=3, batch_size=16, seed=2, dataset=DATA,
                    storage={"root": root}, name="policy")
    seen = []
    trainer = Trainer(cfg, on_epoch_end=lambda row: seen.append(D.digest(trainer.policy.state_dict())))
    trainer.fit()
    return {"digests": D.gather_objects(seen), "mix_next": int(trainer.policy.mix_next.sum()),
            "test_acc": trainer.epoch_rows[-1]["test_acc"]}


def test_every_rank_holds_the_same_policy_state(tmp_path):
    out = run_ranks(_policy_digests, str(tmp_path))
    rank0, rank1 = out["digests"]
    assert len(rank0) == 3 and rank0 == rank1
    assert out["mix_next"] > 0  # the policy decided something (not a trivially equal empty state)
    files = sorted(p.name for p in (tmp_path / "policy" / "history" / "samples").rglob("*.parquet"))
    assert len(files) == 3  # written once (rank 0)


def _baseline_cfg(batch_size: int, root: str) -> RunConfig:
    return RunConfig(variant="baseline", model="resnet8", epochs=2, batch_size=batch_size, seed=4,
                     dataset={**DATA, "augment": False}, storage={"root": root}, name=f"b{batch_size}",
                     sync_batchnorm=True)


def _trained_parameters(rank: int, world: int, root: str) -> dict:
    trainer = Trainer(_baseline_cfg(16, root))
    trainer.fit()
    assert isinstance(next(m for m in trainer.model.modules() if "BatchNorm" in type(m).__name__),
                      D.GlobalBatchNorm)
    return {"state": {k: v.numpy().copy() for k, v in trainer.model.state_dict().items()},  # not shared memory
            "test_acc": trainer.epoch_rows[-1]["test_acc"], "train_loss": trainer.epoch_rows[-1]["train_loss"]}


def test_two_ranks_train_as_one_process_on_the_global_batch(tmp_path):
    """Gradient average, uneven last step, global batch norm and sharded evaluation against the oracle:
    one process training batches of 2 x 16 inputs."""
    torch.set_num_threads(1)
    got = run_ranks(_trained_parameters, str(tmp_path / "two"))
    oracle = Trainer(_baseline_cfg(32, str(tmp_path / "one")))
    oracle.fit()
    for name, want in oracle.model.state_dict().items():
        assert torch.allclose(torch.from_numpy(got["state"][name]).float(), want.float(), rtol=1e-4, atol=1e-5), name
    assert got["test_acc"] == pytest.approx(oracle.epoch_rows[-1]["test_acc"])
    assert got["train_loss"] == pytest.approx(oracle.epoch_rows[-1]["train_loss"], rel=1e-5)
