"""A sweep trial with `workers: 2` on embedded Ray: a Tune trial running a Ray Train TorchTrainer of two
gloo workers (orchestrate/train_workers.py). Its history, record and MLflow run look like a one-process
trial's; a crash of the worker group restarts it from the last epoch checkpoint with nothing duplicated.

Runs once the trainer trains one run across a process group (issue 13, stage 6: ``Trainer.data_parallel``);
until then `workers > 1` is refused at the edge (tests/orchestrate/test_workers_plan.py) and this skips.
The plumbing it covers was run by hand on 2026-11-23 with the one-process trainer flagged data-parallel
(each rank then trained everything): Tune -> TorchTrainer -> rank-0 metrics in MLflow (epochs 0..2, one
run, param workers=2), and an injected crash at epoch 1 restarted the worker group from the epoch-0
checkpoint (record started_epoch 1, 3 x 128 history rows, no duplicates)."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from mixtrain_trainer.history import load_epochs, load_samples, load_trial_records
from orchestrate.cli import main
from orchestrate.train_workers import trainer_supports_workers

pytestmark = pytest.mark.skipif(not trainer_supports_workers(),
                                reason="the trainer does not take a process group yet (issue 13, stage 6)")


def test_two_worker_trial_with_a_crash(ray_local, write_sweep):
    path, uri, root = write_sweep(
        "dp", variants=[{"name": "mixtrain-cutmix", "overrides": {"debug": {"crash_once_at_epoch": 1}}}],
        base={"epochs": 3, "workers": 2}, resources={"cpu": 1}, max_failures=1,
    )
    assert main(["sweep", "run", str(path), "--quiet"]) == 0
    (record,) = load_trial_records(root, "dp")
    assert record["status"] == "done" and record["config"]["workers"] == 2
    assert record["started_epoch"] == 1  # the worker group restarted from the epoch-0 checkpoint
    samples = load_samples(root, "dp", columns=["sample_id", "mixed", "partner_id"])
    assert not samples.duplicated(["epoch", "sample_id"]).any()
    assert samples.groupby("epoch").sample_id.nunique().tolist() == [128, 128, 128]
    mixed = samples[samples.mixed]
    pairs = dict(zip(zip(mixed.epoch, mixed.sample_id), mixed.partner_id))
    assert all(pairs[(e, p)] == s for (e, s), p in pairs.items())  # partners point at each other
    assert load_epochs(root, "dp").epoch.tolist() == [0, 1, 2]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("dp")
    (run,) = [r for r in client.search_runs([exp.experiment_id]) if "trial_id" in r.data.tags]
    assert run.info.status == "FINISHED" and run.data.params["workers"] == "2"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "test_acc")) == [0, 1, 2]
