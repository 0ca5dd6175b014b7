"""Run a check on N local CPU ranks (gloo) through the library's own launcher."""

from __future__ import annotations

from mixtrain_trainer import distributed as D


def _with_world(fn, args):
    return fn(D.rank(), D.world_size(), *args)


def run_ranks(fn, *args, world: int = 2):
    return D.spawn(_with_world, world, fn, args, threads=1)
