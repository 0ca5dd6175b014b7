"""The fixed-shape pair step gives METHOD.md's numbers exactly as the previous formulation did.

One mini-batch (5 singles, 3 composites) runs through the old variable-shape functions
(``old_step_oracle``: singles first, s + 2c head rows, mean over s + c inputs) and through
``step.forward_loss`` (B pairs; singles as (x, x) with constituent 1 owning every cell or r = 1). In fp32
the batch loss, every per-sample loss and correctness, and every parameter gradient agree, for each
operator with and without interference reduction and for a run that mixes nothing.
"""

from __future__ import annotations

import copy

import pytest
import torch
from old_step_oracle import composite_outputs, mixed_batch_loss

from mixtrain_trainer import mixing, step
from mixtrain_trainer.models import create_model

STRIDE, GRID, S, C, CLASSES = 4, (4, 4), 5, 3, 10


def _data(seed=3):
    g = torch.Generator().manual_seed(seed)
    singles = torch.randn(S, 3, 16, 16, generator=g)
    x1 = torch.randn(C, 3, 16, 16, generator=g)
    x2 = torch.randn(C, 3, 16, 16, generator=g)
    y_s = torch.randint(0, CLASSES, (S,), generator=g)
    y1 = torch.randint(0, CLASSES, (C,), generator=g)
    y2 = torch.randint(0, CLASSES, (C,), generator=g)
    return singles, x1, x2, y_s, y1, y2


def _grads(model):
    return [p.grad.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize(
    ("operator", "split", "ratio"),
    [("cutmix", True, None), ("cutmix", False, None), ("mixup", False, "fixed"), ("mixup", False, "adaptive"),
     (None, False, None)],
)
def test_pair_step_equals_the_old_formulation(operator, split, ratio):
    torch.manual_seed(0)
    model = create_model("resnet8", CLASSES, (3, 16, 16), width=4).train()
    twin = copy.deepcopy(model)
    singles, x1, x2, y_s, y1, y2 = _data()
    if operator is None:  # nothing mixed: all 8 inputs are singles
        singles, y_s = torch.cat([singles, x1]), torch.cat([y_s, y1])
        x1, x2, y1, y2 = x1[:0], x2[:0], y1[:0], y2[:0]
    s, c = singles.shape[0], x1.shape[0]
    mask = None
    if operator == "cutmix":
        mask = mixing.half_masks_for(torch.tensor([0, 3, 1])[:c], GRID)
        r = mixing.mask_ratio(mask)
        composites = mixing.cutmix(x1, x2, mask, STRIDE)
    elif operator == "mixup":
        r = torch.tensor([0.5] * c) if ratio == "fixed" else mixing.adaptive_ratio(
            torch.tensor([0.3, 2.0, 1.0]), torch.tensor([1.1, 0.2, float("nan")]))
        composites = mixing.mixup(x1, x2, r)
    else:
        r, composites = torch.zeros(0), x1

    # the old formulation
    out_s, out1, out2 = composite_outputs(model, singles, composites, mask, split)
    old_loss, parts = mixed_batch_loss(out_s, y_s, out1, y1, out2, y2, r, split)
    old_loss.backward()

    # the new one: B = s + c pairs, singles as (x, x)
    composite = torch.arange(s + c) >= s
    slot_r = torch.cat([torch.ones(s), r])
    slot_mask = None if mask is None else torch.cat([torch.ones(s, *GRID, dtype=torch.bool), mask])
    spec = step.StepSpec(operator=operator, split=split, stride=STRIDE)
    new_loss, ce1, ce2, c1, c2 = step.forward_loss(
        twin, spec, torch.cat([singles, x1]), None if operator is None else torch.cat([singles, x2]), slot_mask,
        slot_r, torch.cat([y_s, y1]), torch.cat([y_s, y2]), torch.ones(s + c), composite,
    )
    new_loss.backward()

    assert new_loss.shape == () and torch.allclose(new_loss, old_loss, rtol=1e-5, atol=1e-6)
    assert torch.allclose(ce1[:s], parts["single_loss"], rtol=1e-5, atol=1e-6)
    assert torch.allclose(ce1[s:], parts["loss1"], rtol=1e-5, atol=1e-6)
    assert torch.allclose(ce2[s:], parts["loss2"], rtol=1e-5, atol=1e-6)
    assert torch.equal(c1[:s], parts["single_correct"])
    assert torch.equal(c1[s:], parts["correct1"]) and torch.equal(c2[s:], parts["correct2"])
    for g_old, g_new in zip(_grads(model), _grads(twin)):
        assert torch.allclose(g_old, g_new, rtol=1e-4, atol=1e-6)
    if operator is not None:
        assert c > 0 and not torch.allclose(parts["loss1"], parts["loss2"]), "the batch really mixes"
