"""The Ray Tune adapter: the only module that imports Ray.

A function trainable builds the trainer from the trial's configuration and reports every epoch with
``ray.tune.report`` and a ``tune.Checkpoint`` of the trainer's checkpoint, so ``FailureConfig``
retries and ``Tuner.restore`` continue from the last finished epoch. Tracking and the progress view are
Tune callbacks on the driver.
"""

from __future__ import annotations

import functools
import numbers
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from mixtrain_trainer.errors import ConfigError, NonFiniteLossError
from orchestrate.spec import SweepSpec, Trial, check_capacity, resolve_trial

TUNE_DIR = "tune"


# ---------------------------------------------------------------------------- in the worker
def trial_threads() -> int:
    """Intra-op threads for this worker: the CPUs Ray assigned to it (its placement-group bundle).

    Read in the worker from Ray's own record of what it granted, so it holds on any node of a cluster;
    a fraction of a CPU (several trials sharing one) gets one thread."""
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    return max(1, int(cpus))


def finished_metrics(cfg, trial_id: str) -> dict | None:
    """The last epoch's numbers and final metrics of a trial whose record says done, else None."""
    from mixtrain_trainer.history import HistoryWriter, load_epochs

    record = HistoryWriter(cfg.storage.root, cfg.name, trial_id).read_trial()
    if record.get("status") != "done" or record.get("config") != cfg.model_dump():
        return None
    last = load_epochs(cfg.storage.root, cfg.name, trials=[trial_id]).iloc[-1].to_dict()
    return {**{k: float(v) for k, v in last.items() if isinstance(v, numbers.Number)}, **record["final"],
            "total_train_seconds": record["final"]["total_train_seconds"], "trial_id": trial_id}


