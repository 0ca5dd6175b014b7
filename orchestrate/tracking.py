"""The MLflow adapter: the only module that imports mlflow.

One experiment per sweep, one parent run per sweep, one nested run per trial (tags ``variant``, ``sweep``,
``trial_id``), params = the trial's resolved configuration flattened, metrics per epoch with
``step = epoch``. Everything is logged from the driver, in batches (SQLite, the default store, fails
with concurrent writers). Idempotent: a retried or resumed trial finds its run by its ``trial_id`` tag
and only the steps MLflow lacks are logged. If the server goes away, batches wait in a buffer and are
flushed when it answers again; ``sync_from_files`` re-logs anything still missing from the Parquet
history (the source of truth) afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mixtrain_trainer.errors import MixtrainError

EPOCH_METRICS = (
    "train_loss", "train_acc", "test_acc", "test_top5", "test_loss", "epoch_seconds", "n_inputs",
    "n_mixed", "n_skipped", "frac_mixed", "l_corr", "l_incorr", "l_mid", "n_next_region1", "n_next_region3",
    "n_next_skip", "n_forward",
    "lr", "total_train_seconds",
    # what the trial used of its machine, per epoch (only what the machine has: no GPU keys on a CPU)
    "rss_mb", "peak_gpu_mem_mb", "gpu_util",
)
# Accuracies are fractions in [0, 1] everywhere they are stored (Parquet, MLflow's test_acc); the CLI and
# the report print percentages, so MLflow also gets the percentage under a name that says so.
PERCENT_METRICS = {"test_acc": "test_acc_pct", "final_test_acc": "final_test_acc_pct"}
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # the MLflow 3 UI's experiment type (its GenAI views otherwise)
MODEL_TRAINING_KIND = "custom_model_development"
PARENT_TAG = "mixtrain.sweep_parent"
PENDING_RUN = "pending-run:"  # run key of a trial whose MLflow run could not be found or made yet
STATS = {"flushes": 0, "flush_seconds": 0.0, "epochs_logged": 0}  # driver-side cost, read by bench/
log = logging.getLogger("mixtrain.tracking")


def runs_url(server: str, experiment_id: str, charts: bool = True) -> str:
    """The MLflow UI page of a sweep's trials: the model-training view (MLflow 3.17's UI picks GenAI or
    model training from ``workflowType`` in the URL or the browser's last choice, not from the
    experiment's tag), sorted by run name so every trial is a row of its own (not folded under the
    parent run) and, with ``charts``, every trial's metric curves at once."""
    query = "workflowType=machine_learning&orderByKey=tags.%60mlflow.runName%60&orderByAsc=true"
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}" + ("&compareRunsMode=CHART" if charts else "")


class TrackingError(MixtrainError):
    """The tracking server cannot be used."""


