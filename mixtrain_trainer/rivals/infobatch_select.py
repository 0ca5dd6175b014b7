"""InfoBatch's pruning decision (Qin et al., ICLR 2024; METHOD.md "InfoBatch"), as a pure function.

After epoch E (E >= 0) the scores are each sample's most recent per-sample loss (a pruned sample keeps
its last one). W = the samples whose score is below the mean score of all samples. For epoch E + 1 a
random subset of W of size round(r x |W|) is pruned (not trained: ``skipped``); the other samples of W
are trained with loss weight 1 / (1 - r), every other sample with weight 1. From epoch ceil(delta x
epochs) on (annealing) nothing is pruned and every weight is 1; epoch 0 trains everything.

Choices where METHOD.md is silent (recorded by the strategy as ``method.*``):
- round() is Python's: halves to even (round(2.5) == 2), the same as ``torch.round``;
- the pruned subset is the first round(r |W|) of a ``torch.randperm(|W|, generator)`` over W's sample ids
  in ascending order, so a run's generator state fixes it;
- "below the mean" is strict (a score equal to the mean is kept at weight 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["PruneDecision", "anneal_epoch", "infobatch_decision", "prune_subset"]


@dataclass(frozen=True)
class PruneDecision:
    """One epoch's decision: ``pruned`` (N,) bool, ``weights`` (N,) float32 (0 where pruned: the history
    records the loss weight of trained samples; pruned ones are ``skipped``), ``n_well_learned`` = |W|."""

    pruned: torch.Tensor
    weights: torch.Tensor
    n_well_learned: int

    @property
    def n_pruned(self) -> int:
        return int(self.pruned.sum())


def anneal_epoch(epochs: int, delta: float) -> int:
    """The first epoch (0-based) at which nothing is pruned any more: ceil(delta x epochs)."""
    return math.ceil(delta * epochs)


def infobatch_decision(scores: torch.Tensor, epoch: int, epochs: int, ratio: float = 0.5, delta: float = 0.875,
                       generator: torch.Generator | None = None) -> PruneDecision:
    """The pruning of epoch ``epoch`` (the one about to be trained) from ``scores`` (N,) float, the most
    recent per-sample losses after epoch - 1. ``ratio`` r in [0, 1); ``generator`` on the scores' device
    (CPU here: one decision per epoch). Pure: same inputs and generator state, same decision."""
    n = scores.shape[0]
    if epoch <= 0 or epoch >= anneal_epoch(epochs, delta) or n == 0:
        return prune_subset(torch.zeros(n, dtype=torch.bool, device=scores.device), ratio, generator)
    return prune_subset(scores < scores.float().mean(), ratio, generator)


def prune_subset(candidates: torch.Tensor, ratio: float, generator: torch.Generator | None = None) -> PruneDecision:
    """Prune round(ratio x |candidates|) of the ``candidates`` (N,) bool at random and weight the other
    candidates 1 / (1 - ratio) (the unbiased rescaling); everything else weight 1. InfoBatch's candidates
    are the samples below the mean score; a research variant may pass another set (S_mix, say)."""
    if not 0 <= ratio < 1:
        raise ValueError(f"prune ratio {ratio} must be in [0, 1)")
    n = candidates.shape[0]
    pruned = torch.zeros(n, dtype=torch.bool, device=candidates.device)
    weights = torch.ones(n, dtype=torch.float32, device=candidates.device)
    well = torch.nonzero(candidates, as_tuple=False).flatten()  # ascending ids
    k = round(ratio * len(well))
    if k:
        order = torch.randperm(len(well), generator=generator, device=candidates.device)
        pruned[well[order[:k]]] = True
    weights[well] = 1.0 / (1.0 - ratio)
    weights[pruned] = 0.0
    return PruneDecision(pruned, weights, int(len(well)))
