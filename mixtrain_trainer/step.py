"""The fixed-shape pair batch and the one training step (forward, loss, backward, optimizer update).

Every input slot is a pair. A mini-batch of B inputs is B slots of (x1, x2, grid mask or ratio r, loss
weight w):

- a composite is (first, second) with r its constituent-1 share (CutMix: constituent 1's cells of the
  feature grid; MixUp: its pixel weight);
- a single is (x, x) with constituent 1 owning every cell (CutMix) or r = 1 (MixUp); its second
  constituent's loss weight is 0 and its outcome is discarded (``outcome.record_batch`` scatters it into
  a spare row past the last sample).

So the backbone sees (B, C, H, W), split pooling (B, 2 cell sets), the head 2B rows (B without split
propagation) and the loss B pairs at every step of every epoch and variant; only an epoch's last,
shorter batch has another shape (it runs uncompiled). Nothing branches on the number of composites.

The mini-batch loss is the mean over slots of w1 * CE(logits1, y1) + w2 * CE(logits2, y2) with
w1 = w * r and w2 = w * (1 - r): a composite (w = 1) gives METHOD.md's r * CE1 + (1 - r) * CE2, a single
(r = 1) its CE times its loss weight w (1, or InfoBatch's 1 / (1 - r) for a kept low-loss sample).

Correct (METHOD.md): argmax for singles and split constituents; top-2 of the shared output for the
constituents of an unsplit composite (MixUp, CutMix without split propagation).

``TrainStep.train_step`` is the one step every epoch strategy calls. With ``compile`` the forward and
loss are one ``torch.compile`` graph (AOTAutograd compiles its backward too; on CUDA with CUDA graphs,
``mode="reduce-overhead"``); the update is fused SGD on CUDA.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from mixtrain_trainer.mixing import OPERATORS, split_pool, topk_hit


@dataclasses.dataclass
class PairBatch:
    """B slots of pairs, on the training device.

    x1, x2: (B, C, H, W) constituents (x2 is x1's image for a single; None when the run mixes nothing);
    mask: (B, h, w) bool, constituent 1's feature-grid cells (grid-mask operators only; all True for a
    single); r: (B,) float, constituent 1's weight (1 for a single); y1, y2: (B,) labels (y2 = y1 for a
    single); w: (B,) float, the slot's loss weight; composite: (B,) bool.
    """

    x1: torch.Tensor
    x2: torch.Tensor | None
    mask: torch.Tensor | None
    r: torch.Tensor
    y1: torch.Tensor
    y2: torch.Tensor
    w: torch.Tensor
    composite: torch.Tensor

    @property
    def size(self) -> int:
        return int(self.x1.shape[0])

    def tensors(self) -> tuple:
        return (self.x1, self.x2, self.mask, self.r, self.y1, self.y2, self.w, self.composite)


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """What a run's step does, fixed for the whole run (no per-step branches).

    operator: a ``mixing.OPERATORS`` name or None (nothing mixed: x2 is never built); split: split
    propagation (grid-mask operators); stride: the model's feature stride (pixels per grid cell);
    transform: applied to the (composed) input before the backbone (input-scaling); amp_dtype: autocast
    dtype or None.
    """

    operator: str | None = None
    split: bool = False
    stride: int | None = None
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    amp_dtype: torch.dtype | None = None
    device_type: str = "cpu"

    @property
    def top2_shared(self) -> bool:
        """Unsplit composites share one output: their constituents are correct when among its top 2."""
        return self.operator is not None and not self.split


@dataclasses.dataclass
class StepResult:
    """Per-slot outcome of one step (detached): the batch loss and each constituent's CE and correctness."""

    loss: torch.Tensor  # () the mini-batch loss
    ce1: torch.Tensor  # (B,)
    ce2: torch.Tensor  # (B,)
    correct1: torch.Tensor  # (B,) bool
    correct2: torch.Tensor  # (B,) bool


def autocast(device_type: str, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=dtype)


