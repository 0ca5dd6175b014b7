"""Selection rules by name (METHOD.md, "Selective mixing" and the ablation variants): pure functions.

Every rule maps one epoch's outcome to the next epoch's S_mix, skips and entry paths:

    rule(RuleInput) -> Decision(mix_next, skip_next, path_next)      all (N,) tensors on the device

``RuleInput`` carries the per-sample loss, correctness, whether the sample was mixed (or skipped) in E,
its entry path then, its region this epoch, whether its loss rose over the last k epochs, and the
thresholds used. The helpers (``cumulative_thresholds``, ``regions``, ``rising``) are pure too;
``policy.AmenabilityPolicy`` only keeps the state between epochs and calls ``RULES[name]``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

# Entry paths (history column ``mix_path``): why a sample is in S_mix (or skipped) for the next epoch.
PATH_NONE, PATH_REGION1, PATH_REGION3, PATH_ACCURACY, PATH_AVGLOSS = 0, 1, 3, 4, 5
PATH_NAMES = {PATH_NONE: "", PATH_REGION1: "region1", PATH_REGION3: "region3", PATH_ACCURACY: "accuracy",
              PATH_AVGLOSS: "avgloss"}


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """L_corr, L_incorr, L_mid (NaN while undefined) and the mean loss of all unmixed observations."""

    l_corr: torch.Tensor
    l_incorr: torch.Tensor
    l_avg: torch.Tensor

    @property
    def l_mid(self) -> torch.Tensor:
        return (self.l_corr + self.l_incorr) / 2

    @property
    def defined(self) -> torch.Tensor:
        return torch.isfinite(self.l_corr) & torch.isfinite(self.l_incorr)


def cumulative_thresholds(sums: torch.Tensor) -> Thresholds:
    """From running sums [sum_corr, n_corr, sum_incorr, n_incorr] (float64) to thresholds.

    A cumulative mean over every (sample, epoch) observation, not a mean of per-epoch means.
    """
    nan = torch.full_like(sums[0], float("nan"))
    l_corr = torch.where(sums[1] > 0, sums[0] / sums[1].clamp_min(1), nan)
    l_incorr = torch.where(sums[3] > 0, sums[2] / sums[3].clamp_min(1), nan)
    n = sums[1] + sums[3]
    l_avg = torch.where(n > 0, (sums[0] + sums[2]) / n.clamp_min(1), nan)
    return Thresholds(l_corr, l_incorr, l_avg)


def regions(loss: torch.Tensor, th: Thresholds) -> torch.Tensor:
    """Region of each loss: 1 below L_mid, 3 above L_incorr, 2 between; 0 while thresholds are undefined."""
    loss = loss.double()
    region = torch.where(loss < th.l_mid, 1, torch.where(loss > th.l_incorr, 3, 2))
    return torch.where(th.defined, region, 0).to(torch.int8)


def rising(recent: torch.Tensor, k: int) -> torch.Tensor:
    """Whether loss(E) > loss(E-1) > ... > loss(E-k). recent: (N, >=k+1), column j = loss at E-j (NaN: none)."""
    window = recent[:, : k + 1]
    steps = window[:, :-1] > window[:, 1:]  # NaN compares False: too little history means "not rising"
    return steps.all(1)


@dataclasses.dataclass(frozen=True)
class RuleInput:
    """Epoch E's outcome as a rule sees it; every tensor (N,).

    ``mixed``: trained as a constituent in E, or skipped in E (a skipped sample returns to S_noMix like a
    Region 3 entrant); ``path``: its entry path then (PATH_*), PATH_NONE if neither.
    """

    loss: torch.Tensor
    correct: torch.Tensor
    mixed: torch.Tensor
    path: torch.Tensor
    region: torch.Tensor
    rising: torch.Tensor
    thresholds: Thresholds


@dataclasses.dataclass(frozen=True)
class Decision:
    mix_next: torch.Tensor  # (N,) bool: S_mix of epoch E+1
    skip_next: torch.Tensor  # (N,) bool: not trained in E+1
    path_next: torch.Tensor  # (N,) int8: entry path of each S_mix (or skipped) sample


Rule = Callable[[RuleInput], Decision]
RULES: dict[str, Rule] = {}
DESCRIPTIONS: dict[str, str] = {}


def register_rule(name: str, description: str):
    """Add a selection rule under ``name``; a second rule of the same name is refused."""

    def wrap(fn: Rule) -> Rule:
        if name in RULES:
            raise ValueError(f"selection rule {name!r} is already registered")
        RULES[name], DESCRIPTIONS[name] = fn, description
        return fn

    return wrap


def _paths(via1: torch.Tensor, via3: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return torch.where(via1, PATH_REGION1, torch.where(via3, PATH_REGION3, PATH_NONE)).to(like.dtype)


def _via_region1(s: RuleInput, in_region1: torch.Tensor) -> torch.Tensor:
    """Rule 1 (an unmixed sample enters via Region 1) and rule 2 (a Region 1 entrant stays while in Region 1)."""
    enter1 = ~s.mixed & in_region1
    stay1 = s.mixed & (s.path == PATH_REGION1) & in_region1
    return enter1 | stay1


def _rising_region3(s: RuleInput) -> torch.Tensor:
    """Rule 1, second half: unmixed, Region 3, loss rose in each of the last k epochs. Requiring ~mixed is
    rule 3: a Region 3 entrant (or a skipped sample) goes back to S_noMix."""
    return ~s.mixed & (s.region == 3) & s.rising


@register_rule("none", "never mix (baseline and the rivals)")
def rule_none(s: RuleInput) -> Decision:
    none = torch.zeros_like(s.mixed)
    return Decision(none, none, torch.zeros_like(s.path))


@register_rule("naive", "mix everything every epoch")
def rule_naive(s: RuleInput) -> Decision:
    none = torch.zeros_like(s.mixed)
    return Decision(~none, none, torch.zeros_like(s.path))


@register_rule("mixtrain", "METHOD.md: Region 1 + Region 3 with the k-epoch rising-loss rule")
def rule_mixtrain(s: RuleInput) -> Decision:
    via1 = _via_region1(s, s.region == 1)
    via3 = _rising_region3(s)
    return Decision(via1 | via3, torch.zeros_like(via1), _paths(via1, via3, s.path))


@register_rule("region1-only", "the Region 1 path only")
def rule_region1_only(s: RuleInput) -> Decision:
    via1 = _via_region1(s, s.region == 1)
    none = torch.zeros_like(via1)
    return Decision(via1, none, _paths(via1, none, s.path))


@register_rule("region1-all-region3", "Region 1 plus every sample with loss > L_incorr")
def rule_region1_all_region3(s: RuleInput) -> Decision:
    via1 = _via_region1(s, s.region == 1)
    via3 = (s.region == 3) & ~via1
    return Decision(via1 | via3, torch.zeros_like(via1), _paths(via1, via3, s.path))


@register_rule("skip-region3", "as mixtrain, but the Region 3 path skips the sample for one epoch instead")
def rule_skip_region3(s: RuleInput) -> Decision:
    via1 = _via_region1(s, s.region == 1)
    via3 = _rising_region3(s)
    return Decision(via1, via3, _paths(via1, via3, s.path))


@register_rule("mixtrain-confident", "ours: as mixtrain, but Region 1 also requires the sample to be correct in E")
def rule_mixtrain_confident(s: RuleInput) -> Decision:
    # Early in a short run most samples sit below L_mid while under half are correct (BENCHMARKS.md):
    # only samples the model already gets right are amenable.
    via1 = _via_region1(s, (s.region == 1) & s.correct)
    via3 = _rising_region3(s)
    return Decision(via1 | via3, torch.zeros_like(via1), _paths(via1, via3, s.path))


@register_rule("threshold-accuracy", "mix the samples that were correct in E")
def rule_threshold_accuracy(s: RuleInput) -> Decision:
    mix = s.correct.clone()
    return Decision(mix, torch.zeros_like(mix), torch.where(mix, PATH_ACCURACY, PATH_NONE).to(s.path.dtype))


@register_rule("threshold-avgloss", "mix the samples whose loss is below the cumulative mean unmixed loss")
def rule_threshold_avgloss(s: RuleInput) -> Decision:
    l_avg = s.thresholds.l_avg
    below = (s.loss.double() < l_avg) & torch.isfinite(l_avg)
    return Decision(below, torch.zeros_like(below), torch.where(below, PATH_AVGLOSS, PATH_NONE).to(s.path.dtype))


# Choices the selection rules make where METHOD.md is silent (written to the trial record's ``method``
# and logged as MLflow params ``method.*``). Keys starting with ``policy_`` concern the amenability rule.
METHOD_CHOICES = {
    "policy_region_ties": "loss == L_mid is Region 2 (Region 1 is strictly below); loss == L_incorr is Region 2",
    "policy_region_precedence": "Region 1 wins where L_mid > L_incorr puts a loss in both",
    "policy_rising_skipped": "a skipped sample records no loss; the rising rule compares recorded losses only",
    "policy_skipped_return": "a skipped (skip-region3) sample returns to S_noMix like a Region 3 entrant",
    "policy_thresholds_exclude": "mixed and skipped samples never enter L_corr / L_incorr",
    "odd_one_out": "an odd member of S_mix trains unmixed (in S_noMix's share of the thresholds)",
}
