"""The driver-side tracker when MLflow stops answering, without services: the client's calls are made to
fail as they do against a stopped server (test_faults.py does it for real). Nothing may raise into the
sweep, batches wait in the buffer, a trial that starts meanwhile gets its run later, and every epoch ends
up in MLflow exactly once."""

from __future__ import annotations

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from orchestrate.tracking import PENDING_RUN, SweepTracker

CALLS = ("search_runs", "create_run", "log_batch", "set_terminated", "get_metric_history",
         "get_experiment_by_name", "create_experiment")


class Outage:
    """Makes a tracker's MLflow client fail like a refused connection while ``down``."""

    def __init__(self, tracker: SweepTracker, monkeypatch):
        self.down = False
        for name in CALLS:
            real = getattr(tracker.client, name)

            def call(*args, _real=real, _name=name, **kwargs):
                if self.down:
                    raise MlflowException(f"API request to /{_name} failed with exception "
                                          "HTTPConnectionPool: [Errno 111] Connection refused")
                return _real(*args, **kwargs)

            monkeypatch.setattr(tracker.client, name, call)


def _epoch(e: int) -> dict:
    return {"epoch": e, "test_acc": 0.1 * e, "train_loss": 2.0 - e / 10, "total_train_seconds": 1.5 * (e + 1)}


def _steps(uri: str, run_id: str, key: str = "test_acc") -> list[int]:
    return sorted(m.step for m in MlflowClient(uri).get_metric_history(run_id, key))


def test_buffered_while_down_flushed_once_when_back(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = SweepTracker(uri, "outage", sweep_params={"sweep": {"name": "outage"}})
    outage = Outage(tracker, monkeypatch)
    a = tracker.trial_run("baseline-aaaa1111", {"variant": "baseline"}, {"epochs": 3, "variant": "baseline"})
    tracker.log_epoch(a, 0, _epoch(0))
    assert tracker.flush()

    outage.down = True
    tracker.log_epoch(a, 1, _epoch(1))
    assert tracker.flush() is False  # buffered, not raised
    # A trial that starts while MLflow is down: no exception, a placeholder until its run can be made.
    b = tracker.trial_run("mixtrain-cutmix-bbbb2222", {"variant": "mixtrain-cutmix"}, {"epochs": 2})
    assert b == PENDING_RUN + "mixtrain-cutmix-bbbb2222"
    assert tracker.trial_run("mixtrain-cutmix-bbbb2222", {"variant": "mixtrain-cutmix"}, {"epochs": 2}) == b
    for e in range(2):
        tracker.log_epoch(b, e, _epoch(e))
    tracker.log_epoch(b, 1, _epoch(1))  # a repeated report: still once
    tracker.log_final(b, {"final_test_acc": 0.1, "total_train_seconds": 3.0})
    tracker.log_epoch(a, 2, _epoch(2))
    tracker.log_final(a, {"final_test_acc": 0.2, "total_train_seconds": 4.5})
    assert tracker.flush() is False and tracker.close(attempts=2, wait=0.01) is False

    outage.down = False
    assert tracker.flush()
    assert tracker.pending == [] and tracker.unresolved == {} and tracker.finished == {}
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("outage")
    runs = {r.data.tags.get("trial_id"): r for r in client.search_runs([exp.experiment_id])}
    parent = runs.pop(None)
    assert sorted(runs) == ["baseline-aaaa1111", "mixtrain-cutmix-bbbb2222"]
    run_b = runs["mixtrain-cutmix-bbbb2222"]
    assert run_b.info.run_id == tracker.runs["mixtrain-cutmix-bbbb2222"]
    assert run_b.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert run_b.data.tags["variant"] == "mixtrain-cutmix"
    assert run_b.info.status == "FINISHED" and run_b.data.tags["status"] == "done"
    assert run_b.data.params["epochs"] == "2"
    assert _steps(uri, run_b.info.run_id) == [0, 1]
    assert _steps(uri, runs["baseline-aaaa1111"].info.run_id) == [0, 1, 2]
    for run in runs.values():  # the final total_train_seconds is not a second point at step 0
        assert _steps(uri, run.info.run_id, "total_train_seconds") == _steps(uri, run.info.run_id)
        assert client.get_run(run.info.run_id).data.metrics["final_test_acc"] in (0.1, 0.2)


def test_a_new_driver_while_down_logs_only_what_mlflow_lacks(tmp_path, monkeypatch):
    """A resumed driver whose tracker re-reports epochs MLflow already has (found when it is back)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = SweepTracker(uri, "resumed")
    run_id = first.trial_run("baseline-aaaa1111", {"variant": "baseline"}, {})
    for e in range(2):
        first.log_epoch(run_id, e, _epoch(e))
    first.log_final(run_id, {"final_test_acc": 0.1})
    assert first.flush()

    second = SweepTracker(uri, "resumed")
    outage = Outage(second, monkeypatch)
    outage.down = True
    key = second.trial_run("baseline-aaaa1111", {"variant": "baseline"}, {})
    assert key.startswith(PENDING_RUN)
    for e in range(3):
        second.log_epoch(key, e, _epoch(e))
    second.log_final(key, {"final_test_acc": 0.2})
    outage.down = False
    assert second.flush()
    assert second.runs["baseline-aaaa1111"] == run_id
    assert _steps(uri, run_id) == [0, 1, 2]  # epochs 0 and 1 were already there: not logged twice
    assert [m.value for m in MlflowClient(uri).get_metric_history(run_id, "final_test_acc")] == [0.1]


def test_tracking_failures_never_stop_the_sweep(tmp_path, monkeypatch, capsys):
    """Ray Tune aborts the whole experiment when a callback raises: the tracking callback must not."""
    pytest.importorskip("ray.tune")
    from orchestrate.runner import _callbacks
    from orchestrate.spec import expand, parse_sweep

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = parse_sweep({"name": "nobody-home", "variants": ["baseline"], "storage": {"root": str(tmp_path)},
                        "tracking": {"uri": f"http://127.0.0.1:{port}"}})
    (trial,) = expand(spec)

    class FakeTrial:
        config = {"trial": trial.payload}
        last_result = {"epoch": 0, "test_acc": 0.5, "total_train_seconds": 1.0}
        error_file = None

    tracking = _callbacks(spec, tmp_path, spec.tracking.uri, quiet=True)[0]
    tracking.on_trial_result(0, [FakeTrial], FakeTrial, dict(FakeTrial.last_result))
    tracking.on_trial_result(1, [FakeTrial], FakeTrial, {**FakeTrial.last_result, "epoch": 1})
    tracking.on_trial_error(2, [FakeTrial], FakeTrial)
    tracking.on_trial_complete(3, [FakeTrial], FakeTrial)
    tracking.on_experiment_end([FakeTrial])
    err = capsys.readouterr().err
    assert err.count("mixtrain: warning: MLflow") == 1  # said once, not at every result
    assert f"mixtrain sync-mlflow {spec.name}" in err
    # Nothing was dropped: every result waits in the backlog for a server that answers (or for sync-mlflow).
    assert [(kind, args[0]) for kind, _, args in tracking.backlog] == [
        ("epoch", 0), ("epoch", 1), ("final", {}),
        ("final", {"final_test_acc": 0.5, "final_test_top5": None, "total_train_seconds": 1.0})]
    assert tracking.backlog[2][2][1:] == ("FAILED", "unknown error (see the Ray logs)")
    assert tracking.tracker is None  # no tracker could be made: never a half-made one
