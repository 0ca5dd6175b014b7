"""Mini-batch skipping (mixTrain paper, Sec. 4.3), strategy ``minibatch-skip``: each epoch exactly
round(s x batches) (halves up) of the planned mini-batches, chosen at random, are not trained; their samples are
``skipped``. Everything else is the ordinary (unmixed) epoch."""

from __future__ import annotations

import math

import torch

from mixtrain_trainer.sampler import EpochPlan, layout
from mixtrain_trainer.strategy import MixingStrategy, register_strategy


def drop_batches(plan: EpochPlan, count: int, batch_size: int, generator: torch.Generator) -> EpochPlan:
    """The plan without ``count`` of its mini-batches (chosen with ``generator``); their samples skipped.

    Pure: the kept batches keep their inputs and order. plan on the CPU.
    """
    if count <= 0 or plan.num_batches == 0:
        return plan
    dropped = torch.randperm(plan.num_batches, generator=generator)[:count].sort().values.tolist()
    skip = plan.skipped.clone()
    keep = torch.ones(plan.num_inputs, dtype=torch.bool)
    for b in dropped:
        lo, hi = plan.bounds[b], plan.bounds[b + 1]
        keep[lo:hi] = False
        skip[plan.first[lo:hi]] = True
        sec = plan.second[lo:hi]
        skip[sec[sec >= 0]] = True
    return layout(plan.first[keep], plan.second[keep], batch_size, skip)


@register_strategy("minibatch-skip")
class MinibatchSkip(MixingStrategy):
    def plan(self, epoch: int) -> EpochPlan:
        plan = super().plan(epoch)
        count = math.floor(self.t.cfg.rival.skip_fraction * plan.num_batches + 0.5)  # halves round up
        return drop_batches(plan, count, self.t.global_batch, self.t.generators["plan"])

    def method_choices(self) -> dict:
        return {"minibatch_skip": "exactly round(skip_fraction x batches) batches (halves up) dropped per epoch, at random"}