def trainable(config: dict, settings: dict | None = None) -> None:
    """One trial, in a Ray worker: train, report each epoch with a checkpoint, resume from Ray's.

    A trial with ``workers > 1`` runs as a Ray Train TorchTrainer instead (``train_workers.trial``);
    ``settings`` carries what it needs from the sweep (per-worker resources, retries)."""
    import torch
    from ray import tune

    from mixtrain_trainer.loop import Trainer

    cfg, trial_id, labels = resolve_trial(config)
    if cfg.workers > 1:
        from orchestrate.train_workers import trial

        return trial(config, **(settings or {}))
    done = finished_metrics(cfg, trial_id)
    if done is not None:
        # Finished before the driver died, but Tune's saved state lagged: report, do not train again.
        tune.report(done)
        return
    torch.set_num_threads(trial_threads())
    work = Path(tempfile.mkdtemp(prefix=f"mixtrain-{trial_id}-"))
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        checkpoint.to_directory(str(work))
    elif config["trial"].get("resume_from") and Path(config["trial"]["resume_from"]).is_dir():
        # `sweep run --resume --allow-changed`: a new Tune run; this unchanged trial continues from the
        # last checkpoint the previous Tune run kept for it.
        shutil.copytree(config["trial"]["resume_from"], work, dirs_exist_ok=True)
        checkpoint = config["trial"]["resume_from"]

    import ray

    node_id = ray.get_runtime_context().get_node_id()  # where it ran: tests assert placement across nodes

    def report(metrics: dict) -> None:
        values = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        tune.report({**values, "trial_id": trial_id, "node_id": node_id, "torch_threads": torch.get_num_threads()},
                    checkpoint=tune.Checkpoint.from_directory(str(work)))

    trainer = Trainer(cfg, on_epoch_end=report, trial_id=trial_id, labels=labels, checkpoint_dir=work)
    try:
        trainer.fit(resume=checkpoint is not None)
    except NonFiniteLossError as err:
        # Not retried: the same seed would diverge again. The trial ends; the tracker marks it failed.
        tune.report({"trial_id": trial_id, "failed": 1, "error": str(err), "epoch": err.epoch})
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------------- on the driver
def _callbacks(spec: SweepSpec, root: Path, tracking_uri: str, quiet: bool):
    from ray.tune import Callback

    class TrackingCallback(Callback):
        """Logs every reported epoch to MLflow from the driver; picklable for ``Tuner.restore``."""

        def __init__(self):
            self.args = (tracking_uri, spec.name, spec.tracking.experiment)
            self.sweep_params = {"sweep": spec.model_dump(mode="json")}
            self.tracker = None
            self.backlog: list[tuple[str, dict, tuple]] = []  # (kind, trial config, args) not yet queued
            self.warned = False

        def __getstate__(self):
            return {"args": self.args, "sweep_params": self.sweep_params, "tracker": None, "backlog": [],
                    "warned": False}

        def _t(self):
            if self.tracker is None:
                from orchestrate.tracking import SweepTracker

                self.tracker = SweepTracker(*self.args, sweep_params=self.sweep_params)
            return self.tracker

        def _drain(self) -> bool:
            """Hand the backlog to the tracker and flush; False (never an exception) while MLflow is away.

            The tracker buffers a lost server's batches itself; the backlog only holds what arrived before
            the tracker could even be made, so nothing is dropped and tracking never stops the sweep."""
            from orchestrate.tracking import trial_params

            try:
                while self.backlog:
                    kind, config, args = self.backlog[0]
                    cfg, trial_id, labels = resolve_trial(config)
                    run_id = self._t().trial_run(trial_id, labels, functools.partial(trial_params, cfg, trial_id))
                    (self._t().log_epoch if kind == "epoch" else self._t().log_final)(run_id, *args)
                    self.backlog.pop(0)
                return self._t().flush()
            except Exception as err:  # noqa: BLE001
                if not self.warned:
                    self.warned = True
                    print(f"mixtrain: warning: MLflow logging failed ({str(err).strip().splitlines()[-1][:160]});"
                          " the sweep goes on and the points wait", file=sys.stderr, flush=True)
                return False

        def _submit(self, kind: str, trial, *args) -> None:
            self.backlog.append((kind, trial.config, args))
            self._drain()

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if "error" not in result and "epoch" in result:
                self._submit("epoch", trial, int(result["epoch"]), dict(result))

        def on_trial_complete(self, iteration, trials, trial, **info):
            last = trial.last_result or {}
            if last.get("failed"):
                self._submit("final", trial, {}, "FAILED", last.get("error"))
            else:
                self._submit("final", trial, {"final_test_acc": last.get("test_acc"),
                                              "final_test_top5": last.get("test_top5"),
                                              "total_train_seconds": last.get("total_train_seconds")})

        def on_trial_error(self, iteration, trials, trial, **info):
            self._submit("final", trial, {}, "FAILED", _error_line(trial))

        def on_experiment_end(self, trials, **info):
            closed = False
            for attempt in range(3):
                self._drain()
                if not self.backlog:
                    try:
                        closed = self._t().close()
                    except Exception:  # noqa: BLE001
                        closed = False
                    break
                time.sleep(2 * (attempt + 1))
            if not closed:
                print(f"mixtrain: MLflow at {self.args[0]} did not answer; run `mixtrain sync-mlflow "
                      f"{spec.name} --root {root}` when it is back (the Parquet history has everything)",
                      file=sys.stderr)

    class ProgressCallback(Callback):
        """A live view: trials done / running / failed and each running trial's epoch."""

        def __init__(self):
            self.start, self.last_print, self.epochs = time.time(), 0.0, {}
            # Tune calls on_trial_complete while the trial's status is still RUNNING (it is set to
            # TERMINATED afterwards): what this view was told has ended wins over the status.
            self.ended: dict[str, str] = {}

        def _state(self, t) -> str:
            if t.trial_id in self.ended:
                return self.ended[t.trial_id]
            if t.status == "TERMINATED":
                return "failed" if (t.last_result or {}).get("failed") else "done"
            return {"ERROR": "failed"}.get(t.status, t.status.lower())

        def _line(self, trials) -> str:
            states = [self._state(t) for t in trials]
            done, failed = states.count("done"), states.count("failed")
            running = [t for t, s in zip(trials, states) if s == "running"]
            now = ", ".join(
                f"{resolve_trial(t.config)[1]} e{(t.last_result or {}).get('epoch', -1) + 1}"
                f"/{resolve_trial(t.config)[0].trained_epochs}" for t in running[:6]
            )
            return (f"[{time.time() - self.start:6.0f}s] done {done}, running {len(running)}, failed {failed}, "
                    f"pending {states.count('pending')}" + (f" | {now}" if now else ""))

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if not quiet and time.time() - self.last_print > 2:
                self.last_print = time.time()
                print(self._line(trials), flush=True)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.ended[trial.trial_id] = "failed" if (trial.last_result or {}).get("failed") else "done"
            if not quiet:
                last = trial.last_result or {}
                what = f"FAILED: {last['error']}" if last.get("failed") else (
                    f"done: test top-1 {last.get('test_acc', float('nan')):.2%} in "
                    f"{last.get('total_train_seconds', float('nan')):.1f} s")
                print(f"  {resolve_trial(trial.config)[1]} {what}", flush=True)
                print(self._line(trials), flush=True)

        def on_trial_error(self, iteration, trials, trial, **info):
            self.ended[trial.trial_id] = "failed"
            print(f"  {resolve_trial(trial.config)[1]} FAILED: {_error_line(trial)}", flush=True)

        def on_trial_recover(self, iteration, trials, trial, **info):
            self.ended.pop(trial.trial_id, None)
            if not quiet:
                print(f"  {resolve_trial(trial.config)[1]} crashed ({_error_line(trial)}); "
                      "retrying from its last checkpoint", flush=True)

    return [TrackingCallback(), ProgressCallback()]


