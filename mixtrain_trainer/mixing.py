"""Mixing operators, split pooling and the mixTrain loss: pure functions (METHOD.md, "Operators").

One convention everywhere: ``r`` is the weight of constituent 1 (its share of the image area for CutMix,
its pixel weight for MixUp); constituent 2 has ``1 - r``. Randomness comes only from the
``torch.Generator`` passed in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

# The four halves of the feature grid a mixTrain CutMix box can be: left, right, top, bottom.
HALVES = 4


def half_grid_masks(
    pairs: int, grid: tuple[int, int], generator: torch.Generator, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Constituent 1's cells for ``pairs`` composites: a random left/right/top/bottom half of the grid.

    Returns a bool mask (pairs, h, w). With an odd side the half is rounded down (7 -> 3 rows), so r is
    then slightly below 0.5; ``mask_ratio`` gives the exact r.
    """
    which = torch.randint(0, HALVES, (pairs,), generator=generator, device=generator.device).to(device)
    return half_masks_for(which, grid, device)


def half_masks_for(which: torch.Tensor, grid: tuple[int, int], device=None) -> torch.Tensor:
    """Masks for given half choices (0 left, 1 right, 2 top, 3 bottom): the oracle tests' entry point."""
    h, w = grid
    device = device or which.device
    rows = torch.arange(h, device=device).view(1, h, 1)
    cols = torch.arange(w, device=device).view(1, 1, w)
    which = which.view(-1, 1, 1)
    left = (cols < w // 2).expand(-1, h, w)
    right = (cols >= w - w // 2).expand(-1, h, w)
    top = (rows < h // 2).expand(-1, h, w)
    bottom = (rows >= h - h // 2).expand(-1, h, w)
    return torch.where(which == 0, left, torch.where(which == 1, right, torch.where(which == 2, top, bottom)))


def pair_masks(
    composite: torch.Tensor, grid: tuple[int, int], generator: torch.Generator, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Grid masks of a fixed-shape pair batch: a random half for each composite slot, every cell for a
    single (constituent 1 owns the whole map, so r = 1). composite: (B,) bool -> (B, h, w) bool."""
    halves = half_grid_masks(composite.shape[0], grid, generator, device)
    return halves | ~composite.to(device).view(-1, 1, 1)


def mask_ratio(mask: torch.Tensor) -> torch.Tensor:
    """r of each composite: constituent 1's share of the grid cells. (P, h, w) -> (P,)."""
    return mask.flatten(1).float().mean(1)


def upsample_mask(mask: torch.Tensor, stride: int) -> torch.Tensor:
    """Grid mask (P, h, w) -> pixel mask (P, 1, h*stride, w*stride): each cell covers stride x stride pixels."""
    return mask.repeat_interleave(stride, 1).repeat_interleave(stride, 2).unsqueeze(1)


def cutmix(x1: torch.Tensor, x2: torch.Tensor, grid_mask: torch.Tensor, stride: int) -> torch.Tensor:
    """Paste constituent 1's cells onto constituent 2. x1, x2: (P, C, H, W); grid_mask: (P, H/stride, W/stride)."""
    pixel = upsample_mask(grid_mask, stride)
    if pixel.shape[-2:] != x1.shape[-2:]:
        raise ValueError(f"grid {tuple(grid_mask.shape[1:])} x stride {stride} does not tile {tuple(x1.shape[-2:])}")
    return torch.where(pixel, x1, x2)


def mixup(x1: torch.Tensor, x2: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """X = r * x1 + (1 - r) * x2, pixelwise; r: (P,)."""
    r = r.to(x1.dtype).view(-1, *([1] * (x1.ndim - 1)))
    return r * x1 + (1 - r) * x2


def adaptive_ratio(loss1: torch.Tensor, loss2: torch.Tensor) -> torch.Tensor:
    """r = L1 / (L1 + L2) from the constituents' latest losses; 0.5 where either is unknown (NaN) or both 0."""
    total = loss1 + loss2
    r = loss1 / total
    return torch.where(torch.isfinite(r) & (total > 0), r, torch.full_like(r, 0.5))


def split_pool(features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split propagation's pooling: mean of the map over constituent 1's cells and over the rest.

    features: (P, C, h, w); mask: (P, h, w) bool -> two (P, C) pooled vectors. One batched matrix
    product with the normalised cell weights, so the split costs a few kernels, not a dozen.
    """
    w1 = mask.flatten(1).to(features.dtype)  # (P, hw)
    weights = torch.stack([w1, 1 - w1], 1)
    weights = weights / weights.sum(2, keepdim=True).clamp_min(1)  # (P, 2, hw): means, not sums
    pooled = torch.bmm(weights, features.flatten(2).transpose(1, 2))  # (P, 2, C)
    return pooled[:, 0], pooled[:, 1]


@dataclasses.dataclass(frozen=True)
class Operator:
    """A mixing operator: ``compose(x1, x2, mask, r, stride)`` -> the composite input X (B, C, H, W).

    ``grid_mask``: the operator mixes by a feature-grid mask (CutMix; r = the mask's share of cells and
    split propagation applies); otherwise by a pixel weight r (MixUp; the adaptive ratio applies).
    """

    name: str
    compose: Callable[..., torch.Tensor]
    grid_mask: bool


OPERATORS: dict[str, Operator] = {}


def register_operator(op: Operator) -> Operator:
    """Add an operator under its name; a second one of the same name is refused."""
    if op.name in OPERATORS:
        raise ValueError(f"mixing operator {op.name!r} is already registered")
    OPERATORS[op.name] = op
    return op


register_operator(Operator("cutmix", lambda x1, x2, mask, r, stride: cutmix(x1, x2, mask, stride), grid_mask=True))
register_operator(Operator("mixup", lambda x1, x2, mask, r, stride: mixup(x1, x2, r), grid_mask=False))


def topk_hit(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Whether each label is among the top-k classes of its logits row. (N, K), (N,) -> (N,) bool."""
    k = min(k, logits.shape[1])
    return (logits.topk(k, dim=1).indices == labels.unsqueeze(1)).any(1)