def default_uri() -> str:
    """$MLFLOW_TRACKING_URI, else the local SQLite store ``mlflow.db`` in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('mlflow.db').resolve()}"


def _quiet_http() -> None:
    # MLflow retries an unreachable server for minutes by default; a sweep driver must not hang on it
    # (failed batches are buffered and retried by the tracker itself). A user's own settings win.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def record_params(record: dict) -> dict:
    """A trial's MLflow params from its record: the resolved configuration, flattened, and ``method.*``,
    every choice the run made where METHOD.md is silent (the trainer writes them to the record)."""
    return {**record.get("config", {}), "method": record.get("method", {})}


def trial_params(cfg, trial_id: str) -> dict:
    """``record_params`` of a running trial: its configuration and the method choices of its record."""
    from mixtrain_trainer.history import HistoryWriter

    record = HistoryWriter(cfg.storage.root, cfg.name, trial_id).read_trial()
    return record_params({**record, "config": cfg.model_dump()})


def check_reachable(uri: str) -> None:
    """One clear error if the tracking store cannot be reached, before any trial starts."""
    _quiet_http()
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as err:  # noqa: BLE001 - any failure here means "cannot track"
        text = str(err)
        if any(k in text for k in ("401", "403", "Unauthorized", "Permission denied", "PERMISSION_DENIED")):
            who = os.environ.get("MLFLOW_TRACKING_USERNAME")
            raise TrackingError(
                f"tracking server {uri} refused " + (f"user {who!r}" if who else "a request without credentials")
                + "; set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (MLflow's basic auth) to a user "
                "of the server" + (" with permission on this experiment" if who else "")
            ) from None
        known = ("Connection refused", "timed out", "Name or service not known", "No route to host",
                 "unable to open database file", "401", "403", "404")
        reason = next((k for k in known if k in text), text.splitlines()[0][:120] if text else type(err).__name__)
        raise TrackingError(
            f"tracking server {uri} is unreachable ({reason}); start it, fix tracking.uri, "
            "or set tracking.uri: null for the local store"
        ) from None


class SweepTracker:
    """Driver-side logger for one sweep. All calls are cheap when the server is healthy; failures are
    buffered and retried, never raised into the sweep."""

    def __init__(self, uri: str, sweep: str, experiment: str | None = None, sweep_params: dict | None = None):
        _quiet_http()
        from mlflow.tracking import MlflowClient

        self.uri, self.sweep = uri, sweep
        self.client = MlflowClient(uri)
        self.experiment_id = self._experiment(experiment or sweep)
        self.parent_id = self._parent_run(sweep_params or {})
        self.runs: dict[str, str] = {}  # trial id -> run id
        self.logged: dict[str, set[int]] = {}  # run id -> epochs already logged
        self.pending: list[tuple[str, list, list, list]] = []  # (run id, metrics, params, tags)
        self.finished: dict[str, str] = {}  # run id -> terminal status waiting to be set
        self.completed: set[str] = set()  # runs whose final metrics are logged
        self.unresolved: dict[str, tuple[dict, dict]] = {}  # trial id -> (labels, config): run not found/made yet
        self.down = False  # MLflow did not answer the last call (warned once per outage)

    # ------------------------------------------------------------ runs
    def _experiment(self, name: str) -> str:
        """The sweep's experiment, marked as a model-training experiment (unless someone chose otherwise)."""
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            return self.client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
        if exp.lifecycle_stage == "deleted":
            self.client.restore_experiment(exp.experiment_id)
        if EXPERIMENT_KIND_TAG not in exp.tags:
            self.client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
        return exp.experiment_id

    def _find_run(self, filter_string: str):
        found = self.client.search_runs([self.experiment_id], filter_string=filter_string, max_results=1)
        return found[0] if found else None

    def _parent_run(self, params: dict) -> str:
        run = self._find_run(f"tags.`{PARENT_TAG}` = 'true'")
        if run is not None:
            return run.info.run_id
        from mlflow.entities import Param, RunTag

        run = self.client.create_run(
            self.experiment_id, run_name=self.sweep, tags={PARENT_TAG: "true", "sweep": self.sweep}
        )
        params = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
        self.client.log_batch(run.info.run_id, params=params[:100], tags=[RunTag("mlflow.note.content", self.sweep)])
        return run.info.run_id

    def trial_run(self, trial_id: str, labels: dict, config: dict | Callable[[], dict]) -> str:
        """The trial's nested run: found by its ``trial_id`` tag (a retry or resume reuses it), else made.

        While MLflow does not answer, a placeholder key (``PENDING_RUN`` + trial id) is returned instead:
        what is logged under it waits in the buffer and goes to the real run when MLflow is back.
        """
        if trial_id in self.runs:
            return self.runs[trial_id]
        if trial_id not in self.unresolved:  # its params are read once, when its run is first needed
            self.unresolved[trial_id] = (labels, config() if callable(config) else config)
        self._resolve(trial_id)
        return self.runs.get(trial_id, PENDING_RUN + trial_id)

    def _resolve(self, trial_id: str) -> bool:
        """Find or make the run of a trial logged under a placeholder; move its buffered batches to it."""
        labels, config = self.unresolved[trial_id]
        try:
            run_id, steps, done = self._find_or_create(trial_id, labels, config)
        except Exception as err:  # noqa: BLE001 - a lost server: stay buffered, never raise into the sweep
            self._unavailable(err)
            return False
        del self.unresolved[trial_id]
        self.runs[trial_id] = run_id
        key = PENDING_RUN + trial_id
        self.logged[run_id] = steps | self.logged.pop(key, set())
        if done:
            self.completed.add(run_id)
        elif key in self.completed:
            self.completed.add(run_id)
            if key in self.finished:
                self.finished[run_id] = self.finished[key]
        self.completed.discard(key)
        self.finished.pop(key, None)
        pending = []
        for rid, metrics, params, tags in self.pending:
            if rid == key:
                if tags and done:  # its final status is already in MLflow
                    continue
                if not tags and metrics and metrics[0].step in steps:  # this epoch is already in MLflow
                    continue
                rid = run_id
            pending.append((rid, metrics, params, tags))
        self.pending = pending
        return True

    def _find_or_create(self, trial_id: str, labels: dict, config: dict) -> tuple[str, set[int], bool]:
        """(run id, epochs MLflow has, whether its final status is logged)."""
        run = self._find_run(f"tags.trial_id = '{trial_id}'")
        if run is not None:
            run_id = run.info.run_id
            history = self.client.get_metric_history(run_id, "test_acc")
            return run_id, {m.step for m in history}, "status" in run.data.tags
        from mlflow.entities import Param

        tags = {"mlflow.parentRunId": self.parent_id, "sweep": self.sweep, "trial_id": trial_id,
                "variant": str(labels.get("variant", config.get("variant"))),
                **{f"label.{k}": str(v) for k, v in labels.items()}}
        run = self.client.create_run(self.experiment_id, run_name=str(labels.get("variant", trial_id))
                                     + f" {trial_id[-8:]}", tags=tags)
        run_id = run.info.run_id
        params = [Param(k, str(v)[:6000]) for k, v in sorted(flatten(config).items())]
        for i in range(0, len(params), 100):  # log_batch takes at most 100 params
            self.client.log_batch(run_id, params=params[i : i + 100])
        return run_id, set(), False

    # ------------------------------------------------------------ metrics
    def log_epoch(self, run_id: str, epoch: int, metrics: dict, timestamp_ms: int | None = None) -> None:
        """Queue one epoch's metrics at ``step = epoch`` unless that step is already logged."""
        if epoch in self.logged.setdefault(run_id, set()):
            return
        from mlflow.entities import Metric

        ts = timestamp_ms or int(time.time() * 1000)
        batch = [Metric(k, float(metrics[k]), ts, epoch) for k in EPOCH_METRICS
                 if k in metrics and metrics[k] is not None and math.isfinite(float(metrics[k]))]
        batch += [Metric(PERCENT_METRICS[m.key], 100.0 * m.value, ts, epoch) for m in batch
                  if m.key in PERCENT_METRICS]
        self.logged[run_id].add(epoch)
        self.pending.append((run_id, batch, [], []))
        STATS["epochs_logged"] += 1

    def log_final(self, run_id: str, final: dict, status: str = "FINISHED", error: str | None = None) -> None:
        from mlflow.entities import Metric, RunTag

        if run_id in self.completed:
            return
        self.completed.add(run_id)
        ts = int(time.time() * 1000)
        # Per-epoch metrics (total_train_seconds) are not logged again: a second value at step 0 would be a
        # duplicate point; their last epoch's value is already the final one.
        metrics = [Metric(k, float(v), ts, 0) for k, v in final.items() if k not in EPOCH_METRICS
                   and isinstance(v, (int, float)) and v is not None and math.isfinite(float(v))]
        metrics += [Metric(PERCENT_METRICS[m.key], 100.0 * m.value, ts, 0) for m in metrics
                    if m.key in PERCENT_METRICS]
        tags = [RunTag("status", "failed" if status == "FAILED" else "done")]
        if error:
            tags.append(RunTag("error", error[:5000]))
        self.pending.append((run_id, metrics, [], tags))
        self.finished[run_id] = status

    def flush(self) -> bool:
        """Send what is queued; True when nothing is left. Never raises: a lost server keeps the queue."""
        started = time.perf_counter()
        try:
            return self._flush()
        finally:
            STATS["flushes"] += 1
            STATS["flush_seconds"] += time.perf_counter() - started

    def _flush(self) -> bool:
        for trial_id in list(self.unresolved):
            if not self._resolve(trial_id):
                return False
        while self.pending:
            run_id, metrics, params, tags = self.pending[0]
            try:
                for i in range(0, max(len(metrics), 1), 1000):
                    self.client.log_batch(run_id, metrics=metrics[i : i + 1000], params=params, tags=tags)
                    params, tags = [], []
            except Exception as err:  # noqa: BLE001
                self._unavailable(err)
                return False
            self.pending.pop(0)
        for run_id, status in list(self.finished.items()):
            try:
                self.client.set_terminated(run_id, status=status)
            except Exception as err:  # noqa: BLE001
                self._unavailable(err)
                return False
            del self.finished[run_id]
        if self.down:
            self.down = False
            log.warning("MLflow answers again; the buffered batches are logged")
        return True

    def _unavailable(self, err: Exception) -> None:
        if not self.down:
            self.down = True
            log.warning("MLflow unavailable (%s); batches are buffered until it answers again",
                        str(err).splitlines()[0][:160])

    def close(self, status: str = "FINISHED", attempts: int = 3, wait: float = 2.0) -> bool:
        for attempt in range(attempts):
            if self.flush():
                with contextlib.suppress(Exception):
                    self.client.set_terminated(self.parent_id, status=status)
                return True
            time.sleep(wait * (attempt + 1))
        return False

    def log_artifacts(self, folder: str | Path, artifact_path: str = "report") -> None:
        self.client.log_artifacts(self.parent_id, str(folder), artifact_path)

    def set_parent_tags(self, tags: dict[str, str]) -> None:
        """Tags on the sweep's parent run (the report's claim verdicts, say); one batch call."""
        from mlflow.entities import RunTag

        self.client.log_batch(self.parent_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])


