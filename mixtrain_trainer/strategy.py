"""Epoch strategies: how one epoch is trained, by name. mixTrain's own (``mixing``) lives here; the rivals
live in ``rivals/``, one module each, registered the same way.

The interface. A strategy is a class registered with ``@register_strategy("name")``; a variant names it
in ``variants.Variant.strategy`` (its ``rival``, else ``"mixing"``). The trainer builds it once:

    strategy = STRATEGIES[name](trainer)
    strategy.step_spec() -> step.StepSpec        what the run's one train step does (operator, split,
                                                  input transform); the trainer compiles the step from it
    strategy.train_epoch(epoch) -> outcome.Outcome
        trains one epoch through ``trainer.step.train_step`` (never its own backward or optimizer call),
        records every sample's row with ``outcome.record_batch`` / ``record_forward``, and returns the
        Outcome with ``skipped``, ``n_inputs``, ``n_forward`` and ``lr`` set. No host sync inside the
        epoch unless the method needs one (Selective-Backprop's "is a full batch selected?").
    strategy.plan_ahead(epoch) -> EpochPlan | None  builds ``epoch``'s plan now (on the device), right after
                                                  the policy decided it, and trains on that very plan
                                                  next; None: this strategy plans inside its epoch
    strategy.state_dict() / load_state_dict(state)  what a resumed run needs besides model and policy
    strategy.method_choices() -> dict              choices the run made where METHOD.md is silent
                                                  (written to the trial record under ``method``)

What the trainer offers a strategy: ``cfg``, ``variant``, ``data`` (num_train, image_shape),
``device``, ``model`` / ``forward_model`` (compiled for evaluation when the step is), ``source``
(``epoch_batches(plan, generator)``), ``policy`` (S_mix, skips, last losses), ``labels_dev``,
``generators`` ("plan" on the CPU, "device" on the training device), ``step`` (the TrainStep) and
``final_nomix_fraction``.

Per-sample loss weights: ``MixingStrategy.slot_weights(epoch, first)`` returns the (B,) loss weight of
each slot's first constituent (None: all 1). A rival that reweights samples (InfoBatch: 1 / (1 - r) for
the kept low-loss samples) overrides it and ``mix_set`` (its pruned samples are ``skipped``), and trains
through the same fixed-shape step; the weights land in the history's ``weight`` column.
"""

from __future__ import annotations

import torch

from mixtrain_trainer import distributed
from mixtrain_trainer.mixing import OPERATORS, adaptive_ratio, mask_ratio, pair_masks
from mixtrain_trainer.outcome import Outcome, record_batch
from mixtrain_trainer.sampler import EpochPlan, plan_epoch
from mixtrain_trainer.schedule import learning_rate
from mixtrain_trainer.step import PairBatch, StepSpec

STRATEGIES: dict[str, type] = {}


def register_strategy(name: str):
    """Register an epoch strategy class under ``name``; a second one of the same name is refused."""

    def wrap(cls):
        if name in STRATEGIES:
            raise ValueError(f"epoch strategy {name!r} is already registered")
        cls.name = name
        STRATEGIES[name] = cls
        return cls

    return wrap