def _error_line(trial) -> str:
    path = getattr(trial, "error_file", None)
    try:
        text = Path(path).read_text() if path else ""
    except OSError:
        text = ""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "unknown error (see the Ray logs)"


def init_ray(address: str | None, num_cpus: int | None = None) -> None:
    remote = bool(address) and address != "local"
    if remote and (Path.home() / ".ray" / "auth_token").exists() and "RAY_AUTH_MODE" not in os.environ:
        # Clusters started by `ray start --head` use token auth (Ray 2.60+). Ray reads this variable when
        # it is imported, so it must be set first; if Ray is already imported, re-read its config.
        os.environ["RAY_AUTH_MODE"] = "token"
        if "ray" in sys.modules:
            from ray._raylet import Config

            Config.initialize("")
    import ray

    if ray.is_initialized():
        return
    if remote:
        ray.init(address=address, log_to_driver=bool(os.environ.get("MIXTRAIN_RAY_LOGS")))
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=bool(os.environ.get("MIXTRAIN_RAY_LOGS")))


def cluster_nodes() -> list[dict[str, float]]:
    """The live nodes' total resources (``{"CPU": .., "GPU": ..}`` each) of the connected Ray cluster."""
    import ray

    return [{"CPU": float(n["Resources"].get("CPU", 0)), "GPU": float(n["Resources"].get("GPU", 0))}
            for n in ray.nodes() if n.get("Alive")]


def previous_checkpoints(experiment: Path) -> dict[str, str]:
    """{trial id: its newest checkpoint folder} in an earlier Tune run of a grid sweep."""
    out = {}
    for trial_dir in experiment.glob("*/") if experiment.is_dir() else []:
        found = sorted(trial_dir.glob("checkpoint_*"), key=lambda p: int(p.name.rsplit("_", 1)[1]))
        if found:
            out[trial_dir.name] = str(found[-1])
    return out


def check_resources(spec: SweepSpec, trials: list[Trial], source: str) -> None:
    """Refuse trials the cluster can never place (Ray would wait forever); per worker and per trial."""
    from orchestrate.train_workers import check_supported

    check_capacity(spec, trials, cluster_nodes(), source)
    for t in trials:
        check_supported(t.config, source)


