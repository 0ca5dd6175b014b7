"""Rival speed-up methods, one epoch strategy each (interface: ``strategy.py``), registered by name:
``selective-backprop``, ``stale-sb``, ``minibatch-skip``, ``input-scaling``, ``infobatch``; and the research
variants' ``mixtrain-prune`` and ``mixtrain-lrgate`` (rivals/infobatch.py)."""

from mixtrain_trainer.rivals import (  # noqa: F401
    infobatch,
    input_scaling,
    minibatch_skip,
    selective_backprop,
    stale_sb,
)
