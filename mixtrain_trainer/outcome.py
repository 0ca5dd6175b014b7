"""One epoch's per-sample outcome, kept on the device: what every epoch strategy fills and the trainer reads.

Every training sample gets one row (indexed by its position 0..N-1) plus one spare row N, where the
discarded second constituent of a single lands, so that a pair batch scatters with fixed shapes and no
mask. Strategies write rows with ``record_batch`` (a trained pair batch) and ``record_forward`` (a
forward-only pass: Selective-Backprop's selection); nothing here reads a value on the host.

Fields and how a cross-rank combine (one per epoch, data-parallel trials) merges them: see
``PER_SAMPLE`` (each sample's row comes from the rank that ``touched`` it; ranks touch disjoint samples)
and ``SUMMED`` (added across ranks); ``HOST_COUNTS`` are host-side integers, also added.
"""

from __future__ import annotations

import dataclasses

import torch

from mixtrain_trainer.errors import NonFiniteLossError
from mixtrain_trainer.step import PairBatch, StepResult


@dataclasses.dataclass
class Outcome:
    """Per-sample tensors are (N + 1,) on the training device (row N is the spare row); ``rows()`` drops it."""

    loss: torch.Tensor  # float32: the per-sample loss (METHOD.md); NaN where neither trained nor forwarded
    correct: torch.Tensor  # bool
    mixed: torch.Tensor  # bool: trained as a constituent of a composite
    partner: torch.Tensor  # int64: the other constituent's position, -1 unmixed
    weight: torch.Tensor  # float32: r as a constituent, the loss weight (1 by default) unmixed
    touched: torch.Tensor  # bool: rows this process wrote (trained or forwarded)
    sums: torch.Tensor  # (4,) float64: [loss sum over inputs, inputs, correct samples, samples trained]
    bad_step: torch.Tensor  # () int64: first step with a non-finite loss, -1 while none
    skipped: torch.Tensor | None = None  # (N,) bool: not backpropagated this epoch (set by the strategy)
    n_inputs: int = 0  # inputs through forward + backward (host-known)
    n_forward: int = 0  # inputs through a forward pass only (Selective-Backprop's selection, StaleSB refreshes)
    lr: float = 0.0  # the learning rate of the epoch's last step

    PER_SAMPLE = ("loss", "correct", "mixed", "partner", "weight", "touched")
    SUMMED = ("sums",)
    HOST_COUNTS = ("n_inputs", "n_forward")

    @classmethod
    def empty(cls, num_samples: int, device) -> Outcome:
        n = num_samples + 1
        return cls(
            loss=torch.full((n,), float("nan"), device=device),
            correct=torch.zeros(n, dtype=torch.bool, device=device),
            mixed=torch.zeros(n, dtype=torch.bool, device=device),
            partner=torch.full((n,), -1, dtype=torch.long, device=device),
            weight=torch.ones(n, device=device),
            touched=torch.zeros(n, dtype=torch.bool, device=device),
            sums=torch.zeros(4, dtype=torch.float64, device=device),
            bad_step=torch.full((), -1, dtype=torch.long, device=device),
        )

    @property
    def num_samples(self) -> int:
        return int(self.loss.shape[0]) - 1

    @property
    def spare(self) -> int:
        """The spare row's index (= N): where a single's discarded second constituent is scattered."""
        return self.num_samples

    def rows(self, name: str) -> torch.Tensor:
        """A per-sample field without the spare row: (N,)."""
        return getattr(self, name)[: self.num_samples]

    def check_finite(self, epoch: int) -> None:
        """Raise NonFiniteLossError if any step's loss was not finite (one host read, at the epoch's end)."""
        bad = int(self.bad_step)
        if bad >= 0:
            raise NonFiniteLossError(epoch, bad)


def record_batch(out: Outcome, step: int, result: StepResult, ids1: torch.Tensor, ids2: torch.Tensor,
                 batch: PairBatch) -> None:
    """Scatter one trained pair batch into the epoch's rows (fixed shapes, no host sync).

    ids1, ids2: (B,) sample positions of each slot's constituents; ids2 is ``out.spare`` for a single.
    """
    comp = batch.composite
    out.loss[ids1], out.loss[ids2] = result.ce1, result.ce2
    out.correct[ids1], out.correct[ids2] = result.correct1, result.correct2
    out.mixed[ids1], out.mixed[ids2] = comp, comp
    out.partner[ids1] = torch.where(comp, ids2, -1)
    out.partner[ids2] = ids1
    w1 = batch.w * batch.r
    out.weight[ids1], out.weight[ids2] = w1.float(), (batch.w - w1).float()
    out.touched[ids1], out.touched[ids2] = True, True
    inputs = ids1.shape[0]  # host-known: python scalars go in as kernel arguments, no copies
    composites = comp.sum()
    correct = result.correct1.sum() + (result.correct2 & comp).sum()
    sums = out.sums
    sums[0] += result.loss.double() * inputs
    sums[1] += inputs
    sums[2] += correct
    sums[3] += composites + inputs
    out.bad_step = torch.where((out.bad_step < 0) & ~torch.isfinite(result.loss), step, out.bad_step)


def record_forward(out: Outcome, ids: torch.Tensor, loss: torch.Tensor, correct: torch.Tensor) -> None:
    """Rows of a forward-only pass (Selective-Backprop's selection): its per-sample loss and correctness."""
    out.loss[ids] = loss.float()
    out.correct[ids] = correct
    out.touched[ids] = True
