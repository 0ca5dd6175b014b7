"""End-to-end sweeps on embedded Ray with MLflow tracking (CONTRACT.md: MLflow, history layout)."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from mixtrain_trainer.history import load_epochs, load_samples, load_trial_records, load_trials, sample_files
from orchestrate.cli import main
from orchestrate.report import write_report
from orchestrate.spec import expand, load_sweep
from tests.orchestrate.conftest import REPO


def _runs(uri: str, sweep: str):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(sweep)
    assert exp is not None, f"no MLflow experiment {sweep}"
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("mixtrain.sweep_parent") == "true"]
    children = [r for r in runs if "trial_id" in r.data.tags]
    return client, parents, children


def _assert_clean_metrics(client, run, epochs: int) -> None:
    for metric in ("test_acc", "train_loss", "n_inputs", "epoch_seconds"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, metric)]
        assert sorted(steps) == list(range(epochs)), (metric, steps)  # no duplicates, no gaps


def test_quickstart_smoke_end_to_end(ray_local, tmp_path):
    """The shipped quickstart with --smoke-test: MLflow parent + nested runs, full histories."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    root = tmp_path / "results"
    sweep = str(REPO / "sweeps" / "quickstart.yaml")
    import os

    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        code = main(["sweep", "run", sweep, "--smoke-test", "--root", str(root), "--quiet"])
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]
    assert code == 0
    spec = load_sweep(sweep)
    trials = expand(spec.model_copy(update={"storage": spec.storage.model_copy(update={"root": str(root)})}), smoke=True)
    client, parents, children = _runs(uri, "quickstart")
    assert len(parents) == 1
    assert sorted(r.data.tags["trial_id"] for r in children) == sorted(t.trial_id for t in trials)
    trained = {t.trial_id: t.config.trained_epochs for t in trials}  # budget baselines train fewer epochs
    assert sorted(set(trained.values())) == [1, 2]
    exp = client.get_experiment_by_name("quickstart")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    for run in children:
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.data.tags["sweep"] == "quickstart" and run.data.tags["variant"]
        assert run.info.status == "FINISHED"
        assert "final_test_acc" in run.data.metrics and "total_train_seconds" in run.data.metrics
        assert run.data.params["epochs"] == "2" and run.data.params["dataset.train_subset"] == "256"
        record = json.loads((root / "quickstart" / "trials" / f"{run.data.tags['trial_id']}.json").read_text())
        method = {k.removeprefix("method."): v for k, v in run.data.params.items() if k.startswith("method.")}
        assert method and method == {k: str(v) for k, v in record["method"].items()}  # choices METHOD.md leaves open
        variant = run.data.params["variant"]  # the tag says baseline@0.5 for a budget baseline
        assert method["rule"] == {"baseline": "none", "naive-cutmix": "naive"}.get(variant, "mixtrain")
        _assert_clean_metrics(client, run, trained[run.data.tags["trial_id"]])
        fraction = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "test_acc")}
        percent = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "test_acc_pct")}
        assert percent == pytest.approx({k: 100 * v for k, v in fraction.items()})
        assert all(0 <= v <= 1 for v in fraction.values())
        rss = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "rss_mb")}  # resources
        assert sorted(rss) == list(range(trained[run.data.tags["trial_id"]])) and min(rss.values()) > 10
        assert "peak_gpu_mem_mb" not in run.data.metrics  # a CPU machine: only what it has
    samples = load_samples(root, "quickstart", columns=["sample_id"])
    per = samples.groupby(["trial", "epoch"]).size()
    assert set(per.values) == {256} and len(per) == sum(trained.values())
    assert not samples.duplicated(["trial", "epoch", "sample_id"]).any()
    epochs = load_epochs(root, "quickstart")
    assert len(epochs) == sum(trained.values())
    # naive-cutmix pairs everything from epoch 0: half the inputs
    naive = [t.trial_id for t in trials if t.labels["variant"] == "naive-cutmix"][0]
    assert (epochs[epochs.trial == naive].n_inputs == 128).all()

    # The history of a real sweep, for post-hoc study: dtypes, pruning, other readers, the report.
    full = load_samples(root, "quickstart")
    expected = {"sample_id": "int64", "loss": "float32", "correct": "bool", "mixed": "bool",
                "partner_id": "int64", "weight": "float32", "region": "int8", "mix_next": "bool",
                "skipped": "bool", "epoch": "int32"}
    assert {c: str(full[c].dtype) for c in expected} == expected
    assert full.trial.map(type).eq(str).all() and full.mix_path.map(type).eq(str).all()
    files = sample_files(root, "quickstart", trials=[naive], epochs=[1])
    assert len(files) == 1 and files[0].endswith(f"trial={naive}/epoch=1/part-0.parquet")
    assert len(load_samples(root, "quickstart", trials=[naive], epochs=[1])) == 256
    import duckdb

    glob = f"{root}/quickstart/history/samples/*/*/*.parquet"
    counts = duckdb.sql(f"select trial, epoch, count(*) from read_parquet('{glob}', hive_partitioning=true) "
                        "group by all order by all").fetchall()
    assert [(t, int(e), n) for t, e, n in counts] == [(t, e, n) for (t, e), n in per.sort_index().items()]
    folder = write_report(root, "quickstart")
    import pandas as pd

    summary = pd.read_csv(folder / "summary.csv")
    rows = set(zip(summary.variant, summary.budget))  # budget baselines: variant baseline, their budget
    assert rows == {(t.config.variant if t.config.budget < 1 else t.labels["variant"], t.config.budget)
                    for t in trials}, rows
    assert (folder / "summary.md").exists() and (folder / "test_accuracy.png").stat().st_size > 0


