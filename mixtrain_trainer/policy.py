"""The amenability policy's state across epochs (METHOD.md, "Selective mixing").

The rules themselves are pure functions registered by name in ``rules.py``; ``AmenabilityPolicy`` only
holds what they need between epochs (cumulative threshold sums or their EMA, the last k+1 losses, the
entry path of each S_mix member) and applies the run's rule once per epoch, on the device.
"""

from __future__ import annotations

import torch

from mixtrain_trainer.rules import (  # noqa: F401  (re-exported: the policy's public names)
    PATH_ACCURACY,
    PATH_AVGLOSS,
    PATH_NAMES,
    PATH_NONE,
    PATH_REGION1,
    PATH_REGION3,
    RULES,
    RuleInput,
    Thresholds,
    cumulative_thresholds,
    regions,
    rising,
)


class AmenabilityPolicy:
    """Holds what the rule needs between epochs, on the device, and applies it once per epoch."""

    def __init__(self, rule: str, num_samples: int, k: int, device, averaging: str = "cumulative",
                 ema_decay: float = 0.9):
        if rule not in RULES:
            raise ValueError(f"unknown selection rule {rule!r}; choose one of {', '.join(sorted(RULES))}")
        self.rule, self.k, self.averaging, self.ema_decay = rule, k, averaging, ema_decay
        self.decide = RULES[rule]
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
        # A skipped sample (skip-region3) counts as a Region 3 entrant: it returns to S_noMix.
        mixed_or_skipped = mixed | ~trained
        path_now = torch.where(mixed_or_skipped, self.path, torch.zeros_like(self.path))
        decision = self.decide(RuleInput(loss, correct, mixed_or_skipped, path_now, region,
                                         rising(self.recent, self.k), th))
        self.mix_next, self.skip_next, self.path = decision.mix_next, decision.skip_next, decision.path_next
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