def _concurrency(spec: SweepSpec, trials: list[Trial]) -> int | None:
    """At most as many data-parallel trials at once as the cluster holds whole worker groups: their Tune
    trials hold no CPU, so Tune alone would start them all and let their worker groups queue."""
    widest = max((t.config.workers for t in trials), default=1)
    if spec.max_concurrent or widest == 1:
        return spec.max_concurrent
    from orchestrate.spec import worker_slots

    return max(1, worker_slots(cluster_nodes(), spec.resources.cpu, spec.resources.gpu) // widest)


def _tune_objects(spec: SweepSpec, trials: list[Trial], resume_from: dict[str, str] | None = None,
                  concurrency: int | None = None):
    from ray import tune

    if spec.search.kind == "grid":
        resume_from = resume_from or {}
        payloads = [{**t.payload, **({"resume_from": resume_from[t.trial_id]} if t.trial_id in resume_from else {})}
                    for t in trials]
        param_space = {"trial": tune.grid_search(payloads)}
        # reuse_actors: a finished trial's worker process takes the next trial (no new process, no
        # re-import of torch): about 2 s saved per trial, the bulk of the machinery's overhead.
        tune_config = tune.TuneConfig(max_concurrent_trials=concurrency, reuse_actors=True,
                                      trial_name_creator=lambda t: resolve_trial(t.config)[1],
                                      trial_dirname_creator=lambda t: resolve_trial(t.config)[1])
        return param_space, tune_config
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    if len(trials) != 1:
        raise ConfigError(
            f"{spec.name}: search.kind: optuna tunes one configuration; list one variant and no grid "
            f"(this file expands to {len(trials)} trials)"
        )
    s = spec.search
    make = {"loguniform": lambda p: tune.loguniform(p.low, p.high), "uniform": lambda p: tune.uniform(p.low, p.high),
            "randint": lambda p: tune.randint(int(p.low), int(p.high)), "choice": lambda p: tune.choice(p.values)}
    param_space = {"trial": trials[0].payload, "search": {k: make[p.type](p) for k, p in s.space.items()}}
    searcher = OptunaSearch(metric=s.metric, mode=s.mode, seed=s.seed)
    limit = s.max_concurrent or concurrency
    tune_config = tune.TuneConfig(
        search_alg=ConcurrencyLimiter(searcher, max_concurrent=limit) if limit else searcher,
        num_samples=s.num_samples, metric=s.metric, mode=s.mode, reuse_actors=True,
        trial_name_creator=lambda t: f"optuna-{t.trial_id}", trial_dirname_creator=lambda t: f"optuna-{t.trial_id}",
    )
    return param_space, tune_config


def run_sweep(spec: SweepSpec, trials: list[Trial], root: Path, tracking_uri: str, address: str | None = None,
              resume: bool | str = False, quiet: bool = False, source: str | None = None):
    """Run (or resume) the sweep on Ray; returns Tune's ResultGrid.

    ``resume="changed"`` (``--allow-changed``): the sweep's trials changed since its Tune run, which Tune
    cannot restore with other trials. A new Tune run takes ``trials``; finished unchanged trials are not
    trained again (the trainable finds their record), unfinished ones continue from the old run's last
    checkpoint, kept aside as ``tune.<time>``."""
    from ray import tune

    # Checkpointing every epoch with num_to_keep=2 forces frequent state snapshots: expected, not a problem.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    init_ray(address)
    check_resources(spec, trials, source or spec.name)
    cpu, gpu = spec.resources.cpu, spec.resources.gpu
    one_worker = tune.PlacementGroupFactory([{"CPU": cpu, "GPU": gpu}])

    def resources(config: dict):
        """Per trial: one worker's resources, or (workers > 1) none: its Ray Train workers hold them."""
        if resolve_trial(config)[0].workers > 1:
            from orchestrate.train_workers import driver_resources

            return driver_resources()
        return one_worker

    settings = {"max_failures": spec.max_failures, "cpu": cpu, "gpu": gpu}
    fn = tune.with_resources(tune.with_parameters(trainable, settings=settings), resources)
    storage = root / spec.name / "ray"
    experiment = storage / TUNE_DIR
    callbacks = _callbacks(spec, root, tracking_uri, quiet)
    resume_from = None
    if resume == "changed" and experiment.exists():
        kept = storage / f"{TUNE_DIR}.{time.strftime('%Y%m%d-%H%M%S')}"
        experiment.rename(kept)
        resume_from = previous_checkpoints(kept)
    if resume is True and tune.Tuner.can_restore(str(experiment)):
        tuner = tune.Tuner.restore(str(experiment), fn, resume_unfinished=True, resume_errored=True)
        # Callbacks are restored from tuner.pkl; give them this driver's progress view and tracker.
        tuner._local_tuner.get_run_config().callbacks = callbacks
    else:
        param_space, tune_config = _tune_objects(spec, trials, resume_from, _concurrency(spec, trials))
        run_config = tune.RunConfig(
            name=TUNE_DIR,
            storage_path=str(storage),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            callbacks=callbacks,
            verbose=0,
        )
        tuner = tune.Tuner(fn, param_space=param_space, tune_config=tune_config, run_config=run_config)
    return tuner.fit()
