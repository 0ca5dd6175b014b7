"""InfoBatch (Qin et al., ICLR 2024; METHOD.md "InfoBatch"), strategy ``infobatch``, and two research
variants built on the same pruning (strategies ``mixtrain-prune`` and ``mixtrain-lrgate``).

``infobatch``: before each epoch E + 1 the pruning decision (``infobatch_select.infobatch_decision``) is
made from the policy's most recent per-sample losses (a pruned sample keeps its last one): a random
round(r |W|) of the samples below the mean loss are ``skipped``, the rest of W train with loss weight
1 / (1 - r) (the step's per-slot weights; the history's ``weight`` column), annealing from
ceil(delta x epochs). Options: ``rival.prune_ratio`` (r, default 0.5), ``rival.anneal`` (delta, 0.875).

Research variants (not in the paper; aimed at beating both the budget-scaled baseline and early
termination):
- ``mixtrain-prune`` (``mixtrain-cutmix-prune``): mixTrain-CutMix's S_mix, of which a random share r is
  pruned (skipped) and the rest mixed with loss weight 1 / (1 - r), InfoBatch-style; annealed like
  InfoBatch. S_mix holds the well-learned (Region 1) samples, so pruning half of them removes a quarter
  of their composites' worth of inputs again.
- ``mixtrain-lrgate`` (``mixtrain-cutmix-lrgate``): mixTrain-CutMix that mixes only once the learning rate
  has dropped to ``rival.mix_lr_fraction`` (default 0.5) of its initial value: the high-lr learning phase
  trains every sample unmixed (after epoch 1 most samples are below L_mid while far fewer are correct, so
  early mixing trains half-images of samples not yet learned), the low-lr phase mixes as mixTrain does.
"""

from __future__ import annotations

import torch

from mixtrain_trainer.rivals.infobatch_select import anneal_epoch, infobatch_decision, prune_subset
from mixtrain_trainer.schedule import learning_rate
from mixtrain_trainer.strategy import MixingStrategy, register_strategy


class _Weighted(MixingStrategy):
    """A mixing strategy whose slots carry per-sample loss weights (one (N,) tensor per epoch)."""

    def __init__(self, trainer):
        super().__init__(trainer)
        self.weights = None  # (N,) on the device, set by mix_set

    def slot_weights(self, epoch: int, first: torch.Tensor) -> torch.Tensor | None:
        return None if self.weights is None else self.weights[first]


@register_strategy("infobatch")
class InfoBatch(_Weighted):
    def mix_set(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.t
        scores = t.policy.last_loss.float().cpu()
        d = infobatch_decision(scores, epoch, t.cfg.trained_epochs, t.cfg.rival.prune_ratio, t.cfg.rival.anneal,
                               generator=t.generators["plan"])
        self.weights = d.weights.clamp(min=1.0).to(t.device) if d.n_pruned or d.n_well_learned else None
        return torch.zeros_like(d.pruned), d.pruned

    def method_choices(self) -> dict:
        return {"infobatch_round": "round(r x |W|) with halves to even; W strictly below the mean score",
                "infobatch_scores": "the policy's most recent per-sample loss (pruned samples keep theirs)",
                "infobatch_anneal": f"nothing pruned from epoch ceil(anneal x epochs) = "
                                    f"{anneal_epoch(self.t.cfg.trained_epochs, self.t.cfg.rival.anneal)}"}


@register_strategy("mixtrain-prune")
class MixtrainPrune(_Weighted):
    def mix_set(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.t
        mix, skip = super().mix_set(epoch)
        if epoch >= anneal_epoch(t.cfg.trained_epochs, t.cfg.rival.anneal):
            self.weights = None
            return mix, skip
        d = prune_subset(mix, t.cfg.rival.prune_ratio, generator=t.generators["plan"])
        self.weights = d.weights.clamp(min=1.0).to(t.device)
        return mix & ~d.pruned, skip | d.pruned

    def method_choices(self) -> dict:
        return {**super().method_choices(),
                "prune": "a random round(prune_ratio x |S_mix|) of S_mix skipped, the rest mixed at loss weight "
                         "1/(1-prune_ratio); none from epoch ceil(anneal x epochs)"}


@register_strategy("mixtrain-lrgate")
class MixtrainLrGate(MixingStrategy):
    def mix_set(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.t
        mix, skip = super().mix_set(epoch)
        if learning_rate(t.cfg, epoch) > t.cfg.rival.mix_lr_fraction * learning_rate(t.cfg, 0):
            return torch.zeros_like(mix), torch.zeros_like(skip)
        return mix, skip

    def method_choices(self) -> dict:
        return {**super().method_choices(),
                "lr_gate": "no mixing while the epoch's starting lr > mix_lr_fraction x the initial lr"}
