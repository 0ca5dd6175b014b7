"""Selective mixing: the amenability rule of METHOD.md and the other variants' selection rules.

The rule itself is a set of pure tensor functions (``thresholds``, ``regions``, ``rising``, ``decide``);
``AmenabilityPolicy`` only holds the state they need between epochs (cumulative threshold sums, the last
k+1 losses, the entry path of each S_mix member) and runs them once per epoch, on the device.
"""

from __future__ import annotations

import dataclasses

import torch

# Entry paths (history column ``mix_path``): why a sample is in S_mix (or skipped) for the next epoch.
PATH_NONE, PATH_REGION1, PATH_REGION3, PATH_ACCURACY, PATH_AVGLOSS = 0, 1, 3, 4, 5
PATH_NAMES = {PATH_NONE: "", PATH_REGION1: "region1", PATH_REGION3: "region3", PATH_ACCURACY: "accuracy",
              PATH_AVGLOSS: "avgloss"}

# Selection rules by name (variants.py maps variant names onto them).
RULES = (
    "none",  # never mix (baseline and the rivals)
    "naive",  # mix everything every epoch
    "mixtrain",  # METHOD.md: Region 1 + Region 3 with the k-epoch rising-loss rule
    "region1-only",  # Region 1 path only
    "threshold-accuracy",  # mix the samples that were correct in E
    "threshold-avgloss",  # mix the samples whose loss is below the cumulative mean unmixed loss
    "region1-all-region3",  # Region 1 plus every sample with loss > L_incorr
    "skip-region3",  # as mixtrain, but the Region 3 path skips the sample for one epoch instead
    "mixtrain-confident",  # ours: as mixtrain, but Region 1 also requires the sample to be correct in E
)


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