def sync_from_files(uri: str, sweep: str, root: Path, experiment: str | None = None) -> dict:
    """Re-log, from the Parquet history and trial records, every trial and epoch MLflow lacks.

    Returns counts: {"trials": n, "epochs_logged": m}. Safe to run any number of times.
    """
    from mixtrain_trainer.history import load_epochs, load_trial_records

    check_reachable(uri)
    tracker = SweepTracker(uri, sweep, experiment)
    trials = load_trial_records(root, sweep)
    try:
        epochs = load_epochs(root, sweep)
    except FileNotFoundError:
        epochs = None
    logged = 0
    for record in trials:
        run_id = tracker.trial_run(record["trial_id"], record.get("labels", {}), record_params(record))
        before = len(tracker.pending)
        if epochs is not None:
            rows = epochs[epochs["trial"] == record["trial_id"]].sort_values("epoch")
            total = 0.0
            for row in rows.to_dict("records"):
                total += row["epoch_seconds"] or 0.0
                tracker.log_epoch(run_id, int(row["epoch"]), {**row, "total_train_seconds": total})
        logged += len(tracker.pending) - before
        if record.get("status") in ("done", "failed"):
            final = record.get("final") or {}
            tracker.log_final(run_id, final, "FAILED" if record["status"] == "failed" else "FINISHED",
                              record.get("error"))
    if not tracker.close():
        raise TrackingError(f"tracking server {uri} stopped answering during the sync; run it again")
    return {"trials": len(trials), "epochs_logged": logged}
