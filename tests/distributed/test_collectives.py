"""The collectives of data-parallel trials on a real 2-process gloo group, against hand-built oracles."""

from __future__ import annotations

import math

import pytest
import torch

from mixtrain_trainer import distributed as D
from tests.distributed.ranks import run_ranks

N = 11  # rows 0..9 trained (rank 0 the even ones, rank 1 the odd ones); row 10 by nobody


def _outcome_on(rank: int):
    """What rank ``rank`` holds after training its share: defaults everywhere but its own rows."""
    loss = torch.full((N,), float("nan"))
    correct = torch.zeros(N, dtype=torch.bool)
    partner = torch.full((N,), -1, dtype=torch.long)
    weight = torch.ones(N)
    touched = torch.zeros(N, dtype=torch.bool)
    mine = torch.arange(rank, 10, 2)
    loss[mine] = mine.float() / 3 + 0.1  # not representable in few bits: exactness is tested
    correct[mine] = mine % 3 == 0
    partner[mine] = (mine + 5) % 10
    weight[mine] = 0.25 + rank * 0.5
    touched[mine] = True
    sums = torch.tensor([1.5 + rank, 4.0, 2.0 + rank, 5.0], dtype=torch.float64)
    return {"loss": loss, "correct": correct, "partner": partner, "weight": weight}, touched, sums


def _combine(rank: int, world: int) -> None:
    rows, touched, sums = _outcome_on(rank)
    out, summed, counts, owners = D.combine_rows(rows, touched, {"sums": sums}, {"n_inputs": 3 + rank})
    # the oracle: one process that trained every row
    ids = torch.arange(10)
    want_loss = torch.full((N,), float("nan"))
    want_loss[ids] = ids.float() / 3 + 0.1
    assert torch.equal(out["loss"][:10], want_loss[:10]) and math.isnan(out["loss"][10])
    assert out["loss"].dtype == torch.float32
    assert out["correct"].tolist() == [i % 3 == 0 for i in range(10)] + [False]
    assert out["partner"].tolist() == [(i + 5) % 10 for i in range(10)] + [-1]
    assert out["weight"].tolist() == [0.25 if i % 2 == 0 else 0.75 for i in range(10)] + [1.0]
    assert owners.tolist() == [1] * 10 + [0]
    assert summed["sums"].tolist() == [4.0, 8.0, 5.0, 10.0] and summed["sums"].dtype == torch.float64
    assert counts == {"n_inputs": 7} and isinstance(counts["n_inputs"], int)
    # identical on both ranks, checked by the module's own comparison
    digests = D.check_same({k: v for k, v in out.items()}, "combined outcome")
    assert len(digests) == 2 and digests[0] == digests[1]


def _diverge(rank: int, world: int) -> None:
    same = {"mix_next": torch.tensor([True, False, True])}
    D.check_same(same, "agreeing state")
    differs = {"mix_next": torch.tensor([True, rank == 1, True])}
    with pytest.raises(D.RankDivergenceError, match="ranks disagree"):
        D.check_same(differs, "policy state")


def _global_bn(rank: int, world: int) -> None:
    g = torch.Generator().manual_seed(0)
    x_full = torch.randn(8, 3, 4, 4, generator=g) * 2 + 1
    w_full = torch.randn(8, 3, 4, 4, generator=g)
    ref = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        ref.bias.copy_(torch.tensor([0.0, -1.0, 0.3]))
    bn = D.convert_batchnorm(torch.nn.Sequential(ref)).train()
    assert isinstance(bn[0], D.GlobalBatchNorm)
    ref_copy = torch.nn.BatchNorm2d(3)
    ref_copy.load_state_dict(ref.state_dict())  # before the forward updates the shared buffers
    part = slice(4 * rank, 4 * rank + 4)
    x = x_full[part].clone().requires_grad_(True)
    y_train = bn(x)
    (y_train * w_full[part]).sum().backward()
    # oracle: one batch norm over the global batch of 8
    xf = x_full.clone().requires_grad_(True)
    y_ref = ref_copy.train()(xf)
    (y_ref * w_full).sum().backward()
    assert torch.allclose(y_train.detach(), y_ref[part].detach(), atol=1e-5)
    with torch.no_grad():
        y = D.GlobalBatchNorm.forward(bn[0].eval(), x.detach())  # eval: running statistics
    y_eval_ref = ref_copy.eval()(x.detach())
    assert torch.allclose(y, y_eval_ref, atol=1e-5), "running statistics differ from the global batch's"
    assert torch.allclose(x.grad, xf.grad[part], atol=1e-5)
    wgrad = bn[0].weight.grad.clone()
    D.all_reduce_sum(wgrad)  # the ranks' losses add up to the global loss
    assert torch.allclose(wgrad, ref_copy.weight.grad, atol=1e-4)


def _global_bn_forward(rank: int, world: int) -> None:
    g = torch.Generator().manual_seed(1)
    x_full = torch.randn(6, 2, 3, 3, generator=g)
    bn = D.GlobalBatchNorm(2).train()
    y = bn(x_full[3 * rank: 3 * rank + 3])
    ref = torch.nn.BatchNorm2d(2).train()(x_full)
    assert torch.allclose(y, ref[3 * rank: 3 * rank + 3], atol=1e-5)