def make_strategy(name: str, trainer):
    import mixtrain_trainer.rivals  # noqa: F401  (registers the rivals' strategies)

    if name not in STRATEGIES:
        raise ValueError(f"unknown epoch strategy {name!r}; choose one of {', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[name](trainer)


class EpochStrategy:
    """Base class: state-free by default; helpers to build pair batches for the step."""

    name = ""
    data_parallel = True  # trains with workers > 1 (its per-sample state merges through the outcome)

    def __init__(self, trainer):
        self.t = trainer

    def step_spec(self) -> StepSpec:
        t = self.t
        return StepSpec(amp_dtype=t.amp_dtype, device_type=t.device.type)

    def train_epoch(self, epoch: int) -> Outcome:
        raise NotImplementedError

    def plan_ahead(self, epoch: int) -> EpochPlan | None:
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def method_choices(self) -> dict:
        return {}

    def singles(self, x: torch.Tensor, ids: torch.Tensor, w: torch.Tensor | None = None, spare: int = 0):
        """A pair batch of singles only (x, x) for positions ``ids``: (PairBatch, ids2 = the spare row)."""
        b = ids.shape[0]
        y = self.t.labels_dev[ids]
        ones = torch.ones(b, device=x.device)
        batch = PairBatch(x1=x, x2=None, mask=None, r=ones, y1=y, y2=y, w=ones if w is None else w,
                          composite=torch.zeros(b, dtype=torch.bool, device=x.device))
        return batch, torch.full((b,), spare, dtype=torch.long, device=x.device)


@register_strategy("mixing")
class MixingStrategy(EpochStrategy):
    """mixTrain and its ablations (and the baseline): plan S_mix pairs + singles, train each batch of
    pairs through the step. The variant's operator, split propagation and adaptive ratio are fixed for
    the run; the selection rule lives in the policy."""

    def __init__(self, trainer):
        super().__init__(trainer)
        self._ahead = None  # (epoch, plan) built by plan_ahead
        v = trainer.variant
        self.operator = OPERATORS[v.operator] if v.operator else None
        if self.operator is not None and self.operator.grid_mask:
            _, h, w = trainer.data.image_shape
            stride = trainer.model.feature_stride
            self.grid = (h // stride, w // stride)

    def step_spec(self) -> StepSpec:
        t, v = self.t, self.t.variant
        return StepSpec(operator=v.operator, split=v.split, stride=t.model.feature_stride,
                        transform=self.input_transform(), amp_dtype=t.amp_dtype, device_type=t.device.type)

    def input_transform(self):
        return None

    def method_choices(self) -> dict:
        v = self.t.variant
        if self.operator is None:
            return {}
        out = {"operator": v.operator}
        if self.operator.grid_mask:
            out["cutmix_box"] = "a random left/right/top/bottom half of the feature grid"
            out["odd_grid_r"] = "the half is rounded down (r = its exact share of cells, below 0.5)"
            out["split_propagation"] = v.split
        else:
            out["mixup_ratio"] = "adaptive L1/(L1+L2), 0.5 without a loss" if v.adaptive else "0.5"
        out["unsplit_correct"] = "top-2 of the shared output" if not v.split else "argmax per constituent"
        return out

    # ------------------------------------------------------------------ what is trained
    def mix_set(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(S_mix, skipped) for this epoch, on the CPU: the one host read of the policy's decision."""
        t = self.t
        n = t.data.num_train
        none = torch.zeros(n, dtype=torch.bool)
        rule = t.variant.rule
        if rule == "none":
            return none, none
        fraction = t.final_nomix_fraction
        if fraction > 0 and epoch >= t.cfg.trained_epochs * (1 - fraction):
            return none, none
        if rule == "naive":
            return ~none, none
        return t.policy.mix_next.cpu(), t.policy.skip_next.cpu()

    def plan(self, epoch: int) -> EpochPlan:
        mix, skip = self.mix_set(epoch)
        return plan_epoch(mix, self.t.global_batch, self.t.generators["plan"], skip=skip)

    def plan_ahead(self, epoch: int) -> EpochPlan:
        plan = self.plan(epoch)  # the global plan (the same on every rank of a data-parallel run)
        mine = distributed.shard_plan(plan, self.t.cfg.batch_size)  # this rank's share (all of it alone)
        self._ahead = (epoch, plan, mine.to(self.t.device))
        return self._ahead[2]

    def epoch_plan(self, epoch: int) -> tuple[EpochPlan, EpochPlan]:
        """(the global plan, this rank's share of it on the device) built by ``plan_ahead(epoch)``, else
        new ones."""
        if self._ahead is None or self._ahead[0] != epoch:
            self.plan_ahead(epoch)
        (_, plan, mine), self._ahead = self._ahead, None
        return plan, mine

    def slot_weights(self, epoch: int, first: torch.Tensor) -> torch.Tensor | None:
        """The loss weight of each slot (B,), or None for 1 everywhere."""
        return None

    def pair_batch(self, epoch: int, first, second, n_single: int, x1, x2c, spare: int):
        """Fixed-shape slots from a planned batch: (PairBatch, ids2). ``second`` / ``x2c`` cover the
        composites (the last B - n_single slots); a single's second constituent is its own image, and
        its ids2 the spare row."""
        t = self.t
        b, dev = first.shape[0], first.device
        composite = torch.arange(b, device=dev) >= n_single
        w = self.slot_weights(epoch, first)
        w = torch.ones(b, device=dev) if w is None else w
        y1 = t.labels_dev[first]
        if self.operator is None:
            ones = torch.ones(b, device=dev)
            return (PairBatch(x1, None, None, ones, y1, y1, w, composite),
                    torch.full((b,), spare, dtype=torch.long, device=dev))
        partner = torch.cat([first[:n_single], second])  # whose image is constituent 2
        ids2 = torch.cat([torch.full((n_single,), spare, dtype=torch.long, device=dev), second])
        x2 = torch.cat([x1[:n_single], x2c])
        gen = t.generators["device"]
        if self.operator.grid_mask:
            mask = pair_masks(composite, self.grid, gen, dev)
            r = mask_ratio(mask)
        else:
            mask = None
            if t.variant.adaptive:
                r = adaptive_ratio(t.policy.last_loss[first], t.policy.last_loss[partner])
            else:
                r = torch.full((b,), 0.5, device=dev)
            r = torch.where(composite, r, 1.0)
        return PairBatch(x1, x2, mask, r, y1, t.labels_dev[partner], w, composite), ids2

    # ------------------------------------------------------------------ one epoch
    def train_epoch(self, epoch: int) -> Outcome:
        t, cfg = self.t, self.t.cfg
        t.model.train()
        plan, mine = self.epoch_plan(epoch)
        weights = distributed.grad_weights(plan, mine)
        out = Outcome.empty(t.data.num_train, t.device)
        poison = cfg.debug.nonfinite_at_epoch == epoch
        lr = learning_rate(cfg, epoch)
        batches = plan.num_batches
        for step, (first, second, n_s, x1, x2c) in enumerate(t.source.epoch_batches(mine, t.generators["device"])):
            lr = learning_rate(cfg, epoch + step / max(batches, 1))
            if first.shape[0] == 0:
                t.step.empty_step(step, batches, lr)
                continue
            batch, ids2 = self.pair_batch(epoch, first, second, n_s, x1, x2c, out.spare)
            result = t.step.train_step(batch, step, batches, lr, poison, weights[step])
            record_batch(out, step, result, first, ids2, batch)
        out.skipped, out.n_inputs, out.lr = plan.skipped.to(t.device), mine.num_inputs, lr
        return out
