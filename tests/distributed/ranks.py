"""Run a function on N local CPU ranks (gloo), the way the trainer's processes run: spawn, rendezvous on
a free loopback port, call, tear down. A failure on any rank fails the test with that rank's traceback."""

from __future__ import annotations

import torch.multiprocessing as mp

from mixtrain_trainer import distributed as D


def _entry(rank: int, world: int, port: int, fn, args) -> None:
    import torch

    torch.set_num_threads(1)
    D.init_process_group("cpu", rank=rank, world_size=world, port=port, timeout_s=120)
    try:
        fn(rank, world, *args)
    finally:
        D.destroy_process_group()


def run_ranks(fn, *args, world: int = 2) -> None:
    mp.spawn(_entry, args=(world, D.free_port(), fn, args), nprocs=world, join=True)
