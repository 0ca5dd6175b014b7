"""What the tracker logs to MLflow (SQLite store, no services): resource metrics per epoch, accuracies as
fractions plus a named percentage, and the experiment marked as a model-training experiment."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from orchestrate.tracking import EXPERIMENT_KIND_TAG, SweepTracker


def _history(client, run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


def test_resources_and_percentages_per_epoch(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = SweepTracker(uri, "res")
    run = tracker.trial_run("t-1", {"variant": "baseline"}, {"epochs": 2})
    rows = [  # a CUDA trial's epochs: resident memory, peak GPU memory and utilisation
        {"test_acc": 0.5, "train_loss": 1.0, "rss_mb": 812.5, "peak_gpu_mem_mb": 2048.0, "gpu_util": 97.0},
        {"test_acc": 0.625, "train_loss": 0.5, "rss_mb": 830.0, "peak_gpu_mem_mb": 2100.0, "gpu_util": 95.0},
    ]
    for epoch, row in enumerate(rows):
        tracker.log_epoch(run, epoch, row)
    cpu = tracker.trial_run("t-2", {"variant": "baseline"}, {"epochs": 1})
    tracker.log_epoch(cpu, 0, {"test_acc": 0.25, "rss_mb": 700.0})  # a CPU trial: no GPU keys
    tracker.log_final(run, {"final_test_acc": 0.625, "total_train_seconds": 3.0})
    assert tracker.close()

    client = MlflowClient(uri)
    for key in ("rss_mb", "peak_gpu_mem_mb", "gpu_util"):
        assert _history(client, run, key) == {e: r[key] for e, r in enumerate(rows)}
    assert _history(client, run, "test_acc") == {0: 0.5, 1: 0.625}  # a fraction
    assert _history(client, run, "test_acc_pct") == {0: 50.0, 1: 62.5}  # and the percentage, named so
    metrics = client.get_run(run).data.metrics
    assert metrics["final_test_acc"] == 0.625 and metrics["final_test_acc_pct"] == pytest.approx(62.5)
    cpu_metrics = client.get_run(cpu).data.metrics
    assert cpu_metrics["rss_mb"] == 700.0 and "peak_gpu_mem_mb" not in cpu_metrics and "gpu_util" not in cpu_metrics


def test_experiment_is_a_model_training_experiment(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    SweepTracker(uri, "fresh")
    assert client.get_experiment_by_name("fresh").tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    old = client.create_experiment("made-before")  # e.g. by an older mixtrain: marked when next used
    SweepTracker(uri, "made-before")
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    chosen = client.create_experiment("chosen", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    SweepTracker(uri, "chosen")  # a kind someone chose in the UI is kept
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"
