"""The epoch planner (METHOD.md, "Forming an epoch"): ``sampler.plan_epoch``; minibatch-skip's ``drop_batches``."""

from __future__ import annotations

import math

import pytest
import torch

from mixtrain_trainer.rivals.minibatch_skip import drop_batches
from mixtrain_trainer.sampler import plan_epoch


def _mask(n: int, members) -> torch.Tensor:
    m = torch.zeros(n, dtype=torch.bool)
    m[list(members)] = True
    return m


def _check_batches(plan, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    """Bounds, batch sizes and singles-first layout; returns the batches."""
    sizes = [hi - lo for lo, hi in zip(plan.bounds, plan.bounds[1:])]
    assert plan.bounds[0] == 0 and plan.bounds[-1] == plan.num_inputs
    assert all(s == batch_size for s in sizes[:-1]) and 0 < sizes[-1] <= batch_size
    batches = list(plan.batches())
    assert len(batches) == plan.num_batches == len(sizes)
    for b, (first, second, n_single) in enumerate(batches):
        lo, hi = plan.bounds[b], plan.bounds[b + 1]
        assert n_single == plan.singles[b]
        assert (plan.second[lo : lo + n_single] == -1).all(), "singles come first"
        assert (plan.second[lo + n_single : hi] >= 0).all(), "then the composites"
        assert torch.equal(first, plan.first[lo:hi])
        assert second.numel() == hi - lo - n_single
    return batches


def _trained(plan) -> torch.Tensor:
    return torch.cat([plan.first, plan.second[plan.second >= 0]])


@pytest.mark.parametrize(("n", "n_mix", "batch_size"), [(37, 13, 8), (40, 40, 16), (20, 0, 6), (50, 21, 64)])
def test_every_sample_trained_exactly_once_and_inputs_count(n, n_mix, batch_size):
    mix = _mask(n, torch.randperm(n, generator=torch.Generator().manual_seed(n))[:n_mix].tolist())
    plan = plan_epoch(mix, batch_size, torch.Generator().manual_seed(0))
    trained = _trained(plan)
    assert torch.equal(trained.sort().values, torch.arange(n)), "each sample exactly once"
    assert plan.num_inputs == (n - n_mix) + math.ceil(n_mix / 2)
    composites = plan.second >= 0
    assert int(composites.sum()) == n_mix // 2
    assert mix[plan.first[composites]].all() and mix[plan.second[composites]].all(), "pairs come from S_mix"
    odd = mix[plan.first[~composites]]
    assert int(odd.sum()) == n_mix % 2, "the odd one out of S_mix trains unmixed"
    batches = _check_batches(plan, batch_size)
    assert sum(s for _, _, s in batches) == (n - n_mix) + n_mix % 2
    assert not plan.skipped.any()


def test_composites_and_singles_are_shuffled_together():
    n = 64
    mix = _mask(n, range(0, n, 2))
    plan = plan_epoch(mix, 8, torch.Generator().manual_seed(1))
    # 32 singles + 16 composites in 6 batches of 8: shuffled together, most batches hold both kinds
    assert sum(0 < s < 8 for s in plan.singles) >= 3
    assert not torch.equal(plan.first[plan.second == -1].sort().values, plan.first[plan.second == -1])


def test_skip_mask_excludes_samples_even_from_s_mix():
    n = 30
    mix = _mask(n, range(10))
    skip = _mask(n, [0, 1, 2, 20, 21])
    plan = plan_epoch(mix, 7, torch.Generator().manual_seed(2), skip=skip)
    trained = _trained(plan)
    assert torch.equal(trained.sort().values, torch.tensor(sorted(set(range(n)) - {0, 1, 2, 20, 21})))
    assert torch.equal(plan.skipped, skip)
    # S_mix without the skipped: 7 samples -> 3 composites + 1 odd one out; 18 others
    assert plan.num_inputs == 18 + 4
    _check_batches(plan, 7)


def test_minibatch_skip_drops_whole_batches_and_marks_their_samples_skipped():
    n, batch_size = 100, 10
    mix = _mask(n, range(0, 40))
    full = plan_epoch(mix, batch_size, torch.Generator().manual_seed(5))
    dropped = drop_batches(full, 5, batch_size, torch.Generator().manual_seed(5))
    # the same shuffle: each kept batch is one of the full plan's batches (same inputs)
    batch_sets = [
        frozenset(zip(f.tolist(), full.second[lo : lo + f.numel()].tolist()))
        for f, lo in zip((f for f, _, _ in full.batches()), full.bounds)
    ]
    kept = [
        frozenset(zip(f.tolist(), dropped.second[lo : lo + f.numel()].tolist()))
        for f, lo in zip((f for f, _, _ in dropped.batches()), dropped.bounds)
    ]
    assert len(batch_sets) == 8 and len(kept) == 3, "exactly the asked number of the 8 batches is dropped"
    assert all(k in batch_sets for k in kept)
    trained = _trained(dropped)
    assert trained.unique().numel() == trained.numel()
    assert not dropped.skipped[trained].any()
    assert torch.equal(
        dropped.skipped.nonzero().squeeze(1), torch.tensor(sorted(set(range(n)) - set(trained.tolist())))
    )
    lost = [b for b in batch_sets if b not in kept]
    lost_samples = {s for b in lost for pair in b for s in pair if s >= 0}
    assert lost_samples == set(dropped.skipped.nonzero().squeeze(1).tolist())
    _check_batches(dropped, batch_size)


def test_all_samples_skipped_gives_an_empty_plan():
    n = 5
    plan = plan_epoch(
        torch.ones(n, dtype=torch.bool),
        4,
        torch.Generator().manual_seed(0),
        skip=torch.ones(n, dtype=torch.bool),
    )
    assert plan.num_inputs == 0 and plan.num_batches == 0 and list(plan.batches()) == []


def test_plan_is_deterministic_for_a_seeded_generator():
    mix = _mask(41, range(3, 30))

    def plan(seed):
        g = torch.Generator().manual_seed(seed)
        return drop_batches(plan_epoch(mix, 8, g), 1, 8, g)

    a, b, c = plan(7), plan(7), plan(8)
    assert torch.equal(a.first, b.first) and torch.equal(a.second, b.second)
    assert a.bounds == b.bounds and a.singles == b.singles and torch.equal(a.skipped, b.skipped)
    assert not (torch.equal(a.first, c.first) and torch.equal(a.second, c.second))
