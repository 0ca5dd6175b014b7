"""MixUp, the adaptive ratio, the mini-batch loss and the correctness rule, by hand-computed examples."""

from __future__ import annotations

import math

import pytest
import torch

from mixtrain_trainer import mixing, step

NAN = float("nan")


def _ce(logits: list[float], label: int) -> float:
    """Cross-entropy by hand: log-sum-exp minus the label's logit."""
    return math.log(sum(math.exp(v) for v in logits)) - logits[label]


def test_mixup_is_pixelwise_r_x1_plus_one_minus_r_x2():
    x1 = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]], [[[8.0, 8.0], [8.0, 8.0]]]])  # (2, 1, 2, 2)
    x2 = torch.tensor([[[[5.0, 6.0], [7.0, 0.0]]], [[[0.0, 4.0], [2.0, 6.0]]]])
    out = mixing.mixup(x1, x2, torch.tensor([0.25, 1.0]))
    expected = torch.tensor([[[[4.0, 5.0], [6.0, 1.0]]], [[[8.0, 8.0], [8.0, 8.0]]]])
    # 0.25*1 + 0.75*5 = 4; 0.25*2 + 0.75*6 = 5; 0.25*3 + 0.75*7 = 6; 0.25*4 + 0 = 1; r = 1 keeps x1
    assert torch.equal(out, expected)
    assert torch.equal(mixing.mixup(x1, x2, torch.tensor([0.0, 0.0])), x2)


def test_adaptive_ratio_by_hand():
    l1 = torch.tensor([1.0, 3.0, 0.0, 2.0, NAN, 2.0, NAN, 0.0])
    l2 = torch.tensor([3.0, 1.0, 2.0, 2.0, 1.0, NAN, NAN, 0.0])
    r = mixing.adaptive_ratio(l1, l2)
    # 1/(1+3), 3/(3+1), 0/(0+2), 2/(2+2); NaN on either side or both 0 -> 0.5
    assert r.tolist() == [0.25, 0.75, 0.0, 0.5, 0.5, 0.5, 0.5, 0.5]


def test_adaptive_ratio_favours_the_harder_constituent():
    r = mixing.adaptive_ratio(torch.tensor([2.5]), torch.tensor([0.5]))
    assert float(r) == pytest.approx(2.5 / 3.0)
    assert float(r) > 0.5


def _pair_loss(logits1, logits2, y1, y2, r, w=None, composite=None, top2_shared=False):
    r = torch.tensor(r)
    composite = r < 1 if composite is None else torch.tensor(composite)
    w = torch.ones_like(r) if w is None else torch.tensor(w)
    return step.pair_loss(torch.tensor(logits1), torch.tensor(logits2), torch.tensor(y1), torch.tensor(y2), r, w,
                          composite, top2_shared)


def test_pair_loss_equals_the_hand_computed_mean_over_inputs():
    ls = [[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]]  # two unmixed samples (slots (x, x) with r = 1) ...
    l1 = [1.0, 2.0, 3.0]  # ... and one composite: constituent 1's logits ...
    l2 = [0.0, -1.0, 4.0]  # ... and constituent 2's (split propagation)
    junk = [9.0, -9.0, 0.0]  # a single's second logits: weight 0, whatever they are
    r = 0.3
    loss, ce1, ce2, _, _ = _pair_loss([ls[0], ls[1], l1], [junk, junk, l2], [0, 2, 1], [0, 2, 0], [1.0, 1.0, r])
    ce_s = [_ce(ls[0], 0), _ce(ls[1], 2)]
    c1, c2 = _ce(l1, 1), _ce(l2, 0)
    # METHOD.md: mean over the 3 inputs; a composite counts once, as r*CE1 + (1-r)*CE2
    assert float(loss) == pytest.approx((ce_s[0] + ce_s[1] + r * c1 + (1 - r) * c2) / 3, rel=1e-6)
    assert ce1.tolist() == pytest.approx([ce_s[0], ce_s[1], c1], rel=1e-6)  # per-sample losses are unweighted
    assert float(ce2[2]) == pytest.approx(c2, rel=1e-6)


def test_pair_loss_of_unmixed_only_and_of_composites_only():
    logits = [[1.0, 0.0], [0.0, 3.0]]
    loss, *_ = _pair_loss(logits, logits, [1, 1], [1, 1], [1.0, 1.0])
    assert float(loss) == pytest.approx((_ce([1.0, 0.0], 1) + _ce([0.0, 3.0], 1)) / 2, rel=1e-6)
    loss, *_ = _pair_loss(logits, logits, [0, 0], [1, 1], [0.5, 0.25])
    expected = (
        0.5 * _ce([1.0, 0.0], 0)
        + 0.5 * _ce([1.0, 0.0], 1)
        + 0.25 * _ce([0.0, 3.0], 0)
        + 0.75 * _ce([0.0, 3.0], 1)
    ) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_pair_loss_weights_scale_each_slot():
    """Per-slot loss weights (InfoBatch's 1 / (1 - r)): the mean over slots of weight x the slot's loss."""
    logits = [[1.0, 0.0], [0.0, 3.0], [2.0, 2.5]]
    loss, ce1, _, _, _ = _pair_loss(logits, logits, [1, 1, 0], [1, 1, 1], [1.0, 1.0, 0.5], w=[2.0, 1.0, 1.0])
    expected = (2 * _ce(logits[0], 1) + _ce(logits[1], 1) + 0.5 * _ce(logits[2], 0) + 0.5 * _ce(logits[2], 1)) / 3
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert float(ce1[0]) == pytest.approx(_ce(logits[0], 1), rel=1e-6), "the per-sample loss stays unweighted"


def test_correct_is_top2_for_shared_outputs_and_argmax_for_split_and_unmixed():
    # Label 1 is the runner-up: top-2 but not argmax. Label 2 is last: neither.
    logits = [[3.0, 2.0, 0.0]] * 2  # slot 0 a single (label 1), slot 1 a composite (labels 1 and 2)
    y1, y2 = [1, 1], [1, 2]
    _, _, _, c1, c2 = _pair_loss(logits, logits, y1, y2, [1.0, 0.5], top2_shared=True)
    assert c1[0].item() is False  # unmixed: argmax, whatever the operator
    assert c1[1].item() is True  # MixUp / CutMix without split: label among the top 2
    assert c2[1].item() is False
    _, _, _, c1, c2 = _pair_loss(logits, logits, y1, y2, [1.0, 0.5], top2_shared=False)
    assert c1.tolist() == [False, False]  # split propagation: argmax
    assert c2[1].item() is False
    _, _, _, c1, c2 = _pair_loss(logits, logits, [0, 0], [0, 0], [1.0, 0.5], top2_shared=False)
    assert c1.tolist() == [True, True] and c2[1].item() is True


def test_topk_hit_caps_k_at_the_number_of_classes():
    logits = torch.tensor([[0.0, 1.0]])
    assert mixing.topk_hit(logits, torch.tensor([0]), 5).tolist() == [True]
    assert mixing.topk_hit(logits, torch.tensor([0]), 1).tolist() == [False]
