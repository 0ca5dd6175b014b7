"""Mixing operators, split pooling and the mixTrain loss: pure functions (METHOD.md, "Operators").

One convention everywhere: ``r`` is the weight of constituent 1 (its share of the image area for CutMix,
its pixel weight for MixUp); constituent 2 has ``1 - r``. Randomness comes only from the
``torch.Generator`` passed in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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


def topk_hit(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Whether each label is among the top-k classes of its logits row. (N, K), (N,) -> (N,) bool."""
    k = min(k, logits.shape[1])
    return (logits.topk(k, dim=1).indices == labels.unsqueeze(1)).any(1)


def composite_outputs(
    model,
    singles: torch.Tensor,
    composites: torch.Tensor,
    grid_mask: torch.Tensor | None,
    split: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward pass over unmixed inputs and composites together.

    Returns logits for the singles (S, K), for constituent 1 (P, K) and for constituent 2 (P, K). With
    ``split`` each constituent's cells are pooled on their own (split propagation); otherwise both
    constituents share the composite's logits.
    """
    s = singles.shape[0]
    features = model.forward_features(torch.cat([singles, composites]) if s else composites)
    if features.ndim == 2:  # no feature map (MixUp on an MLP): nothing to pool or split
        logits = model.forward_head(features)
        return logits[:s], logits[s:], logits[s:]
    if split and composites.shape[0]:
        p1, p2 = split_pool(features[s:], grid_mask)
        logits = model.forward_head(torch.cat([features[:s].mean((2, 3)), p1, p2]))
        p = p1.shape[0]
        return logits[:s], logits[s : s + p], logits[s + p :]
    logits = model.forward_head(features.mean((2, 3)))
    return logits[:s], logits[s:], logits[s:]


def mixed_batch_loss(
    logits_single: torch.Tensor,
    y_single: torch.Tensor,
    logits1: torch.Tensor,
    y1: torch.Tensor,
    logits2: torch.Tensor,
    y2: torch.Tensor,
    r: torch.Tensor,
    split: bool,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The mini-batch loss of METHOD.md and every sample's per-sample loss and correctness.

    Loss = mean over inputs of each input's loss: CE for an unmixed sample, r*CE(.,y1) + (1-r)*CE(.,y2)
    for a composite. Correct: argmax for unmixed samples and split constituents; top-2 of the shared
    output for unsplit composites (MixUp, and CutMix without split propagation).
    Returns (loss, {"single_loss", "single_correct", "loss1", "loss2", "correct1", "correct2"}).
    """
    ce_s = F.cross_entropy(logits_single.float(), y_single, reduction="none")
    ce1 = F.cross_entropy(logits1.float(), y1, reduction="none")
    ce2 = F.cross_entropy(logits2.float(), y2, reduction="none")
    inputs = ce_s.shape[0] + ce1.shape[0]
    loss = (ce_s.sum() + (r * ce1 + (1 - r) * ce2).sum()) / max(inputs, 1)
    k = 1 if split else 2
    parts = {
        "single_loss": ce_s.detach(),
        "single_correct": topk_hit(logits_single, y_single, 1),
        "loss1": ce1.detach(),
        "loss2": ce2.detach(),
        "correct1": topk_hit(logits1, y1, k),
        "correct2": topk_hit(logits2, y2, k),
    }
    return loss, parts
