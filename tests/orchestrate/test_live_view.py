"""The live progress view counts a trial as done as soon as Tune reports it complete. Tune calls
``on_trial_complete`` while the trial's status is still RUNNING (issue: "done 3, running 1 ... e8/8")."""

from __future__ import annotations

import pytest

from orchestrate.spec import expand, parse_sweep

pytest.importorskip("ray.tune")


class FakeTrial:
    """What the callbacks read of a ray.tune Trial."""

    def __init__(self, trial, trial_id: str, status: str, epoch: int):
        self.config = {"trial": trial.payload}
        self.trial_id, self.status = trial_id, status
        self.last_result = {"epoch": epoch, "test_acc": 0.5, "total_train_seconds": 3.0}
        self.error_file = None


def test_a_completing_trial_is_done_not_running(tmp_path, capsys):
    from orchestrate.runner import _callbacks

    spec = parse_sweep({"name": "live", "variants": ["baseline", "mixtrain-mixup"],
                        "base": {"epochs": 8}, "storage": {"root": str(tmp_path)}})
    a, b = expand(spec)
    trials = [FakeTrial(a, "t0", "RUNNING", 7), FakeTrial(b, "t1", "RUNNING", 3)]
    progress = _callbacks(spec, tmp_path, f"sqlite:///{tmp_path / 'm.db'}", quiet=False)[1]

    progress.on_trial_complete(0, trials, trials[0])  # as Tune calls it: status still RUNNING
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "done 1, running 1, failed 0, pending 0" in line, line
    assert f"{b.trial_id} e4/8" in line and a.trial_id not in line, line

    trials[0].status = "TERMINATED"  # what Tune sets afterwards: still done once
    trials[1].status = "PENDING"  # e.g. a paused/requeued trial
    progress.on_trial_result(1, trials, trials[1], {})
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "done 1, running 0, failed 0, pending 1" in line, line

    trials[1].status = "RUNNING"
    progress.on_trial_error(2, trials, trials[1])  # errored: failed, until Ray retries it
    progress.on_trial_complete(3, [trials[0]], trials[0])
    assert "done 1, running 0, failed 0" in capsys.readouterr().out
    assert progress._line(trials).split("]", 1)[1].startswith(" done 1, running 0, failed 1")
    progress.on_trial_recover(4, trials, trials[1])
    assert progress._line(trials).split("]", 1)[1].startswith(" done 1, running 1, failed 0")
