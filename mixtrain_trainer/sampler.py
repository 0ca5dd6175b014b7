"""The epoch planner (METHOD.md, "Forming an epoch"): S_mix pairs + S_noMix singles -> mini-batches.

Shuffle S_mix and pair consecutive samples (an odd one out is trained unmixed); shuffle composites and
singles together; cut into mini-batches of B inputs (a composite counts as one). Inside each mini-batch
the singles come first, so a batch splits with host-known counts and never syncs the device.
Rivals that change the plan (minibatch-skip) do so in their own module (``rivals/``).
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
    first_host: torch.Tensor | None = None  # the same positions on the CPU (for host-memory gathers)
    second_host: torch.Tensor | None = None

    @property
    def num_inputs(self) -> int:
        return int(self.first.shape[0])

    @property
    def num_batches(self) -> int:
        return len(self.singles)

    def batches(self, host: bool = False):
        """Yield (first, second, n_single) per mini-batch; ``second`` covers the composites only.
        ``host``: the CPU copies (slicing them costs no device transfer)."""
        first, second = (self.first_host, self.second_host) if host else (self.first, self.second)
        for b, n_single in enumerate(self.singles):
            lo, hi = self.bounds[b], self.bounds[b + 1]
            yield first[lo:hi], second[lo + n_single : hi], n_single

    def to(self, device) -> EpochPlan:
        """The plan with its positions on ``device`` (one copy per epoch; pinned, so asynchronous) and
        their CPU copies kept for host-side gathers."""
        device = torch.device(device)
        if device.type == "cpu":
            return self
        host_first, host_second = self.first_host, self.second_host
        if device.type == "cuda":
            host_first, host_second = host_first.pin_memory(), host_second.pin_memory()
        return dataclasses.replace(
            self, first=host_first.to(device, non_blocking=True), second=host_second.to(device, non_blocking=True),
            first_host=host_first, second_host=host_second,
        )


def plan_epoch(
    mix: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    skip: torch.Tensor | None = None,
) -> EpochPlan:
    """Plan one epoch. mix, skip: (N,) bool on the CPU (S_mix, samples to leave out).

    Every sample not skipped is trained exactly once. Inputs = |S_noMix| + ceil(|S_mix| / 2).
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
    return layout(first[order], second[order], batch_size, skip)


def layout(first: torch.Tensor, second: torch.Tensor, batch_size: int, skipped: torch.Tensor) -> EpochPlan:
    """Cut shuffled inputs (first, second; CPU) into mini-batches of ``batch_size``, singles first in each."""
    starts = list(range(0, first.numel(), batch_size))
    # Singles first inside each batch: a stable sort on (batch, is composite) keeps the shuffled order.
    batch_of = torch.arange(first.numel()) // batch_size
    is_comp = second >= 0
    order = torch.sort(batch_of * 2 + is_comp, stable=True).indices
    first, second = first[order], second[order]
    singles = torch.bincount(batch_of[~is_comp], minlength=len(starts)).tolist()
    bounds = starts + [first.numel()]
    return EpochPlan(first=first, second=second, bounds=bounds, singles=singles, skipped=skipped,
                     first_host=first, second_host=second)
