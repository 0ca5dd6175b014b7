"""Split propagation (METHOD.md) in the fixed-shape pair step: each constituent's cells pooled on their own
and classified on their own; unmixed samples (pairs whose constituent 1 owns every cell) in the same
batch unaffected; gradients reach both constituents, and never a single's discarded second."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mixtrain_trainer import mixing, step
from mixtrain_trainer.models import create_model

STRIDE, GRID = 4, (4, 4)


def _model():
    torch.manual_seed(0)
    return create_model("resnet8", 10, (3, 16, 16), width=4).eval()


def _batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    singles = torch.randn(3, 3, 16, 16, generator=g)
    x1 = torch.randn(2, 3, 16, 16, generator=g)
    x2 = torch.randn(2, 3, 16, 16, generator=g)
    mask = mixing.half_masks_for(torch.tensor([0, 3]), GRID)  # left half, bottom half
    return singles, x1, x2, mask


def test_split_pool_is_the_mean_over_each_constituents_cells():
    features = torch.randn(2, 5, 4, 4)
    mask = mixing.half_masks_for(torch.tensor([2, 1]), GRID)
    mask[1, 0, 0] = True  # any cell set works, not just halves
    p1, p2 = mixing.split_pool(features, mask)
    for i in range(2):
        assert torch.allclose(p1[i], features[i][:, mask[i]].mean(1), atol=1e-6)
        assert torch.allclose(p2[i], features[i][:, ~mask[i]].mean(1), atol=1e-6)


def _slots(singles, composites, mask):
    """A pair batch's inputs and masks: the singles own every cell, then the composites."""
    x = torch.cat([singles, composites])
    full = torch.ones(singles.shape[0], *GRID, dtype=torch.bool)
    return x, torch.cat([full, mask])


@torch.no_grad()
def test_constituent_logits_are_the_head_on_hand_pooled_regions():
    model = _model()
    singles, x1, x2, mask = _batch()
    composites = mixing.cutmix(x1, x2, mask, STRIDE)
    x, slot_mask = _slots(singles, composites, mask)
    out1, out2 = step.pair_logits(model, x, slot_mask, split=True)
    assert out1.shape == (5, 10) and out2.shape == (5, 10), "every slot is a pair: the head ran on 2B rows"
    features = model.forward_features(composites)  # (2, 16, 4, 4)
    assert features.shape[-2:] == GRID
    for i in range(2):
        own = features[i][:, mask[i]].mean(1)  # constituent 1: its 8 cells
        other = features[i][:, ~mask[i]].mean(1)  # constituent 2: the other 8
        assert torch.allclose(out1[3 + i], model.forward_head(own[None])[0], atol=1e-5)
        assert torch.allclose(out2[3 + i], model.forward_head(other[None])[0], atol=1e-5)
    assert not torch.allclose(out1[3:], out2[3:], atol=1e-3), "split constituents get logits of their own"


@torch.no_grad()
def test_unmixed_samples_in_a_mixed_batch_get_the_same_logits_as_alone():
    model = _model()
    singles, x1, x2, mask = _batch()
    composites = mixing.cutmix(x1, x2, mask, STRIDE)
    x, slot_mask = _slots(singles, composites, mask)
    out1, _ = step.pair_logits(model, x, slot_mask, split=True)
    assert torch.allclose(out1[:3], model(singles), atol=1e-5)
    alone, _ = step.pair_logits(model, *_slots(singles, composites[:0], mask[:0]), split=True)
    assert torch.allclose(out1[:3], alone, atol=1e-5)


@torch.no_grad()
def test_without_split_both_constituents_share_the_composites_logits():
    model = _model()
    singles, x1, x2, mask = _batch()
    composites = mixing.cutmix(x1, x2, mask, STRIDE)
    x, slot_mask = _slots(singles, composites, mask)
    out1, out2 = step.pair_logits(model, x, slot_mask, split=False)
    assert torch.equal(out1, out2)
    assert torch.allclose(out1[3:], model(composites), atol=1e-5)
    assert torch.allclose(out1[:3], model(singles), atol=1e-5)


def _cell_grad(grad: torch.Tensor) -> torch.Tensor:
    """|grad| summed over channels and each stride x stride cell: (P, C, H, W) -> (P, h, w)."""
    p, _, h, w = grad.shape
    return grad.abs().sum(1).view(p, h // STRIDE, STRIDE, w // STRIDE, STRIDE).sum((2, 4))


def test_gradients_reach_both_constituents_through_their_own_cells():
    model = _model().train()
    singles, x1, x2, mask = _batch()
    slot_x1 = torch.cat([singles, x1]).requires_grad_(True)
    slot_x2 = torch.cat([singles, x2]).requires_grad_(True)  # a single's second constituent: itself
    _, slot_mask = _slots(singles, x1, mask)
    composite = torch.tensor([False, False, False, True, True])
    y1, y2 = torch.tensor([0, 1, 2, 3, 4]), torch.tensor([0, 1, 2, 5, 6])
    spec = step.StepSpec(operator="cutmix", split=True, stride=STRIDE)
    r = mixing.mask_ratio(slot_mask)
    assert r.tolist() == [1.0, 1.0, 1.0, 0.5, 0.5]
    loss = step.forward_loss(model, spec, slot_x1, slot_x2, slot_mask, r, y1, y2, torch.ones(5), composite)[0]
    loss.backward()
    g1, g2 = _cell_grad(slot_x1.grad[3:]), _cell_grad(slot_x2.grad[3:])
    assert (g1[mask] > 0).all(), "every cell of constituent 1 gets a gradient"
    assert (g1[~mask] == 0).all(), "x1's pixels outside its box are not in the composite"
    assert (g2[~mask] > 0).all(), "every cell of constituent 2 gets a gradient"
    assert (g2[mask] == 0).all()
    assert (slot_x1.grad[:3].abs().sum((1, 2, 3)) > 0).all(), "singles train"
    assert (slot_x2.grad[:3] == 0).all(), "a single's second constituent contributes nothing"


def test_each_constituents_error_reaches_the_feature_map_only_at_its_own_cells():
    model = _model()
    _, x1, x2, mask = _batch()
    features = model.forward_features(mixing.cutmix(x1, x2, mask, STRIDE))
    features.retain_grad()
    p1, p2 = mixing.split_pool(features, mask)
    F.cross_entropy(model.forward_head(p1), torch.tensor([1, 2])).backward(retain_graph=True)
    g = features.grad.abs().sum(1)  # (P, h, w)
    assert (g[mask] > 0).all() and (g[~mask] == 0).all()
    features.grad = None
    F.cross_entropy(model.forward_head(p2), torch.tensor([3, 4])).backward()
    g = features.grad.abs().sum(1)
    assert (g[~mask] > 0).all() and (g[mask] == 0).all()
