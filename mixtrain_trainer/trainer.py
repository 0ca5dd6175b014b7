"""``Trainer.fit``: epochs, evaluation, history, checkpoint and callbacks. No method logic lives here.

Per epoch: the variant's epoch strategy (``strategy.py``, ``rivals/``) trains it through the one
fixed-shape train step (``step.py``) and returns its per-sample ``Outcome`` (``outcome.py``); then one
policy decision (``policy.py`` with a rule from ``rules.py``), one evaluation, one host copy of the
per-sample state, one history write, one checkpoint and ``on_epoch_end(row)``. No ``.item()`` inside the
epoch's training.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mixtrain_trainer import distributed, resources
from mixtrain_trainer.checkpoint import load_checkpoint, restore_rng, rng_state, save_checkpoint
from mixtrain_trainer.config import RunConfig
from mixtrain_trainer.data import load_dataset
from mixtrain_trainer.data.loader import make_source
from mixtrain_trainer.errors import ConfigError, NonFiniteLossError
from mixtrain_trainer.history import HistoryWriter, storage_root
from mixtrain_trainer.mixing import topk_hit
from mixtrain_trainer.models import create_model
from mixtrain_trainer.policy import AmenabilityPolicy
from mixtrain_trainer.rules import METHOD_CHOICES, PATH_NAMES, PATH_REGION1, PATH_REGION3
from mixtrain_trainer.sampler import plan_epoch
from mixtrain_trainer.step import TrainStep, autocast, compile_mode, make_optimizer
from mixtrain_trainer.strategy import make_strategy
from mixtrain_trainer.variants import resolve_variant

PATH_LOOKUP = np.array([PATH_NAMES.get(i, "") for i in range(max(PATH_NAMES) + 1)], dtype=object)


def config_digest(cfg: RunConfig, exclude: set[str]) -> str:
    """8 hex digits of the resolved configuration, without the keys in ``exclude``: stable trial ids."""
    data = cfg.model_dump(exclude=exclude)
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:8]


def default_trial_id(cfg: RunConfig) -> str:
    """A stable id from the resolved configuration (storage, trial id and debug switches left out)."""
    return f"{cfg.variant}-{config_digest(cfg, {'trial_id', 'storage', 'debug', 'name'})}"


def pick_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda was asked for but no CUDA GPU is visible; use device: auto or cpu")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


class Trainer:
    """One run of one variant. Plain PyTorch: wrappers watch it through ``on_epoch_end``.

    Data-parallel when a ``torch.distributed`` process group of several ranks is initialised (whoever
    started the processes): every rank plans the same global epoch (``workers x batch_size`` per step),
    trains its share, averages gradients and merges the epoch's outcome (``distributed.py``); only rank
    0 writes history, record and checkpoint, and every rank calls ``on_epoch_end``.
    """

    data_parallel = True  # takes a process group (orchestrate refuses workers > 1 without it)

    def __init__(
        self,
        cfg: RunConfig,
        on_epoch_end: Callable[[dict], None] | None = None,
        trial_id: str | None = None,
        labels: dict | None = None,
        checkpoint_dir: str | Path | None = None,
    ):
        self.cfg = cfg
        self.variant = resolve_variant(cfg.variant, cfg.operator)
        self.on_epoch_end = on_epoch_end
        self.trial_id = trial_id or cfg.trial_id or default_trial_id(cfg)
        self.labels = labels or {"variant": cfg.variant, "model": cfg.model}
        self.world, self.main = distributed.world_size(), distributed.is_main()
        self.global_batch = cfg.batch_size * self.world  # inputs per (global) step, planned on every rank
        self.device = distributed.local_device(pick_device(cfg.device))
        cuda = self.device.type == "cuda"
        self.amp_dtype = {"auto": torch.bfloat16 if cuda else None, "fp32": None, "bf16": torch.bfloat16,
                          "fp16": torch.float16}[cfg.precision]
        self.channels_last = cfg.channels_last if cfg.channels_last is not None else cuda

        torch.manual_seed(cfg.seed)
        self.data = load_dataset(cfg.dataset, cfg.seed)
        self.model = create_model(cfg.model, self.data.num_classes, self.data.image_shape, cfg.model_width)
        self._check_grid()
        if cfg.sync_batchnorm and self.world > 1:
            self.model = distributed.convert_batchnorm(self.model)
        self.model.to(self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        distributed.broadcast_parameters(self.model)  # identical start on every rank
        self.optimizer = make_optimizer(self.model, cfg)
        self.scaler = torch.amp.GradScaler("cuda", enabled=cuda and self.amp_dtype == torch.float16)
        self.source = make_source(
            self.data, self.device, cfg.dataset.augment, self.channels_last, cfg.dataset.device_resident,
            cfg.dataset.num_workers, cfg.pin_memory,
        )
        n = self.data.num_train
        self.policy = AmenabilityPolicy(self.variant.rule, n, cfg.k, self.device, cfg.policy.averaging,
                                        cfg.policy.ema_decay)
        self.labels_dev = torch.from_numpy(self.data.train_labels).to(self.device)
        self.generators = {
            "plan": torch.Generator().manual_seed(cfg.seed * 7919 + 1),
            "device": torch.Generator(self.device).manual_seed(cfg.seed * 7919 + 2),
        }
        self.root = storage_root(cfg.storage.root)
        self.history = HistoryWriter(self.root, cfg.name, self.trial_id)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else self.history.sweep_dir / "checkpoints" / self.trial_id
        self.epoch_rows: list[dict] = []
        self.start_epoch = 0
        self.total_seconds = 0.0
        self._plan_rng = None  # the plan generator before the next plan was built early (prefetch_next)

        self.strategy = make_strategy(self.variant.strategy, self)
        if self.world > 1 and not self.strategy.data_parallel:
            raise ConfigError(f"variant {cfg.variant!r}: its strategy {self.variant.strategy!r} does not train "
                              "with workers > 1 yet; use workers: 1")
        mode = compile_mode(cfg.compile, self.device, cfg.grad_accum)
        average = (lambda: distributed.average_gradients(self.model.parameters())) if self.world > 1 else None
        self.step = TrainStep(self.model, self.optimizer, self.scaler, self.strategy.step_spec(), cfg.batch_size,
                              cfg.grad_accum, mode, reduce_gradients=average)
        # evaluation (and Selective-Backprop's selecting pass) use the compiled module on CUDA
        self.forward_model = torch.compile(self.model) if mode is not None and cuda else self.model

    # ------------------------------------------------------------------ set-up checks
    def _check_grid(self) -> None:
        """CutMix needs images that tile the model's feature grid. (Models without a feature map are refused
        with CutMix by the configuration's validation already.)"""
        if self.variant.operator != "cutmix":
            return
        _, h, w = self.data.image_shape
        stride = self.model.feature_stride
        if h % stride or w % stride:
            raise ConfigError(
                f"model {self.cfg.model!r}: images of {w}x{h} do not tile its {stride}-pixel feature grid, "
                "which CutMix needs; use an image size that is a multiple of it"
            )

    @property
    def final_nomix_fraction(self) -> float:
        v = self.variant.final_nomix_fraction
        return self.cfg.policy.final_nomix_fraction if v is None else v

    def method_choices(self) -> dict:
        """Every choice this run makes where METHOD.md is silent (the trial record's ``method``)."""
        choices = {"rule": self.variant.rule, "strategy": self.variant.strategy, **METHOD_CHOICES}
        if self.variant.rule in ("none", "naive"):
            choices = {k: v for k, v in choices.items() if not k.startswith("policy_")}
        return {**choices, **self.strategy.method_choices()}

    # ------------------------------------------------------------------ state
    def state_dict(self, next_epoch: int) -> dict:
        rng = rng_state(self.generators)
        if self._plan_rng is not None:  # the next plan was built early (prefetch_next)
            rng["plan"] = self._plan_rng
        return {
            "next_epoch": next_epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "policy": self.policy.state_dict(),
            "rng": rng,
            "epoch_rows": self.epoch_rows,
            "total_seconds": self.total_seconds,
            "strategy": self.strategy.state_dict(),
            "trial_id": self.trial_id,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.policy.load_state_dict(state["policy"])
        restore_rng(self.generators, state["rng"])
        self.epoch_rows = list(state["epoch_rows"])
        self.total_seconds = state["total_seconds"]
        self.start_epoch = state["next_epoch"]
        if state.get("strategy"):
            self.strategy.load_state_dict(state["strategy"])

    def resume(self, checkpoint: str | Path | None = None) -> bool:
        """Restore from ``checkpoint`` (a file or folder; default: this trial's own). False if none."""
        state = load_checkpoint(checkpoint or self.checkpoint_dir)
        if state is None:
            return False
        self.load_state_dict(state)
        return True

    # ------------------------------------------------------------------ the run
    def warm_up(self) -> float:
        """Compile the step before the first epoch (its time is ``compile_seconds``, not an epoch's)."""
        if not self.step.is_compiled or self.data.num_train < self.cfg.batch_size:
            return 0.0
        n, b = self.data.num_train, self.cfg.batch_size
        plan = plan_epoch(torch.zeros(n, dtype=torch.bool), b, torch.Generator().manual_seed(0),
                          skip=torch.arange(n) >= b)
        throwaway = torch.Generator(self.device).manual_seed(0)
        first, _, _, x, _ = next(iter(self.source.epoch_batches(plan.to(self.device), throwaway)))
        return self.step.warm_up(self.step.singles_batch(x, self.labels_dev[first]))

    def fit(self, resume: bool | str | Path = False) -> dict:
        """Train all epochs (from the checkpoint when ``resume``); returns the final metrics."""
        if resume:
            self.resume(None if resume is True else resume)
        if self.main:
            self.history.drop_epochs_from(self.start_epoch)  # a crash may have left a later epoch behind
        record = {
            "trial_id": self.trial_id, "sweep": self.cfg.name, "variant": self.cfg.variant,
            "labels": self.labels, "config": self.cfg.model_dump(), "status": "running",
            "num_train": self.data.num_train, "num_test": len(self.data.test_labels),
            "device": str(self.device), "started_epoch": self.start_epoch,
            "method": self.method_choices(), "workers": self.world,
        }
        self._write_trial(record)
        try:
            if self.start_epoch < self.cfg.trained_epochs:
                self.warm_up()
            record["step"] = {"compiled": self.step.is_compiled, "compile_mode": self.step.mode,
                              "compile_seconds": self.step.compile_seconds}
            for epoch in range(self.start_epoch, self.cfg.trained_epochs):
                self.run_epoch(epoch)
        except NonFiniteLossError as err:
            self._write_trial({**record, "status": "failed", "error": str(err), "retry": False})
            raise
        except BaseException as err:
            self._write_trial({**record, "status": "failed", "error": f"{type(err).__name__}: {err}"})
            raise
        final = self.final_metrics()
        self._write_trial({**record, "status": "done", "final": final})
        return final

    def _write_trial(self, record: dict) -> None:
        if self.main:  # rank 0 writes for the whole process group
            self.history.write_trial(record)

    def final_metrics(self) -> dict:
        last = self.epoch_rows[-1] if self.epoch_rows else {}
        return {
            "final_test_acc": last.get("test_acc"),
            "final_test_top5": last.get("test_top5"),
            "total_train_seconds": self.total_seconds,
            "total_inputs": int(sum(r["n_inputs"] for r in self.epoch_rows)),
            "total_forward": int(sum(r.get("n_forward") or 0 for r in self.epoch_rows)),
            "epochs": len(self.epoch_rows),
            "compile_seconds": self.step.compile_seconds,
        }

    def run_epoch(self, epoch: int) -> None:
        """Train, decide, evaluate and record epoch ``epoch`` (``fit`` runs them all in order)."""
        dbg = self.cfg.debug
        if dbg.crash_once_at_epoch == epoch:
            marker = self.history.sweep_dir / "debug" / f"{self.trial_id}.crashed-{epoch}"
            if not marker.exists():
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.touch()
                raise RuntimeError(f"injected crash at epoch {epoch} (debug.crash_once_at_epoch)")
        if dbg.sleep_per_epoch:
            time.sleep(dbg.sleep_per_epoch)
        usage = resources.EpochUsage(self.device)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        if self.world > 1:  # each rank's own augmentation / CutMix draws, recomputable on resume
            self.generators["device"].manual_seed(distributed.rank_seed(self.cfg.seed, epoch))
        out = self.strategy.train_epoch(epoch)
        if dbg.kill_rank_once_at_epoch == epoch and distributed.rank() == self.world - 1 > 0:
            self._kill_once(epoch)
        out = distributed.combine_outcome(out)  # one collective; the identity in a one-process run
        out.check_finite(epoch)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        train_seconds = time.perf_counter() - t0
        self.total_seconds += train_seconds

        t1 = time.perf_counter()
        n = self.data.num_train
        loss = out.rows("loss")
        observed = ~torch.isnan(loss)  # skipped samples have no new loss: carry the last one
        loss = torch.where(observed, loss, self.policy.last_loss)
        region, th = self.policy.step(loss, out.rows("correct"), out.rows("mixed"), observed)
        if self.world > 1:  # every rank must take the same S_mix decision: checked, not assumed
            distributed.check_same(self.policy.state_dict(), f"epoch {epoch}: policy state")
        self.prefetch_next(epoch + 1)
        policy_seconds = time.perf_counter() - t1
        test_acc, test_top5, test_loss = self.evaluate()

        t2 = time.perf_counter()
        host = {  # the one host copy of per-sample state per epoch
            "loss": loss.float(), "correct": out.rows("correct"), "mixed": out.rows("mixed"),
            "partner": out.rows("partner"), "weight": out.rows("weight").float(), "region": region,
            "mix_next": self.policy.mix_next, "skip_next": self.policy.skip_next, "path": self.policy.path,
            "skipped": out.skipped,
        }
        host = {k: v.cpu().numpy() for k, v in host.items()}
        ids = self.data.train_ids
        partner_ids = np.where(host["partner"] >= 0, ids[np.maximum(host["partner"], 0)], -1)
        columns = {
            "sample_id": ids, "loss": host["loss"], "correct": host["correct"], "mixed": host["mixed"],
            "partner_id": partner_ids, "weight": host["weight"], "region": host["region"],
            "mix_next": host["mix_next"], "mix_path": PATH_LOOKUP[host["path"]],  # skip-region3: path region3, not in S_mix
            "skipped": host["skipped"],
        }
        if self.main:
            self.history.write_samples(epoch, columns)
        sums = out.sums.cpu().tolist()  # [loss sum over inputs, inputs, correct samples, samples]
        th_host = [th.l_corr.item(), th.l_incorr.item(), th.l_mid.item()]
        path = host["path"]
        row = {
            "epoch": epoch,
            "l_corr": _finite_or_none(th_host[0]), "l_incorr": _finite_or_none(th_host[1]),
            "l_mid": _finite_or_none(th_host[2]),
            "n_samples": n, "n_mixed": int(host["mixed"].sum()), "n_inputs": out.n_inputs,
            "n_forward": out.n_forward,
            "n_skipped": int(host["skipped"].sum()), "n_mix_next": int(host["mix_next"].sum()),
            "n_next_region1": int(((path == PATH_REGION1) & host["mix_next"]).sum()),
            "n_next_region3": int(((path == PATH_REGION3) & host["mix_next"]).sum()),  # entrants into S_mix only
            "n_next_skip": int(host["skip_next"].sum()),
            "frac_mixed": float(host["mixed"].sum()) / n,
            "train_loss": sums[0] / max(sums[1], 1), "train_acc": sums[2] / max(sums[3], 1),
            "test_acc": test_acc, "test_top5": test_top5, "test_loss": test_loss,
            "epoch_seconds": train_seconds, "policy_seconds": policy_seconds,
            "lr": out.lr,
            **usage.finish(),
        }
        self.epoch_rows.append(row)
        row["history_seconds"] = time.perf_counter() - t2
        if self.main:
            self.history.write_epochs(self.epoch_rows)
            save_checkpoint(self.state_dict(next_epoch=epoch + 1), self.checkpoint_dir)
        if self.on_epoch_end:
            self.on_epoch_end({**row, "total_train_seconds": self.total_seconds,
                               "checkpoint_dir": str(self.checkpoint_dir), "trial_id": self.trial_id})

    def prefetch_next(self, epoch: int) -> None:
        """A streamed source starts reading ``epoch``'s batches now (while this epoch is evaluated and
        recorded): its plan is built here, after the policy decided it, and trained on next. The checkpoint
        keeps the plan generator as it was before, so a resume builds the same plan again."""
        self._plan_rng = None
        if not hasattr(self.source, "prefetch") or epoch >= self.cfg.trained_epochs:
            return
        rng = self.generators["plan"].get_state()
        plan = self.strategy.plan_ahead(epoch)
        if plan is not None:
            self._plan_rng = rng
            self.source.prefetch(plan)

    def _kill_once(self, epoch: int) -> None:
        """debug.kill_rank_once_at_epoch: this process dies by SIGKILL (no clean-up), once per trial."""
        marker = self.history.sweep_dir / "debug" / f"{self.trial_id}.killed-{epoch}"
        if not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float, float]:
        """Top-1, top-5 and mean loss on the test split: sums on the device, one host copy."""
        self.model.eval()
        totals = torch.zeros(4, dtype=torch.float64, device=self.device)
        share = distributed.shard(len(self.data.test_labels))  # this rank's part of the test split
        for x, y in self.source.eval_batches(self.cfg.eval_batch_size, share):
            with autocast(self.device.type, self.amp_dtype):
                logits = self.forward_model(x)
            logits = logits.float()
            totals[:3] += torch.stack([
                topk_hit(logits, y, 1).sum().double(), topk_hit(logits, y, 5).sum().double(),
                F.cross_entropy(logits, y, reduction="sum").double(),
            ])
            totals[3] += y.shape[0]  # a python number: a kernel argument, no host-to-device copy
        top1, top5, loss, n = distributed.all_reduce_sum(totals).cpu().tolist()
        return top1 / n, top5 / n, loss / n


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
