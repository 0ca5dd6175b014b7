"""MixUp, the adaptive ratio, the mini-batch loss and the correctness rule, by hand-computed examples."""

from __future__ import annotations

import math

import pytest
import torch

from mixtrain_trainer import mixing

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


def test_mixed_batch_loss_equals_the_hand_computed_mean_over_inputs():
    ls = [[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]]  # two unmixed samples
    l1 = [[1.0, 2.0, 3.0]]  # one composite: constituent 1's logits ...
    l2 = [[0.0, -1.0, 4.0]]  # ... and constituent 2's (split propagation)
    ys, y1, y2, r = [0, 2], [1], [0], 0.3
    loss, parts = mixing.mixed_batch_loss(
        torch.tensor(ls),
        torch.tensor(ys),
        torch.tensor(l1),
        torch.tensor(y1),
        torch.tensor(l2),
        torch.tensor(y2),
        torch.tensor([r]),
        split=True,
    )
    ce_s = [_ce(ls[0], 0), _ce(ls[1], 2)]
    ce1, ce2 = _ce(l1[0], 1), _ce(l2[0], 0)
    # METHOD.md: mean over the 3 inputs; a composite counts once, as r*CE1 + (1-r)*CE2
    assert float(loss) == pytest.approx((ce_s[0] + ce_s[1] + r * ce1 + (1 - r) * ce2) / 3, rel=1e-6)
    assert parts["single_loss"].tolist() == pytest.approx(ce_s, rel=1e-6)
    assert parts["loss1"].tolist() == pytest.approx([ce1], rel=1e-6)  # per-sample losses are unweighted
    assert parts["loss2"].tolist() == pytest.approx([ce2], rel=1e-6)


def test_mixed_batch_loss_of_unmixed_only_and_of_composites_only():
    logits = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    y = torch.tensor([1, 1])
    empty_l, empty_y = torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)
    loss, _ = mixing.mixed_batch_loss(
        logits, y, empty_l, empty_y, empty_l, empty_y, torch.zeros(0), split=True
    )
    assert float(loss) == pytest.approx((_ce([1.0, 0.0], 1) + _ce([0.0, 3.0], 1)) / 2, rel=1e-6)
    loss, _ = mixing.mixed_batch_loss(
        empty_l, empty_y, logits, torch.tensor([0, 0]), logits, y, torch.tensor([0.5, 0.25]), split=False
    )
    expected = (
        0.5 * _ce([1.0, 0.0], 0)
        + 0.5 * _ce([1.0, 0.0], 1)
        + 0.25 * _ce([0.0, 3.0], 0)
        + 0.75 * _ce([0.0, 3.0], 1)
    ) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_correct_is_top2_for_shared_outputs_and_argmax_for_split_and_unmixed():
    # Label 1 is the runner-up: top-2 but not argmax. Label 2 is last: neither.
    logits = torch.tensor([[3.0, 2.0, 0.0]])
    args = (torch.tensor([1]), logits, torch.tensor([1]), logits, torch.tensor([2]), torch.tensor([0.5]))
    _, shared = mixing.mixed_batch_loss(logits, *args, split=False)
    _, split = mixing.mixed_batch_loss(logits, *args, split=True)
    assert shared["single_correct"].tolist() == [False]  # unmixed: argmax, whatever the operator
    assert split["single_correct"].tolist() == [False]
    assert shared["correct1"].tolist() == [True]  # MixUp / CutMix without split: label among the top 2
    assert shared["correct2"].tolist() == [False]
    assert split["correct1"].tolist() == [False]  # split propagation: argmax
    assert split["correct2"].tolist() == [False]
    _, top = mixing.mixed_batch_loss(
        logits,
        torch.tensor([0]),
        logits,
        torch.tensor([0]),
        logits,
        torch.tensor([0]),
        torch.tensor([0.5]),
        split=True,
    )
    assert top["single_correct"].tolist() == top["correct1"].tolist() == top["correct2"].tolist() == [True]


def test_topk_hit_caps_k_at_the_number_of_classes():
    logits = torch.tensor([[0.0, 1.0]])
    assert mixing.topk_hit(logits, torch.tensor([0]), 5).tolist() == [True]
    assert mixing.topk_hit(logits, torch.tensor([0]), 1).tolist() == [False]
