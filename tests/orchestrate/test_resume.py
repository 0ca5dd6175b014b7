"""A sweep whose driver is killed mid-way finishes with `mixtrain sweep resume`: no trial runs twice and
no MLflow run or history row is duplicated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from mixtrain_trainer.history import load_epochs, load_samples, load_trials
from tests.orchestrate.conftest import REPO, mixtrain_cmd
from tests.orchestrate.test_sweep_run import _assert_clean_metrics, _runs


def _wait_for(predicate, timeout: float, what: str, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"driver exited early ({proc.returncode}) while waiting for {what}: "
                                 + proc.stdout.read().decode()[-3000:])
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_killed_driver_then_resume(write_sweep, tmp_path):
    path, uri, root = write_sweep(
        "killed", variants=["baseline", "mixtrain-cutmix", "mixtrain-mixup"], max_concurrent=1,
        base={"epochs": 4, "debug": {"sleep_per_epoch": 1.5}},
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "MIXTRAIN_CACHE": str(tmp_path / "cache")}
    driver = subprocess.Popen([*mixtrain_cmd(), "sweep", "run", str(path), "--quiet"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    trials_dir = root / "killed" / "trials"

    def statuses():
        trials = load_trials(root, "killed")  # a DataFrame, one row per trial
        return dict(zip(trials.trial_id, trials.status))

    def one_done_one_mid_way():
        s = statuses()
        if "done" not in s.values() or "running" not in s.values():
            return False
        running = [t for t, v in s.items() if v == "running"][0]
        epochs_file = root / "killed" / "history" / "epochs" / f"trial={running}" / "part-0.parquet"
        return epochs_file.exists()

    try:
        _wait_for(one_done_one_mid_way, 240, "one trial done and one mid-way", driver)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray it started, mid-epoch
        driver.wait()
    done_before = {t: (trials_dir / f"{t}.json").read_bytes() for t, s in statuses().items() if s == "done"}
    assert done_before

    resumed = subprocess.run([*mixtrain_cmd(), "sweep", "resume", "killed", "--root", str(root), "--quiet"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]

    trials = load_trials(root, "killed")
    assert len(trials) == 3 and (trials.status == "done").all(), trials.status.tolist()
    for trial_id, before in done_before.items():  # finished trials were not run again
        assert (trials_dir / f"{trial_id}.json").read_bytes() == before
    samples = load_samples(root, "killed", columns=["sample_id"])
    assert not samples.duplicated(["trial", "epoch", "sample_id"]).any()
    assert samples.groupby("trial").epoch.nunique().tolist() == [4, 4, 4]
    epochs = load_epochs(root, "killed")
    assert epochs.groupby("trial").epoch.apply(list).tolist() == [[0, 1, 2, 3]] * 3
    client, parents, children = _runs(uri, "killed")
    assert len(parents) == 1
    ids = [r.data.tags["trial_id"] for r in children]
    assert sorted(ids) == sorted(trials.trial_id)  # one MLflow run per trial, none duplicated
    for run in children:
        _assert_clean_metrics(client, run, 4)
    record = json.loads((root / "killed" / "sweep.json").read_text())
    assert record["spec"]["name"] == "killed"
