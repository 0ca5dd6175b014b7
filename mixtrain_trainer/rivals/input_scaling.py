"""Input scaling (mixTrain paper, Sec. 4.3), strategy ``input-scaling``: every training input is
downscaled by the side factor ``rival.scale`` (bilinear, antialiased) before the backbone; evaluation
uses full-size images."""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from mixtrain_trainer.strategy import MixingStrategy, register_strategy


def downscale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, floor(H*scale), floor(W*scale)); an empty batch keeps the scaled size."""
    if x.shape[0] == 0:
        h, w = (math.floor(side * scale) for side in x.shape[-2:])
        return x.new_zeros((0, x.shape[1], h, w))
    return F.interpolate(x, scale_factor=scale, mode="bilinear", antialias=True, align_corners=False)


@register_strategy("input-scaling")
class InputScaling(MixingStrategy):
    def input_transform(self):
        return functools.partial(downscale, scale=self.t.cfg.rival.scale)

    def method_choices(self) -> dict:
        return {"input_scaling": "bilinear antialiased downscale of the training inputs; full-size evaluation"}
