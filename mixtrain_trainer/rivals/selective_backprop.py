"""Selective-Backprop (Jiang et al. 2019, "the biggest losers"), strategy ``selective-backprop``.

Every candidate mini-batch goes through a forward pass without gradients; each sample is selected with
probability percentile(loss) ** beta, its loss's rank among the last ``sb_history`` losses seen;
selected samples are gathered into full mini-batches and only those get forward + backward, through the
same fixed-shape step as every other strategy (as singles).

Every sample still gets a per-sample loss each epoch: from the selecting pass or from its training
pass. ``skipped`` marks the samples not backpropagated; the selecting forward passes count in
``n_forward``. The selection needs a host decision per candidate batch (how many were selected), unlike
mixTrain: that read is the method's nature.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mixtrain_trainer.mixing import topk_hit
from mixtrain_trainer.outcome import Outcome, record_batch, record_forward
from mixtrain_trainer.sampler import plan_epoch
from mixtrain_trainer.schedule import learning_rate
from mixtrain_trainer.step import autocast
from mixtrain_trainer.strategy import EpochStrategy, register_strategy


def select_by_percentile(
    losses: torch.Tensor, history: torch.Tensor, beta: float, generator: torch.Generator,
    history_sorted: bool = False,
) -> torch.Tensor:
    """Bool (B,): select each loss with probability (share of ``history`` below it) ** beta. Pure.

    ``history_sorted``: ``history`` is already in ascending order (sort it once, query it many times:
    O(B log H) per batch instead of O(B H)).
    """
    if history.numel() == 0:
        return torch.ones_like(losses, dtype=torch.bool)
    ordered = history if history_sorted else history.sort().values
    below = torch.searchsorted(ordered, losses.to(ordered.dtype).contiguous(), side="left")
    percentile = below.float() / history.numel()
    draw = torch.rand(losses.shape, generator=generator, device=generator.device).to(losses.device)
    return draw < percentile.pow(beta)


@register_strategy("selective-backprop")
class SelectiveBackprop(EpochStrategy):
    stale = False
    data_parallel = False  # its loss-history percentile is per process: not yet global across ranks

    def __init__(self, trainer):
        super().__init__(trainer)
        self.history = torch.zeros(0, device=trainer.device)  # recent losses, newest last

    def state_dict(self) -> dict:
        return {"history": self.history.cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.history = state["history"].to(self.t.device)

    def method_choices(self) -> dict:
        return {"sb_selection": "percentile among the last sb_history losses, strictly below; "
                                "selected samples pooled into full mini-batches, the remainder trained last"}

    def _remember(self, losses: torch.Tensor) -> None:
        self.history = torch.cat([self.history, losses.float()])[-self.t.cfg.rival.sb_history :]

    def refreshes(self, epoch: int) -> bool:
        """Whether this epoch runs the selecting forward passes (always, for Selective-Backprop)."""
        return True

    def train_epoch(self, epoch: int) -> Outcome:
        t, cfg = self.t, self.t.cfg
        t.model.train()
        n, bs = t.data.num_train, cfg.batch_size
        out = Outcome.empty(n, t.device)
        gen = t.generators["device"]
        refresh = self.refreshes(epoch)
        plan = plan_epoch(torch.zeros(n, dtype=torch.bool), bs, t.generators["plan"])
        cached_sorted = None if refresh else t.policy.last_loss.sort().values  # once per epoch
        selected_all = torch.zeros(n, dtype=torch.bool, device=t.device)
        pool_x, pool_ids = [], []
        pooled, steps, lr = 0, 0, cfg.optimizer.lr
        poison = cfg.debug.nonfinite_at_epoch == epoch

        def train_on(x: torch.Tensor, ids: torch.Tensor) -> None:
            nonlocal steps, lr
            batch, ids2 = self.singles(x, ids, spare=out.spare)
            lr = learning_rate(cfg, epoch + min(steps * bs / n, 1.0))
            result = t.step.train_step(batch, steps, 10**9, lr, poison)
            record_batch(out, steps, result, ids, ids2, batch)
            selected_all[ids] = True
            steps += 1

        for first, _, _, x, _ in t.source.epoch_batches(plan.to(t.device), gen):
            if refresh:
                with torch.no_grad(), autocast(t.device.type, t.amp_dtype):
                    logits = t.forward_model(x)
                y = t.labels_dev[first]
                losses = F.cross_entropy(logits.float(), y, reduction="none")
                record_forward(out, first, losses, topk_hit(logits, y, 1))
                chosen = select_by_percentile(losses, self.history, cfg.rival.sb_beta, gen)
                self._remember(losses)
            else:
                cached = t.policy.last_loss[first]
                out.loss[first] = cached
                chosen = select_by_percentile(cached, cached_sorted, cfg.rival.sb_beta, gen, history_sorted=True)
            pool_x.append(x[chosen])
            pool_ids.append(first[chosen])
            pooled += int(chosen.sum())  # the host decision SB needs: is a full batch ready?
            while pooled >= bs:
                xs, ids = torch.cat(pool_x), torch.cat(pool_ids)
                train_on(xs[:bs], ids[:bs])
                pool_x, pool_ids = [xs[bs:]], [ids[bs:]]
                pooled -= bs
        if pooled:
            train_on(torch.cat(pool_x), torch.cat(pool_ids))
        t.step.update(lr)  # the last partial accumulation window still steps
        # StaleSB: samples neither selected nor forwarded keep their cached loss (the policy carries it).
        out.skipped = ~selected_all
        out.n_inputs = int(selected_all.sum())
        out.n_forward = plan.num_inputs if refresh else 0
        out.lr = lr
        return out
