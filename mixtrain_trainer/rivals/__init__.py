"""Rival speed-up methods, one epoch strategy each (interface: ``strategy.py``), registered by name:
``selective-backprop``, ``stale-sb``, ``minibatch-skip``, ``input-scaling``."""

from mixtrain_trainer.rivals import input_scaling, minibatch_skip, selective_backprop, stale_sb  # noqa: F401
