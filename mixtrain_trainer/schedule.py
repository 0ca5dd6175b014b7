"""Learning-rate schedules by name (``schedule.kind``): pure functions of the run and its progress.

``learning_rate(cfg, progress)`` is the LR ``progress`` epochs into the run (fractional within an
epoch). Every schedule spans the *trained* epochs (``epochs x budget``), so a budget-scaled baseline of
the iso-time frontier decays over its own shorter run; a linear warm-up multiplies any of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

Schedule = Callable[["RunConfig", float], float]  # noqa: F821  (cfg, progress) -> factor of the base LR
SCHEDULES: dict[str, Schedule] = {}


def register_schedule(name: str):
    """Add a schedule under ``name``; a second one of the same name is refused."""

    def wrap(fn: Schedule) -> Schedule:
        if name in SCHEDULES:
            raise ValueError(f"schedule {name!r} is already registered")
        SCHEDULES[name] = fn
        return fn

    return wrap


@register_schedule("cosine")
def cosine(cfg, progress: float) -> float:
    return 0.5 * (1 + math.cos(math.pi * min(progress / cfg.trained_epochs, 1.0)))


@register_schedule("step")
def step(cfg, progress: float) -> float:
    s = cfg.schedule
    return s.gamma ** math.floor(progress / (s.step_epochs * cfg.budget) + 1e-9)


@register_schedule("constant")
def constant(cfg, progress: float) -> float:
    return 1.0


def learning_rate(cfg, progress: float) -> float:
    """LR at ``progress`` epochs into the run: base LR x warm-up x the named schedule."""
    s = cfg.schedule
    warm = min(1.0, (progress + 1e-9) / s.warmup_epochs) if s.warmup_epochs else 1.0
    return cfg.optimizer.lr * warm * SCHEDULES[s.kind](cfg, progress)
