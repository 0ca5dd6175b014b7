"""The epoch planner (METHOD.md, "Forming an epoch"): S_mix pairs + S_noMix singles -> mini-batches.

Shuffle S_mix and pair consecutive samples (an odd one out is trained unmixed); shuffle composites and
singles together; cut into mini-batches of B inputs (a composite counts as one). Inside each mini-batch
the singles come first, so the loop splits a batch with host-known counts and never syncs the device.
"""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass(frozen=True)
class EpochPlan:
    """first[i], second[i]: the sample positions of input i (second = -1 for an unmixed input).

    Batch b covers inputs ``bounds[b]:bounds[b+1]``, of which the first ``singles[b]`` are unmixed.
    """

    first: torch.Tensor  # (I,) int64
    second: torch.Tensor  # (I,) int64, -1 for unmixed inputs
    bounds: list[int]
    singles: list[int]
    skipped: torch.Tensor  # (N,) bool: samples not trained this epoch

    @property
    def num_inputs(self) -> int:
        return int(self.first.shape[0])

    @property
    def num_batches(self) -> int:
        return len(self.singles)

    def batches(self):
        """Yield (first, second, n_single) per mini-batch; ``second`` covers the composites only."""
        for b, n_single in enumerate(self.singles):
            lo, hi = self.bounds[b], self.bounds[b + 1]
            yield self.first[lo:hi], self.second[lo + n_single : hi], n_single

    def to(self, device) -> EpochPlan:
        return dataclasses.replace(
            self, first=self.first.to(device, non_blocking=True), second=self.second.to(device, non_blocking=True)
        )


def plan_epoch(
    mix: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    skip: torch.Tensor | None = None,
    drop_batches: float = 0.0,
) -> EpochPlan:
    """Plan one epoch. mix, skip: (N,) bool on the CPU (S_mix, samples to leave out).

    ``drop_batches`` (minibatch-skip): that share of the mini-batches is dropped, chosen at random; their
    samples are marked skipped. Every other sample is trained exactly once.
    Inputs = |S_noMix| + ceil(|S_mix| / 2) (before dropping).
    """
    mix, n = mix.cpu(), mix.shape[0]
    skip = torch.zeros(n, dtype=torch.bool) if skip is None else skip.cpu().clone()
    mix = mix & ~skip
    pool = torch.nonzero(mix).squeeze(1)
    pool = pool[torch.randperm(pool.numel(), generator=generator)]
    pairs = pool.numel() // 2
    odd = pool[2 * pairs :]
    single_ids = torch.cat([torch.nonzero(~mix & ~skip).squeeze(1), odd])
    first = torch.cat([single_ids, pool[0 : 2 * pairs : 2]])
    second = torch.cat([torch.full_like(single_ids, -1), pool[1 : 2 * pairs : 2]])
    order = torch.randperm(first.numel(), generator=generator)
    first, second = first[order], second[order]

    starts = list(range(0, first.numel(), batch_size))
    if drop_batches > 0 and starts:
        keep = torch.rand(len(starts), generator=generator) >= drop_batches
        keep_starts = [s for s, k in zip(starts, keep.tolist()) if k]
        dropped = [s for s, k in zip(starts, keep.tolist()) if not k]
        for s in dropped:
            chunk = slice(s, s + batch_size)
            skip[first[chunk]] = True
            sec = second[chunk]
            skip[sec[sec >= 0]] = True
        kept = [torch.arange(s, min(s + batch_size, first.numel())) for s in keep_starts]
        index = torch.cat(kept) if kept else torch.zeros(0, dtype=torch.int64)
        first, second = first[index], second[index]
        starts = list(range(0, first.numel(), batch_size))
    # Singles first inside each batch: a stable sort on (batch, is composite) keeps the shuffled order.
    batch_of = torch.arange(first.numel()) // batch_size
    is_comp = second >= 0
    order = torch.sort(batch_of * 2 + is_comp, stable=True).indices
    first, second = first[order], second[order]
    singles = torch.bincount(batch_of[~is_comp], minlength=len(starts)).tolist()
    bounds = starts + [first.numel()]
    return EpochPlan(first=first, second=second, bounds=bounds, singles=singles, skipped=skip)