def _average(rank: int, world: int) -> None:
    p = torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([1.0, 2.0, 3.0]) * (rank + 1)
    q = torch.nn.Parameter(torch.zeros(2, 2))
    q.grad = torch.full((2, 2), float(rank))
    D.average_gradients([p, q])
    assert p.grad.tolist() == [1.5, 3.0, 4.5] and q.grad.tolist() == [[0.5, 0.5], [0.5, 0.5]]
    m = torch.nn.Linear(2, 2)
    with torch.no_grad():
        m.weight.fill_(rank)
    D.broadcast_parameters(m)
    assert m.weight.eq(0).all()
    assert D.broadcast_object({"rank": rank}) == {"rank": 0}
    total = torch.tensor([float(rank + 1)])
    assert D.all_reduce_sum(total).item() == 3.0


def _all_checks(rank: int, world: int) -> None:
    for check in (_combine, _diverge, _global_bn, _global_bn_forward, _average):
        check(rank, world)


def test_collectives_on_two_gloo_ranks():
    """One spawn (starting processes is the slow part): the outcome combine against the one-process oracle,
    divergence detection, batch norm over the global batch (forward, backward, running statistics), the
    gradient average and the broadcasts."""
    run_ranks(_all_checks)


def test_one_process_helpers_are_identities():
    assert not D.is_distributed() and D.rank() == 0 and D.world_size() == 1 and D.is_main()
    rows = {"loss": torch.tensor([1.0, float("nan")])}
    out, _, counts, owners = D.combine_rows(rows, torch.tensor([True, False]), {}, {"n": 2})
    assert out["loss"] is rows["loss"] and counts == {"n": 2} and owners.tolist() == [1, 0]


@pytest.mark.parametrize("n,world", [(10, 2), (11, 2), (7, 3), (2, 4)])
def test_shards_cover_every_item_once(n, world):
    covered = [i for r in range(world) for i in range(n)[D.shard(n, r, world)]]
    assert covered == list(range(n))
    sizes = [len(range(n)[D.shard(n, r, world)]) for r in range(world)]
    assert max(sizes) - min(sizes) <= 1


def test_step_share_full_and_last_steps():
    # a full global step of 2 x 4 inputs: rank r takes its batch_size consecutive inputs
    assert [D.step_share(8, 16, r, 2, per_rank=4) for r in (0, 1)] == [slice(8, 12), slice(12, 16)]
    # the last, shorter step (5 inputs) is cut evenly
    assert [D.step_share(16, 21, r, 2, per_rank=4) for r in (0, 1)] == [slice(16, 18), slice(18, 21)]


def _who(rank: int, world: int, tag: str):
    import torch

    return {"tag": tag, "rank": rank, "world": world, "threads": torch.get_num_threads(),
            "all": D.gather_objects(rank)}


def test_spawn_returns_rank0_result_and_propagates_a_failure():
    out = D.spawn(_who_entry, 2, "x", threads=1)
    assert out == {"tag": "x", "rank": 0, "world": 2, "threads": 1, "all": [0, 1]}
    with pytest.raises(Exception, match="rank 1 failed on purpose"):
        D.spawn(_fail_on_rank1, 2, threads=1)


def _who_entry(tag: str):
    return _who(D.rank(), D.world_size(), tag)


def _fail_on_rank1():
    if D.rank() == 1:
        raise RuntimeError("rank 1 failed on purpose")


@pytest.mark.parametrize("n,world,per_rank,mix_share", [(203, 2, 16, 0.6), (64, 2, 32, 0.0), (100, 3, 8, 1.0),
                                                        (33, 4, 4, 0.5)])
def test_shard_plan_splits_every_global_step(n, world, per_rank, mix_share):
    """Ranks' shares of the one global plan: every input once, same steps, singles first, the global
    step's inputs and nothing else (the plan a one-worker run of batch world x per_rank would train)."""
    from mixtrain_trainer.sampler import plan_epoch

    mix = torch.rand(n, generator=torch.Generator().manual_seed(n)) < mix_share
    plan = plan_epoch(mix, world * per_rank, torch.Generator().manual_seed(7))
    shares = [D.shard_plan(plan, per_rank, r, world) for r in range(world)]
    for s in shares:
        assert s.num_batches == plan.num_batches
        assert all(hi - lo <= per_rank for lo, hi in zip(s.bounds, s.bounds[1:]))
        assert torch.equal(s.skipped, plan.skipped)
    for b, (g_first, g_second, g_single) in enumerate(plan.batches()):
        parts = [list(s.batches())[b] for s in shares]
        firsts = torch.cat([p[0] for p in parts])
        assert torch.equal(firsts, g_first)  # the global step's inputs, in order, split across ranks
        assert torch.equal(torch.cat([p[1] for p in parts]), g_second)  # composites' partners
        assert sum(p[2] for p in parts) == g_single
        for first, second, n_single in parts:  # singles first in each share
            assert second.numel() == first.numel() - n_single
    trained = torch.cat([s.first for s in shares] + [s.second[s.second >= 0] for s in shares])
    assert sorted(trained.tolist()) == sorted(torch.nonzero(~plan.skipped).squeeze(1).tolist())
