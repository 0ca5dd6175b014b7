"""StaleSB (Jiang et al. 2019), strategy ``stale-sb``: Selective-Backprop whose selecting forward passes
run only every ``staleness`` epochs; in between, selection uses each sample's cached loss (sorted once
per epoch), so unselected samples cost nothing at all."""

from __future__ import annotations

import torch

from mixtrain_trainer.rivals.selective_backprop import SelectiveBackprop
from mixtrain_trainer.strategy import register_strategy


@register_strategy("stale-sb")
class StaleSB(SelectiveBackprop):
    stale = True

    def refreshes(self, epoch: int) -> bool:
        t = self.t
        # a sample without a cached loss yet forces a refresh (one host read per epoch)
        return epoch % t.cfg.rival.staleness == 0 or not bool(torch.isfinite(t.policy.last_loss).all())

    def method_choices(self) -> dict:
        return {**super().method_choices(),
                "stale_sb_cache": "between refreshes each sample's last loss is its score; its percentile "
                                  "is among all N cached losses"}