def pair_logits(model, x: torch.Tensor, mask: torch.Tensor | None, split: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass over B slots -> (logits1, logits2), each (B, K).

    With ``split`` each constituent's cells are pooled on their own (split propagation: the head runs on
    2B rows); a single's mask covers every cell, so its logits1 are the ordinary pooled output. Otherwise
    (or for a model without a feature map) both constituents share the slot's logits.
    """
    features = model.forward_features(x)
    if features.ndim == 2:  # no feature map (MixUp on an MLP): nothing to pool or split
        logits = model.forward_head(features)
        return logits, logits
    if split:
        p1, p2 = split_pool(features, mask)
        logits = model.forward_head(torch.cat([p1, p2]))
        b = p1.shape[0]
        return logits[:b], logits[b:]
    logits = model.forward_head(features.mean((2, 3)))
    return logits, logits


def pair_loss(
    logits1: torch.Tensor,
    logits2: torch.Tensor,
    y1: torch.Tensor,
    y2: torch.Tensor,
    r: torch.Tensor,
    w: torch.Tensor,
    composite: torch.Tensor,
    top2_shared: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The mini-batch loss and each slot's per-constituent CE (unweighted) and correctness.

    loss = mean over slots of w*r*CE(logits1, y1) + w*(1-r)*CE(logits2, y2). All inputs (B,) or (B, K).
    Returns (loss, ce1, ce2, correct1, correct2), the last four detached / bool.
    """
    ce1 = F.cross_entropy(logits1.float(), y1, reduction="none")
    ce2 = F.cross_entropy(logits2.float(), y2, reduction="none")
    w1, w2 = w * r, w * (1 - r)
    loss = (w1 * ce1 + w2 * ce2).mean()
    correct1, correct2 = topk_hit(logits1, y1, 1), topk_hit(logits2, y2, 1)
    if top2_shared:
        correct1 = torch.where(composite, topk_hit(logits1, y1, 2), correct1)
        correct2 = torch.where(composite, topk_hit(logits2, y2, 2), correct2)
    return loss, ce1.detach(), ce2.detach(), correct1, correct2


def compose(spec: StepSpec, x1, x2, mask, r) -> torch.Tensor:
    """The model's input for each slot: the operator's composite of (x1, x2), then the run's transform."""
    x = x1 if spec.operator is None else OPERATORS[spec.operator].compose(x1, x2, mask, r, spec.stride)
    return spec.transform(x) if spec.transform is not None else x


def forward_loss(model, spec: StepSpec, x1, x2, mask, r, y1, y2, w, composite):
    """Forward and loss of one pair batch (the part ``compile`` turns into one graph)."""
    x = compose(spec, x1, x2, mask, r)
    with autocast(spec.device_type, spec.amp_dtype):
        logits1, logits2 = pair_logits(model, x, mask, spec.split)
    return pair_loss(logits1, logits2, y1, y2, r, w, composite, spec.top2_shared)


def compile_mode(setting: str | bool, device: torch.device, grad_accum: int) -> str | None:
    """None (eager) or the ``torch.compile`` mode for ``compile: auto | true | false``.

    auto: compile on CUDA only. On CUDA the mode is "reduce-overhead" (CUDA graphs) unless gradients
    are accumulated over several batches (graph-owned gradients would be overwritten between steps):
    then the default mode. On the CPU the default mode (inductor's C++ kernels).
    """
    on = device.type == "cuda" if setting == "auto" else bool(setting)
    if not on:
        return None
    if device.type == "cuda" and grad_accum == 1:
        return "reduce-overhead"
    return "default"


