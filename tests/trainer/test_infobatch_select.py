"""InfoBatch's pruning decision against METHOD.md, on hand-computed scores."""

from __future__ import annotations

import pytest
import torch

from mixtrain_trainer.rivals.infobatch_select import anneal_epoch, infobatch_decision

# mean 1.0: W = {0, 2, 4, 5} (strictly below; sample 6 equals the mean and is kept at weight 1)
SCORES = torch.tensor([0.1, 2.0, 0.5, 1.9, 0.2, 0.9, 1.0, 1.4])


def test_prunes_half_of_the_well_learned_and_reweights_the_rest():
    g = torch.Generator().manual_seed(7)
    d = infobatch_decision(SCORES, epoch=1, epochs=8, ratio=0.5, delta=0.875, generator=g)
    assert d.n_well_learned == 4 and d.n_pruned == 2  # round(0.5 x 4)
    order = torch.randperm(4, generator=torch.Generator().manual_seed(7))
    expected = sorted(torch.tensor([0, 2, 4, 5])[order[:2]].tolist())
    assert torch.nonzero(d.pruned).flatten().tolist() == expected
    kept_w = sorted(set([0, 2, 4, 5]) - set(expected))
    assert d.weights[kept_w].tolist() == [2.0, 2.0]  # 1 / (1 - r)
    assert d.weights[[1, 3, 6, 7]].tolist() == [1.0] * 4 and d.weights[expected].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("ratio, expected", [(0.3, 1), (0.375, 2), (0.625, 2), (0.7, 3), (0.0, 0)])
def test_how_many(ratio, expected):
    """round(r |W|) with |W| = 4, halves to even: 1.2 -> 1, 1.5 -> 2, 2.5 -> 2, 2.8 -> 3."""
    d = infobatch_decision(SCORES, epoch=3, epochs=8, ratio=ratio, generator=torch.Generator().manual_seed(0))
    assert d.n_pruned == expected
    assert d.pruned[[1, 3, 6, 7]].sum() == 0  # only well-learned samples are pruned
    kept = [i for i in (0, 2, 4, 5) if not d.pruned[i]]
    assert d.weights[kept].tolist() == pytest.approx([1 / (1 - ratio)] * len(kept))


def test_epoch_zero_and_annealing_train_everything():
    assert anneal_epoch(8, 0.875) == 7 and anneal_epoch(90, 0.875) == 79  # ceil(78.75)
    for epoch in (0, 7, 8, 20):
        d = infobatch_decision(SCORES, epoch=epoch, epochs=8, ratio=0.5, delta=0.875,
                               generator=torch.Generator().manual_seed(1))
        assert d.n_pruned == 0 and torch.all(d.weights == 1.0), epoch
    assert infobatch_decision(SCORES, 6, 8, generator=torch.Generator().manual_seed(1)).n_pruned == 2


def test_same_generator_state_same_decision():
    g = torch.Generator().manual_seed(3)
    g.manual_seed(3)
    state = g.get_state()
    a = infobatch_decision(SCORES, 2, 8, generator=g)
    g2 = torch.Generator()
    g2.set_state(state)
    b = infobatch_decision(SCORES, 2, 8, generator=g2)
    assert torch.equal(a.pruned, b.pruned) and torch.equal(a.weights, b.weights)
    with pytest.raises(ValueError, match="prune ratio"):
        infobatch_decision(SCORES, 2, 8, ratio=1.0)