def test_crash_is_retried_from_checkpoint(ray_local, write_sweep):
    """A trial that crashes once at epoch 2 resumes from its epoch-1 checkpoint: no duplicates, no gaps."""
    path, uri, root = write_sweep(
        "crash", variants=[{"name": "mixtrain-cutmix", "overrides": {"debug": {"crash_once_at_epoch": 2}}}],
        base={"epochs": 4},
    )
    assert main(["sweep", "run", str(path), "--quiet"]) == 0
    trials = load_trials(root, "crash")
    assert len(trials) == 1
    trial = trials.iloc[0]
    assert trial["status"] == "done" and trial["started_epoch"] == 2  # resumed, not restarted
    assert (root / "crash" / "debug" / f"{trial['trial_id']}.crashed-2").exists()
    samples = load_samples(root, "crash", columns=["sample_id"])
    assert sorted(samples.epoch.unique()) == [0, 1, 2, 3]
    assert not samples.duplicated(["epoch", "sample_id"]).any() and len(samples) == 4 * 128
    epochs = load_epochs(root, "crash")
    assert epochs.epoch.tolist() == [0, 1, 2, 3]
    client, _, children = _runs(uri, "crash")
    assert len(children) == 1
    _assert_clean_metrics(client, children[0], 4)


def test_nonfinite_loss_stops_trial_without_retry(ray_local, write_sweep):
    path, uri, root = write_sweep(
        "nan", variants=["baseline", {"name": "mixtrain-cutmix", "overrides": {"debug": {"nonfinite_at_epoch": 1}}}],
    )
    assert main(["sweep", "run", str(path), "--quiet"]) == 1  # finished, with a failed trial
    trials = {t["variant"]: t for t in load_trial_records(root, "nan")}
    assert trials["baseline"]["status"] == "done"
    bad = trials["mixtrain-cutmix"]
    assert bad["status"] == "failed" and bad["error"] == "non-finite loss at epoch 1 step 0"
    assert bad["started_epoch"] == 0  # never retried
    samples = load_samples(root, "nan", trials=[bad["trial_id"]], columns=["sample_id"])
    assert samples.epoch.unique().tolist() == [0]  # epoch 0 kept, nothing of the bad epoch
    client, _, children = _runs(uri, "nan")
    failed = [r for r in children if r.data.tags["trial_id"] == bad["trial_id"]][0]
    assert failed.info.status == "FAILED" and "non-finite loss at epoch 1 step 0" in failed.data.tags["error"]


def test_same_name_twice_is_refused(ray_local, write_sweep, capsys):
    path, _, root = write_sweep("twice", variants=["baseline"], base={"epochs": 1})
    assert main(["sweep", "run", str(path), "--quiet"]) == 0
    before = sorted(p.name for p in (root / "twice" / "trials").iterdir())
    capsys.readouterr()
    assert main(["sweep", "run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "already exists" in err and "--resume" in err and "--new-name" in err
    assert sorted(p.name for p in (root / "twice" / "trials").iterdir()) == before
    assert main(["sweep", "run", str(path), "--quiet", "--new-name", "twice-b"]) == 0
    assert len(load_trials(root, "twice-b")) == 1


def test_optuna_search_records_suggestions(ray_local, write_sweep):
    path, uri, root = write_sweep(
        "hpo", variants=["baseline"], base={"epochs": 1},
        search={"kind": "optuna", "metric": "test_acc", "mode": "max", "num_samples": 2, "max_concurrent": 2,
                "space": {"optimizer.lr": {"type": "loguniform", "low": 0.001, "high": 0.5},
                          "optimizer.weight_decay": {"type": "loguniform", "low": 1e-5, "high": 1e-3}}},
    )
    assert main(["sweep", "run", str(path), "--quiet"]) == 0
    trials = load_trials(root, "hpo")
    assert len(trials) == 2
    lrs = set(trials["config.optimizer.lr"])
    assert len(lrs) == 2 and all(0.001 <= lr <= 0.5 for lr in lrs)
    assert (trials["labels.optimizer.lr"] == trials["config.optimizer.lr"]).all()
    _, _, children = _runs(uri, "hpo")
    assert {float(r.data.params["optimizer.lr"]) for r in children} == lrs


def test_status_lists_trials(ray_local, write_sweep, capsys):
    path, uri, root = write_sweep("stat", base={"epochs": 1}, variants=[
        "baseline", {"name": "mixtrain-cutmix", "overrides": {"debug": {"nonfinite_at_epoch": 0}}}])
    assert main(["sweep", "run", str(path), "--quiet"]) == 1  # one trial failed
    capsys.readouterr()
    assert main(["sweep", "status", "stat", "--root", str(root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "sweep stat: 1 done, 0 running, 1 failed, 0 pending"
    records = {r["variant"]: r for r in load_trial_records(root, "stat")}
    good, bad = records["baseline"], records["mixtrain-cutmix"]
    lines = {line.split()[0]: line for line in out[1:]}
    assert sorted(lines) == sorted([good["trial_id"], bad["trial_id"]])
    assert lines[good["trial_id"]].split()[1] == "done"
    assert f"test top-1 {good['final']['final_test_acc']:.2%}" in lines[good["trial_id"]]
    assert lines[bad["trial_id"]].split()[1] == "failed"
    assert lines[bad["trial_id"]].endswith("non-finite loss at epoch 0 step 0")
    # the sweep record: what `resume`, `status` and `report` rely on
    record = json.loads((root / "stat" / "sweep.json").read_text())
    expected = [t.trial_id for t in expand(load_sweep(path))]
    assert record["trials"] == expected
    assert record["spec"]["name"] == "stat" and record["spec"]["base"]["epochs"] == 1
    assert record["source"] == str(path) and record["tracking_uri"] == uri and record["smoke"] is False
