"""The Ray Train adapter: one Tune trial with ``workers: N > 1`` runs as a ``TorchTrainer`` of N workers.

Ray Train V2 (the default in the installed Ray 2.60) is launched from inside a Tune trial function, not
passed to the Tuner. So a data-parallel trial is:

    Tune trial (``trial``, on the driver's cluster, holding 1 MiB of memory and no CPU: the workers
    hold the trial's resources in their own placement group, ``resources`` per worker)
      -> TorchTrainer(N workers, gloo on CPU / NCCL on GPU, ``resources`` each)
           -> ``worker_loop`` on every rank: the plain-PyTorch Trainer with an initialised process group

- Metrics: every rank calls ``ray.train.report`` once per epoch (Train's report is a barrier); Ray Train
  keeps rank 0's metrics, and ``TuneReportCallback`` hands them to the Tune trial, so the driver-side
  MLflow tracker and Tune's results see the same per-epoch rows as for a one-process trial (plus
  ``workers``).
- Checkpoints: rank 0 reports the trainer's epoch checkpoint; Ray Train persists it under
  ``<sweep>/ray/train/<trial id>/``. A worker that dies (SIGKILL, a lost node) fails the worker group;
  ``FailureConfig(max_failures)`` restarts the whole group, and every rank resumes from the last epoch
  checkpoint (``ray.train.get_checkpoint``). The trainer drops history files of epochs after the
  checkpoint before it trains again, and MLflow steps are logged by epoch (idempotent), so nothing is
  duplicated or missing.
- A killed driver: ``mixtrain sweep resume`` restores the Tuner, which runs ``trial`` again; a
  TorchTrainer of the same name and storage path restores its checkpoint state from storage, so the
  workers resume from the last epoch, as one-process trials do.

The trainer knows nothing of Ray: it reads the process group through ``mixtrain_trainer.distributed``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from mixtrain_trainer.config import RunConfig
from mixtrain_trainer.errors import ConfigError, NonFiniteLossError
from orchestrate.spec import resolve_trial

TRAIN_DIR = "train"  # under <root>/<sweep>/ray/: Ray Train's runs, one per data-parallel trial
DRIVER_MEMORY = 1 << 20  # bytes: a Tune trial must hold something; the workers hold the real resources


def check_supported(cfg: RunConfig, source: str) -> None:
    """Refuse ``workers > 1`` for a variant whose epoch strategy cannot yet train across ranks (one line,
    exit 2), before anything is written. (The trainer refuses it too, later.)"""
    if cfg.workers <= 1:
        return
    import mixtrain_trainer.rivals  # noqa: F401  (registers the rivals' strategies)
    from mixtrain_trainer.strategy import STRATEGIES
    from mixtrain_trainer.variants import resolve_variant

    name = resolve_variant(cfg.variant, cfg.operator).strategy
    if not getattr(STRATEGIES[name], "data_parallel", False):
        raise ConfigError(
            f"{source}: workers: {cfg.workers}: variant {cfg.variant!r} (strategy {name!r}) does not train "
            "data-parallel yet (its per-sample selection is per process); use workers: 1"
        )


def driver_resources():
    """The Tune trial's own placement group for a data-parallel trial: no CPU, no GPU."""
    from ray.tune import PlacementGroupFactory

    return PlacementGroupFactory([{"memory": DRIVER_MEMORY}])


# ---------------------------------------------------------------------------- the Tune trial (driver side of one trial)
def trial(config: dict, max_failures: int = 2, cpu: float = 1.0, gpu: float = 0.0) -> None:
    """One data-parallel trial, as a Tune function trainable: run a TorchTrainer of ``cfg.workers``."""
    import ray.train
    from ray import tune
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from orchestrate.runner import finished_metrics

    cfg, trial_id, _ = resolve_trial(config)
    done = finished_metrics(cfg, trial_id)
    if done is not None:
        tune.report(done)
        return
    storage = Path(cfg.storage.root) / cfg.name / "ray" / TRAIN_DIR
    resources = {"CPU": cpu, **({"GPU": gpu} if gpu else {})}
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config=config,
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.workers, use_gpu=bool(gpu),
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=trial_id, storage_path=str(storage),
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()


# ---------------------------------------------------------------------------- every rank
def worker_loop(config: dict) -> None:
    """One rank of a data-parallel trial, in a Ray Train worker whose process group is initialised."""
    import ray
    import ray.train
    import torch

    from mixtrain_trainer.trainer import Trainer
    from orchestrate.runner import trial_threads

    cfg, trial_id, labels = resolve_trial(config)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    os.environ["LOCAL_RANK"] = str(ctx.get_local_rank())  # which of the node's GPUs is this rank's
    torch.set_num_threads(trial_threads())
    node_id = ray.get_runtime_context().get_node_id()
    work = Path(tempfile.mkdtemp(prefix=f"mixtrain-{trial_id}-rank{rank}-"))
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        checkpoint.to_directory(str(work))

    def report(metrics: dict) -> None:
        values = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        saved = ray.train.Checkpoint.from_directory(str(work)) if rank == 0 else None
        ray.train.report({**values, "trial_id": trial_id, "node_id": node_id, "workers": world,
                          "torch_threads": torch.get_num_threads()}, checkpoint=saved)

    trainer = Trainer(cfg, on_epoch_end=report, trial_id=trial_id, labels=labels, checkpoint_dir=work)
    try:
        trainer.fit(resume=checkpoint is not None)
    except NonFiniteLossError as err:
        # Not retried (the same seed diverges again): every rank reports the failure, the trial ends.
        ray.train.report({"trial_id": trial_id, "failed": 1, "error": str(err), "epoch": err.epoch})
    finally:
        shutil.rmtree(work, ignore_errors=True)