def make_optimizer(model: torch.nn.Module, cfg) -> torch.optim.SGD:
    """SGD with weight decay on weights only (not on norms and biases); fused on CUDA."""
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    o = cfg.optimizer
    cuda = next(model.parameters()).device.type == "cuda"
    return torch.optim.SGD(
        [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, fused=True if cuda else None,
    )


class TrainStep:
    """The one training step: ``train_step(batch, ...)`` = forward, loss, backward, optimizer update.

    Full batches (``batch_size`` slots) run the compiled graph when ``mode`` is set; a shorter last
    batch runs the same function eagerly, so no shape is ever recompiled. ``compile_seconds`` is the time
    ``warm_up`` spent compiling (and recording CUDA graphs), kept out of every epoch's time.
    """

    def __init__(self, model, optimizer, scaler, spec: StepSpec, batch_size: int, grad_accum: int = 1,
                 mode: str | None = None, reduce_gradients=None):
        self.model, self.optimizer, self.scaler, self.spec = model, optimizer, scaler, spec
        self.reduce_gradients = reduce_gradients  # data-parallel: averages gradients over ranks, eagerly
        self.batch_size, self.grad_accum, self.mode = batch_size, grad_accum, mode
        self.eager = functools.partial(forward_loss, model, spec)
        self.compiled = None
        if mode is not None:
            self.compiled = torch.compile(self.eager, mode=None if mode == "default" else mode, dynamic=False)
        self.compile_seconds = 0.0
        self.pending = 0  # batches whose gradients wait for the next optimizer update

    @property
    def is_compiled(self) -> bool:
        return self.compiled is not None

    def _forward(self, batch: PairBatch):
        if self.compiled is not None and batch.size == self.batch_size:
            if self.mode == "reduce-overhead":
                torch.compiler.cudagraph_mark_step_begin()
            return self.compiled(*batch.tensors())
        return self.eager(*batch.tensors())

    def train_step(self, batch: PairBatch, step: int, num_batches: int, lr: float, poison: bool = False,
                   weight: float = 1.0) -> StepResult:
        """One mini-batch: forward, loss, backward; an optimizer update every ``grad_accum`` batches (and
        after the epoch's last). ``poison`` (debug.nonfinite_at_epoch) makes the loss NaN. ``weight``
        scales the loss's gradient (a data-parallel rank's uneven share of a step). No host sync."""
        loss, ce1, ce2, correct1, correct2 = self._forward(batch)
        if poison:
            loss = loss * float("nan")
        scaled = loss / self.grad_accum if weight == 1.0 else loss * (weight / self.grad_accum)
        self.scaler.scale(scaled).backward()
        self.pending += 1
        if (step + 1) % self.grad_accum == 0 or step + 1 == num_batches:
            self.update(lr)
        return StepResult(loss.detach(), ce1, ce2, correct1, correct2)

    def empty_step(self, step: int, num_batches: int, lr: float) -> None:
        """A data-parallel rank with no inputs in this step: no forward, but it joins the update (and its
        gradient average, with zeros)."""
        self.pending += 1
        if (step + 1) % self.grad_accum == 0 or step + 1 == num_batches:
            self.update(lr)

    def update(self, lr: float) -> None:
        """Apply the accumulated gradients at learning rate ``lr`` (no-op when none are pending)."""
        if not self.pending:
            return
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.reduce_gradients is not None:
            self.reduce_gradients()
        self.scaler.step(self.optimizer)  # fused SGD takes the scaler's found_inf on the device: no sync
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.pending = 0

    def singles_batch(self, x: torch.Tensor, y: torch.Tensor) -> PairBatch:
        """A batch of singles in this run's slot layout (the warm-up's input): x2 a copy of x, every cell
        constituent 1's, r = 1, w = 1."""
        b, dev = x.shape[0], x.device
        x2 = mask = None
        if self.spec.operator is not None:
            x2 = x.clone()
            if OPERATORS[self.spec.operator].grid_mask:
                s = self.spec.stride
                mask = torch.ones(b, x.shape[-2] // s, x.shape[-1] // s, dtype=torch.bool, device=dev)
        ones = torch.ones(b, device=dev)
        return PairBatch(x, x2, mask, ones, y, y.clone(), ones.clone(), torch.zeros(b, dtype=torch.bool, device=dev))

    def warm_up(self, batch: PairBatch, calls: int = 3) -> float:
        """Compile (and record CUDA graphs) on a full batch before training; the model's buffers (BN
        running statistics) and gradients are restored, the optimizer is not touched. Returns seconds."""
        if self.compiled is None or batch.size != self.batch_size:
            return 0.0
        saved = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        sync = torch.cuda.synchronize if batch.x1.device.type == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        for _ in range(calls):
            loss = self._forward(batch)[0]
            loss.backward()
        sync()
        self.compile_seconds += time.perf_counter() - t0
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for k, v in self.model.state_dict().items():
                v.copy_(saved[k])
        return self.compile_seconds
