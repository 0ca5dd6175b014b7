"""The previous (variable-shape) formulation of a mixed mini-batch, kept verbatim as the oracle that the
fixed-shape pair step (``mixtrain_trainer.step``) must agree with: singles first, then c composites; the
head sees s + 2c rows (split) and the loss averages over s + c inputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mixtrain_trainer.mixing import split_pool, topk_hit


def composite_outputs(model, singles, composites, grid_mask, split):
    """Logits for the singles (S, K), constituent 1 (P, K) and constituent 2 (P, K)."""
    s = singles.shape[0]
    features = model.forward_features(torch.cat([singles, composites]) if s else composites)
    if features.ndim == 2:
        logits = model.forward_head(features)
        return logits[:s], logits[s:], logits[s:]
    if split and composites.shape[0]:
        p1, p2 = split_pool(features[s:], grid_mask)
        logits = model.forward_head(torch.cat([features[:s].mean((2, 3)), p1, p2]))
        p = p1.shape[0]
        return logits[:s], logits[s : s + p], logits[s + p :]
    logits = model.forward_head(features.mean((2, 3)))
    return logits[:s], logits[s:], logits[s:]


def mixed_batch_loss(logits_single, y_single, logits1, y1, logits2, y2, r, split):
    """Mean over inputs of CE (single) or r*CE1 + (1-r)*CE2 (composite), and per-sample parts."""
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