def decide(
    rule: str,
    loss: torch.Tensor,
    correct: torch.Tensor,
    mixed: torch.Tensor,
    path: torch.Tensor,
    region: torch.Tensor,
    rising_k: torch.Tensor,
    th: Thresholds,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """S_mix (and skips) for epoch E+1 from epoch E's outcome. Pure; all tensors (N,).

    ``mixed``: trained as a constituent in E; ``path``: its entry path then (PATH_*), PATH_NONE if not
    mixed. Returns (mix_next, skip_next, path_next).
    """
    none = torch.zeros_like(mixed)
    if rule == "none":
        return none, none, torch.zeros_like(path)
    if rule == "naive":
        return ~none, none, torch.zeros_like(path)
    if rule == "threshold-accuracy":
        return correct.clone(), none, torch.where(correct, PATH_ACCURACY, PATH_NONE).to(path.dtype)
    if rule == "threshold-avgloss":
        below = (loss.double() < th.l_avg) & torch.isfinite(th.l_avg)
        return below, none, torch.where(below, PATH_AVGLOSS, PATH_NONE).to(path.dtype)

    in_region1, in_region3 = region == 1, region == 3
    if rule == "mixtrain-confident":
        # Early in a short run most samples sit below L_mid while under half are correct (BENCHMARKS.md):
        # only samples the model already gets right are amenable.
        in_region1 = in_region1 & correct
    # Rule 1: an unmixed sample enters via Region 1 ...
    enter1 = ~mixed & in_region1
    # Rule 2: ... and stays while its loss is below L_mid (i.e. still Region 1).
    stay1 = mixed & (path == PATH_REGION1) & in_region1
    via1 = enter1 | stay1
    # Rule 1, second half: Region 3 with a loss that rose in each of the last k epochs, for one epoch.
    # Rule 3 (a Region 3 entrant goes back to S_noMix) follows from requiring ~mixed here.
    if rule == "region1-only":
        via3 = torch.zeros_like(via1)
    elif rule == "region1-all-region3":
        via3 = in_region3 & ~via1
    else:
        via3 = ~mixed & in_region3 & rising_k
    path_next = torch.where(via1, PATH_REGION1, torch.where(via3, PATH_REGION3, PATH_NONE)).to(path.dtype)
    if rule == "skip-region3":
        return via1, via3, path_next
    return via1 | via3, none, path_next


class AmenabilityPolicy:
    """Holds what the rule needs between epochs, on the device, and applies it once per epoch."""

    def __init__(self, rule: str, num_samples: int, k: int, device, averaging: str = "cumulative",
                 ema_decay: float = 0.9):
        if rule not in RULES:
            raise ValueError(f"unknown selection rule {rule!r}")
        self.rule, self.k, self.averaging, self.ema_decay = rule, k, averaging, ema_decay
        # column j: the loss at epoch E-j; NaN until recorded
        self.recent = torch.full((num_samples, k + 1), float("nan"), device=device)
        self.path = torch.zeros(num_samples, dtype=torch.int8, device=device)  # entry path of S_mix members
        self.mix_next = torch.zeros(num_samples, dtype=torch.bool, device=device)
        self.skip_next = torch.zeros(num_samples, dtype=torch.bool, device=device)
        # [sum_corr, n_corr, sum_incorr, n_incorr] of unmixed observations from earlier epochs
        self.sums = torch.zeros(4, dtype=torch.float64, device=device)
        self.ema = torch.full((3,), float("nan"), dtype=torch.float64, device=device)  # corr, incorr, avg

    @property
    def last_loss(self) -> torch.Tensor:
        """Each sample's most recent per-sample loss (NaN before its first): the adaptive ratio's input."""
        return self.recent[:, 0]

    def thresholds(self) -> Thresholds:
        if self.averaging == "ema":
            return Thresholds(self.ema[0], self.ema[1], self.ema[2])
        return cumulative_thresholds(self.sums)

    def step(self, loss: torch.Tensor, correct: torch.Tensor, mixed: torch.Tensor, trained: torch.Tensor):
        """Close epoch E: classify its losses, decide E+1, then fold E's unmixed samples into the thresholds.

        loss, correct, mixed, trained: (N,) for epoch E (``trained`` is False for skipped samples, whose
        ``loss`` is their carried-over last loss). Returns (region, thresholds used).
        """
        th = self.thresholds()
        region = regions(loss, th)
        self.recent = torch.where(
            trained.unsqueeze(1), torch.cat([loss.unsqueeze(1), self.recent[:, :-1]], 1), self.recent
        )
        path_now = torch.where(mixed | ~trained, self.path, torch.zeros_like(self.path))
        # A skipped sample (skip-region3) counts as a Region 3 entrant: it returns to S_noMix.
        mixed_or_skipped = mixed | ~trained
        mix_next, skip_next, path_next = decide(
            self.rule, loss, correct, mixed_or_skipped, path_now, region, rising(self.recent, self.k), th
        )
        self.mix_next, self.skip_next, self.path = mix_next, skip_next, path_next
        self._observe(loss, correct, trained & ~mixed)
        return region, th

    def _observe(self, loss: torch.Tensor, correct: torch.Tensor, unmixed: torch.Tensor) -> None:
        loss = torch.nan_to_num(loss.double(), nan=0.0, posinf=0.0)
        is_corr, is_incorr = unmixed & correct, unmixed & ~correct
        epoch_sums = torch.stack([
            (loss * is_corr).sum(), is_corr.sum().double(), (loss * is_incorr).sum(), is_incorr.sum().double()
        ])
        self.sums = self.sums + epoch_sums
        epoch = cumulative_thresholds(epoch_sums)
        now = torch.stack([epoch.l_corr, epoch.l_incorr, epoch.l_avg])
        blended = torch.where(torch.isfinite(self.ema), self.ema_decay * self.ema + (1 - self.ema_decay) * now, now)
        self.ema = torch.where(torch.isfinite(now), blended, self.ema)

    def state_dict(self) -> dict:
        return {name: getattr(self, name).clone() for name in ("recent", "path", "mix_next", "skip_next", "sums", "ema")}

    def load_state_dict(self, state: dict) -> None:
        for name, value in state.items():
            setattr(self, name, value.to(getattr(self, name).device))
