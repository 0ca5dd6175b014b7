"""``mixtrain train --workers N``: one run on N local processes, no Ray (torch.multiprocessing + gloo on
the CPU, NCCL on CUDA with rank r on GPU r). Rank 0 prints progress and writes history and record;
every rank trains its share of each global step (the trainer reads the process group)."""

from __future__ import annotations

import os
import sys

from mixtrain_trainer import distributed
from mixtrain_trainer.config import RunConfig


def train_rank(cfg: RunConfig, resume: bool) -> dict:
    """One rank: the same ``mixtrain train`` run; only rank 0 prints."""
    from mixtrain_trainer.train import run

    if distributed.is_main():
        return run(cfg, resume=resume, out=sys.stdout)
    with open(os.devnull, "w") as quiet:
        return run(cfg, resume=resume, out=quiet)


def run_local(cfg: RunConfig, resume: bool = False) -> dict:
    """Train ``cfg`` on ``cfg.workers`` local processes; rank 0's final metrics."""
    import torch

    cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if cuda and torch.cuda.device_count() < cfg.workers:
        from mixtrain_trainer.errors import ConfigError

        raise ConfigError(f"workers: {cfg.workers} local processes need one GPU each, but "
                          f"{torch.cuda.device_count()} are visible; lower workers or use device: cpu")
    return distributed.spawn(train_rank, cfg.workers, cfg, resume, device="cuda" if cuda else "cpu")
