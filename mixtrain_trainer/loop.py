"""The training loop: ``Trainer.fit`` runs epochs of planned inputs, one policy decision and one history
write per epoch.

Per epoch: plan (S_mix pairs + singles) -> mini-batches -> forward (split or shared pooling) ->
mixTrain loss -> backward -> per-sample losses into device tensors indexed by sample position. At the
end of the epoch, one host copy: the policy decides S_mix for the next epoch, the history is written,
the checkpoint saved and ``on_epoch_end(metrics)`` called. No ``.item()`` inside the epoch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mixtrain_trainer import mixing
from mixtrain_trainer.checkpoint import load_checkpoint, restore_rng, rng_state, save_checkpoint
from mixtrain_trainer.config import RunConfig
from mixtrain_trainer.data import load_dataset
from mixtrain_trainer.data.loader import make_source
from mixtrain_trainer.errors import ConfigError, NonFiniteLossError
from mixtrain_trainer.history import HistoryWriter, storage_root
from mixtrain_trainer.models import create_model
from mixtrain_trainer.policy import PATH_NAMES, PATH_REGION1, PATH_REGION3, AmenabilityPolicy
from mixtrain_trainer.sampler import plan_epoch
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


def learning_rate(cfg: RunConfig, progress: float) -> float:
    """LR at ``progress`` epochs into the run. The schedule spans the trained epochs (budget-scaled)."""
    total = cfg.trained_epochs
    base = cfg.optimizer.lr
    s = cfg.schedule
    warm = min(1.0, (progress + 1e-9) / s.warmup_epochs) if s.warmup_epochs else 1.0
    if s.kind == "cosine":
        return base * warm * 0.5 * (1 + math.cos(math.pi * min(progress / total, 1.0)))
    if s.kind == "step":
        return base * warm * s.gamma ** math.floor(progress / (s.step_epochs * cfg.budget) + 1e-9)
    return base * warm


class Trainer:
    """One run of one variant. Plain PyTorch: wrappers watch it through ``on_epoch_end``."""

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
        self.device = pick_device(cfg.device)
        cuda = self.device.type == "cuda"
        self.amp_dtype = {"auto": torch.bfloat16 if cuda else None, "fp32": None, "bf16": torch.bfloat16,
                          "fp16": torch.float16}[cfg.precision]
        self.channels_last = cfg.channels_last if cfg.channels_last is not None else cuda

        torch.manual_seed(cfg.seed)
        self.data = load_dataset(cfg.dataset, cfg.seed)
        self.model = create_model(cfg.model, self.data.num_classes, self.data.image_shape, cfg.model_width)
        self._check_compatible()
        self.model.to(self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.forward_model = torch.compile(self.model) if cfg.compile else self.model
        decay, no_decay = [], []
        for p in self.model.parameters():
            (no_decay if p.ndim <= 1 else decay).append(p)  # no weight decay on norms and biases
        o = cfg.optimizer
        self.optimizer = torch.optim.SGD(
            [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
        )
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
        if self.variant.rival in ("selective-backprop", "stale-sb"):
            from mixtrain_trainer.rivals.selective_backprop import SelectiveBackprop

            self.rival = SelectiveBackprop(self, stale=self.variant.rival == "stale-sb")
        else:
            self.rival = None

    # ------------------------------------------------------------------ set-up checks
    def _check_compatible(self) -> None:
        v = self.variant
        if v.operator == "cutmix" and not self.model.can_split:
            what = "split propagation" if v.split else "grid-aligned CutMix"
            raise ConfigError(
                f"model {self.cfg.model!r} gives no feature map, which {what} ({self.cfg.variant}) needs; "
                "choose a CNN or ViT model, or a MixUp variant"
            )
        if v.operator == "cutmix":
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

    # ------------------------------------------------------------------ state
    def state_dict(self, next_epoch: int) -> dict:
        return {
            "next_epoch": next_epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "policy": self.policy.state_dict(),
            "rng": rng_state(self.generators),
            "epoch_rows": self.epoch_rows,
            "total_seconds": self.total_seconds,
            "rival": self.rival.state_dict() if self.rival else None,
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
        if self.rival and state.get("rival"):
            self.rival.load_state_dict(state["rival"])

    def resume(self, checkpoint: str | Path | None = None) -> bool:
        """Restore from ``checkpoint`` (a file or folder; default: this trial's own). False if none."""
        state = load_checkpoint(checkpoint or self.checkpoint_dir)
        if state is None:
            return False
        self.load_state_dict(state)
        return True

    # ------------------------------------------------------------------ the run
    def fit(self, resume: bool | str | Path = False) -> dict:
        """Train all epochs (from the checkpoint when ``resume``); returns the final metrics."""
        if resume:
            self.resume(None if resume is True else resume)
        self.history.drop_epochs_from(self.start_epoch)  # a crash may have left a later epoch behind
        record = {
            "trial_id": self.trial_id, "sweep": self.cfg.name, "variant": self.cfg.variant,
            "labels": self.labels, "config": self.cfg.model_dump(), "status": "running",
            "num_train": self.data.num_train, "num_test": len(self.data.test_labels),
            "device": str(self.device), "started_epoch": self.start_epoch,
        }
        self.history.write_trial(record)
        try:
            for epoch in range(self.start_epoch, self.cfg.trained_epochs):
                self._run_epoch(epoch)
        except NonFiniteLossError as err:
            self.history.write_trial({**record, "status": "failed", "error": str(err), "retry": False})
            raise
        except BaseException as err:
            self.history.write_trial({**record, "status": "failed", "error": f"{type(err).__name__}: {err}"})
            raise
        final = self.final_metrics()
        self.history.write_trial({**record, "status": "done", "final": final})
        return final

    def final_metrics(self) -> dict:
        last = self.epoch_rows[-1] if self.epoch_rows else {}
        return {
            "final_test_acc": last.get("test_acc"),
            "final_test_top5": last.get("test_top5"),
            "total_train_seconds": self.total_seconds,
            "total_inputs": int(sum(r["n_inputs"] for r in self.epoch_rows)),
            "epochs": len(self.epoch_rows),
        }

    def _run_epoch(self, epoch: int) -> None:
        dbg = self.cfg.debug
        if dbg.crash_once_at_epoch == epoch:
            marker = self.history.sweep_dir / "debug" / f"{self.trial_id}.crashed-{epoch}"
            if not marker.exists():
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.touch()
                raise RuntimeError(f"injected crash at epoch {epoch} (debug.crash_once_at_epoch)")
        if dbg.sleep_per_epoch:
            time.sleep(dbg.sleep_per_epoch)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        outcome = self.rival.train_epoch(epoch) if self.rival else self.train_epoch(epoch)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        train_seconds = time.perf_counter() - t0
        self.total_seconds += train_seconds

        t1 = time.perf_counter()
        observed = ~torch.isnan(outcome["loss"])  # skipped samples have no new loss: carry the last one
        loss = torch.where(observed, outcome["loss"], self.policy.last_loss)
        region, th = self.policy.step(loss, outcome["correct"], outcome["mixed"], observed)
        policy_seconds = time.perf_counter() - t1
        test_acc, test_top5, test_loss = self.evaluate()

        t2 = time.perf_counter()
        host = {  # the one host copy of per-sample state per epoch
            "loss": loss.float(), "correct": outcome["correct"], "mixed": outcome["mixed"],
            "partner": outcome["partner"], "weight": outcome["weight"].float(), "region": region,
            "mix_next": self.policy.mix_next, "path": self.policy.path,  # skip-region3: path region3, not in S_mix
            "skipped": outcome["skipped"],
        }
        host = {k: v.cpu().numpy() for k, v in host.items()}
        ids = self.data.train_ids
        partner_ids = np.where(host["partner"] >= 0, ids[np.maximum(host["partner"], 0)], -1)
        self.history.write_samples(epoch, {
            "sample_id": ids, "loss": host["loss"], "correct": host["correct"], "mixed": host["mixed"],
            "partner_id": partner_ids, "weight": host["weight"], "region": host["region"],
            "mix_next": host["mix_next"], "mix_path": PATH_LOOKUP[host["path"]],
            "skipped": host["skipped"],
        })
        n = self.data.num_train
        sums = outcome["sums"].cpu().tolist()  # [loss sum over inputs, inputs, correct samples, samples]
        th_host = [th.l_corr.item(), th.l_incorr.item(), th.l_mid.item()]
        row = {
            "epoch": epoch,
            "l_corr": _finite_or_none(th_host[0]), "l_incorr": _finite_or_none(th_host[1]),
            "l_mid": _finite_or_none(th_host[2]),
            "n_samples": n, "n_mixed": int(host["mixed"].sum()), "n_inputs": outcome["n_inputs"],
            "n_skipped": int(host["skipped"].sum()), "n_mix_next": int(host["mix_next"].sum()),
            "n_next_region1": int((host["path"] == PATH_REGION1).sum()),
            "n_next_region3": int((host["path"] == PATH_REGION3).sum()),
            "frac_mixed": float(host["mixed"].sum()) / n,
            "train_loss": sums[0] / max(sums[1], 1), "train_acc": sums[2] / max(sums[3], 1),
            "test_acc": test_acc, "test_top5": test_top5, "test_loss": test_loss,
            "epoch_seconds": train_seconds, "policy_seconds": policy_seconds,
            "lr": outcome["lr"],
        }
        self.epoch_rows.append(row)
        row["history_seconds"] = time.perf_counter() - t2
        self.history.write_epochs(self.epoch_rows)
        save_checkpoint(self.state_dict(next_epoch=epoch + 1), self.checkpoint_dir)
        if self.on_epoch_end:
            self.on_epoch_end({**row, "total_train_seconds": self.total_seconds,
                               "checkpoint_dir": str(self.checkpoint_dir), "trial_id": self.trial_id})

    # ------------------------------------------------------------------ one epoch of mixTrain (or a baseline)
    def mix_set(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(S_mix, skipped) for this epoch, on the CPU: the one host read of the policy's decision."""
        n = self.data.num_train
        none = torch.zeros(n, dtype=torch.bool)
        if self.variant.rule == "none":
            return none, none
        if epoch >= self.cfg.trained_epochs * (1 - self.final_nomix_fraction) and self.final_nomix_fraction > 0:
            return none, none
        if self.variant.rule == "naive":
            return ~none, none
        return self.policy.mix_next.cpu(), self.policy.skip_next.cpu()

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def new_epoch_buffers(self) -> dict:
        n, dev = self.data.num_train, self.device
        return {
            "loss": torch.full((n,), float("nan"), device=dev),
            "correct": torch.zeros(n, dtype=torch.bool, device=dev),
            "mixed": torch.zeros(n, dtype=torch.bool, device=dev),
            "partner": torch.full((n,), -1, dtype=torch.long, device=dev),
            "weight": torch.ones(n, device=dev),
            "sums": torch.zeros(4, dtype=torch.float64, device=dev),
            "bad_step": torch.full((), -1, dtype=torch.long, device=dev),
        }

    def optimizer_step(self, loss: torch.Tensor, step: int, num_batches: int, progress: float) -> float:
        """Backward of one mini-batch; an optimizer step every ``grad_accum`` batches. Returns the LR."""
        accum = self.cfg.grad_accum
        self.scaler.scale(loss / accum).backward()
        lr = learning_rate(self.cfg, progress)
        if (step + 1) % accum == 0 or step + 1 == num_batches:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
        return lr

    def train_epoch(self, epoch: int) -> dict:
        cfg, v = self.cfg, self.variant
        self.model.train()
        mix, skip = self.mix_set(epoch)
        drop = cfg.rival.skip_fraction if v.rival == "minibatch-skip" else 0.0
        plan = plan_epoch(mix, cfg.batch_size, self.generators["plan"], skip=skip, drop_batches=drop).to(self.device)
        buf = self.new_epoch_buffers()
        scale = cfg.rival.scale if v.rival == "input-scaling" else None
        stride = self.model.feature_stride
        nan_epoch = cfg.debug.nonfinite_at_epoch == epoch
        lr = learning_rate(cfg, epoch)
        gen = self.generators["device"]
        for step, (first, second, n_s, x1, x2) in enumerate(self.source.epoch_batches(plan, gen)):
            singles, c1 = x1[:n_s], x1[n_s:]
            ids_s, ids1, ids2 = first[:n_s], first[n_s:], second
            p = ids1.shape[0]
            mask = None
            if p and v.operator == "cutmix":
                _, h, w = self.data.image_shape
                mask = mixing.half_grid_masks(p, (h // stride, w // stride), gen, self.device)
                r = mixing.mask_ratio(mask)
                composites = mixing.cutmix(c1, x2, mask, stride)
            elif p:
                if v.adaptive:
                    r = mixing.adaptive_ratio(self.policy.last_loss[ids1], self.policy.last_loss[ids2])
                else:
                    r = torch.full((p,), 0.5, device=self.device)
                composites = mixing.mixup(c1, x2, r)
            else:
                r, composites = torch.zeros(0, device=self.device), c1
            if scale is not None:
                singles, composites = (_downscale(t, scale) for t in (singles, composites))
            with self.autocast():
                out_s, out1, out2 = mixing.composite_outputs(self.forward_model, singles, composites, mask, v.split)
            loss, parts = mixing.mixed_batch_loss(
                out_s, self.labels_dev[ids_s], out1, self.labels_dev[ids1], out2, self.labels_dev[ids2], r, v.split
            )
            if nan_epoch:
                loss = loss * float("nan")
            record_batch(buf, step, loss, ids_s, ids1, ids2, r, parts)
            lr = self.optimizer_step(loss, step, plan.num_batches, epoch + step / max(plan.num_batches, 1))
        bad = int(buf["bad_step"])
        if bad >= 0:
            raise NonFiniteLossError(epoch, bad)
        return {**buf, "skipped": plan.skipped.to(self.device), "n_inputs": plan.num_inputs, "lr": lr}

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float, float]:
        """Top-1, top-5 and mean loss on the test split: sums on the device, one host copy."""
        self.model.eval()
        totals = torch.zeros(4, dtype=torch.float64, device=self.device)
        for x, y in self.source.eval_batches(self.cfg.eval_batch_size):
            with self.autocast():
                logits = self.forward_model(x)
            logits = logits.float()
            totals += torch.stack([
                mixing.topk_hit(logits, y, 1).sum().double(), mixing.topk_hit(logits, y, 5).sum().double(),
                F.cross_entropy(logits, y, reduction="sum").double(), torch.tensor(float(y.numel()), device=self.device),
            ])
        top1, top5, loss, n = totals.cpu().tolist()
        return top1 / n, top5 / n, loss / n


def record_batch(buf: dict, step: int, loss, ids_s, ids1, ids2, r, parts) -> None:
    """Store a mini-batch's per-sample outcome in the epoch's device tensors (no host sync)."""
    buf["loss"][ids_s] = parts["single_loss"]
    buf["correct"][ids_s] = parts["single_correct"]
    if ids1.numel():
        buf["loss"][ids1], buf["loss"][ids2] = parts["loss1"], parts["loss2"]
        buf["correct"][ids1], buf["correct"][ids2] = parts["correct1"], parts["correct2"]
        buf["mixed"][ids1] = True
        buf["mixed"][ids2] = True
        buf["partner"][ids1], buf["partner"][ids2] = ids2, ids1
        buf["weight"][ids1], buf["weight"][ids2] = r.float(), (1 - r).float()
    inputs = ids_s.numel() + ids1.numel()
    samples = ids_s.numel() + 2 * ids1.numel()
    correct = parts["single_correct"].sum() + parts["correct1"].sum() + parts["correct2"].sum()
    sums = buf["sums"]  # python scalars go in as kernel arguments: no host-device copies, no sync
    sums[0] += loss.detach().double() * inputs
    sums[1] += inputs
    sums[2] += correct
    sums[3] += samples
    buf["bad_step"] = torch.where((buf["bad_step"] < 0) & ~torch.isfinite(loss.detach()), step, buf["bad_step"])


def _downscale(x: torch.Tensor, scale: float) -> torch.Tensor:
    if x.shape[0] == 0:  # an empty batch (no composites) must still get the scaled size: it is concatenated
        h, w = (math.floor(side * scale) for side in x.shape[-2:])
        return x.new_zeros((0, x.shape[1], h, w))
    return F.interpolate(x, scale_factor=scale, mode="bilinear", antialias=True, align_corners=False)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
