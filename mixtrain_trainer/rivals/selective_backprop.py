"""Selective-Backprop (Jiang et al. 2019, "the biggest losers") and StaleSB.

SB: every candidate mini-batch goes through a forward pass without gradients; each sample is selected
with probability percentile(loss) ** beta, its loss's rank among the last ``sb_history`` losses seen;
selected samples are gathered into full mini-batches and only those get forward + backward.
StaleSB: the selecting forward passes run only every ``staleness`` epochs; in between, selection uses
each sample's cached loss, so unselected samples cost nothing at all.

Every sample still gets a per-sample loss each epoch: from the selecting pass (SB), from its training
pass, or carried over (StaleSB, unselected). ``skipped`` marks the samples not backpropagated.
The selection needs a host decision per candidate batch (how many were selected), unlike mixTrain.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mixtrain_trainer import mixing
from mixtrain_trainer.errors import NonFiniteLossError
from mixtrain_trainer.sampler import plan_epoch


def select_by_percentile(
    losses: torch.Tensor, history: torch.Tensor, beta: float, generator: torch.Generator
) -> torch.Tensor:
    """Bool (B,): select each loss with probability (share of ``history`` below it) ** beta. Pure."""
    if history.numel() == 0:
        return torch.ones_like(losses, dtype=torch.bool)
    percentile = (history.view(1, -1) < losses.view(-1, 1)).float().mean(1)
    draw = torch.rand(losses.shape, generator=generator, device=generator.device).to(losses.device)
    return draw < percentile.pow(beta)


class SelectiveBackprop:
    def __init__(self, trainer, stale: bool):
        self.t, self.stale = trainer, stale
        self.history = torch.zeros(0, device=trainer.device)  # recent losses, newest last

    def state_dict(self) -> dict:
        return {"history": self.history.cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.history = state["history"].to(self.t.device)

    def _remember(self, losses: torch.Tensor) -> None:
        self.history = torch.cat([self.history, losses.float()])[-self.t.cfg.rival.sb_history :]

    def train_epoch(self, epoch: int) -> dict:
        from mixtrain_trainer.loop import record_batch  # loop imports this module

        t, cfg = self.t, self.t.cfg
        t.model.train()
        n = t.data.num_train
        buf = t.new_epoch_buffers()
        gen = t.generators["device"]
        refresh = not self.stale or epoch % cfg.rival.staleness == 0 or not torch.isfinite(t.policy.last_loss).all()
        none = torch.zeros(n, dtype=torch.bool)
        plan = plan_epoch(none, cfg.batch_size, t.generators["plan"]).to(t.device)
        selected_all = torch.zeros(n, dtype=torch.bool, device=t.device)
        pool_x, pool_ids = [], []
        pooled, steps, lr = 0, 0, cfg.optimizer.lr

        def train_on(x: torch.Tensor, ids: torch.Tensor) -> None:
            nonlocal steps, lr
            y = t.labels_dev[ids]
            with t.autocast():
                logits = t.forward_model(x)
            per_sample = F.cross_entropy(logits.float(), y, reduction="none")
            loss = per_sample.mean()
            if cfg.debug.nonfinite_at_epoch == epoch:
                loss = loss * float("nan")
            parts = {"single_loss": per_sample.detach(), "single_correct": mixing.topk_hit(logits, y, 1),
                     "loss1": per_sample[:0], "loss2": per_sample[:0], "correct1": ids[:0].bool(),
                     "correct2": ids[:0].bool()}
            record_batch(buf, steps, loss, ids, ids[:0], ids[:0], per_sample[:0], parts)
            lr = t.optimizer_step(loss, steps, 10**9, epoch + min(steps * cfg.batch_size / n, 1.0))
            steps += 1

        for first, _, _, x, _ in t.source.epoch_batches(plan, gen):
            if refresh:
                with torch.no_grad(), t.autocast():
                    logits = t.forward_model(x)
                losses = F.cross_entropy(logits.float(), t.labels_dev[first], reduction="none")
                buf["loss"][first] = losses
                buf["correct"][first] = mixing.topk_hit(logits, t.labels_dev[first], 1)
                chosen = select_by_percentile(losses, self.history, cfg.rival.sb_beta, gen)
                self._remember(losses)
            else:
                cached = t.policy.last_loss[first]
                buf["loss"][first] = cached
                chosen = select_by_percentile(cached, t.policy.last_loss, cfg.rival.sb_beta, gen)
            pool_x.append(x[chosen])
            pool_ids.append(first[chosen])
            pooled += int(chosen.sum())  # the host decision SB needs: is a full batch ready?
            while pooled >= cfg.batch_size:
                xs, ids = torch.cat(pool_x), torch.cat(pool_ids)
                train_on(xs[: cfg.batch_size], ids[: cfg.batch_size])
                selected_all[ids[: cfg.batch_size]] = True
                pool_x, pool_ids = [xs[cfg.batch_size :]], [ids[cfg.batch_size :]]
                pooled -= cfg.batch_size
        if pooled:
            xs, ids = torch.cat(pool_x), torch.cat(pool_ids)
            train_on(xs, ids)
            selected_all[ids] = True
        # the last partial accumulation window still steps
        if steps % cfg.grad_accum:
            t.scaler.step(t.optimizer)
            t.scaler.update()
            t.optimizer.zero_grad(set_to_none=True)
        bad = int(buf["bad_step"])
        if bad >= 0:
            raise NonFiniteLossError(epoch, bad)
        skipped = ~selected_all
        # StaleSB: samples neither selected nor forwarded keep their cached loss (policy carries it).
        return {**buf, "skipped": skipped, "n_inputs": int(selected_all.sum()), "lr": lr}
