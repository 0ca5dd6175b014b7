"""Compatibility names: the trainer now lives in ``trainer.py`` (and its parts in ``step.py``,
``outcome.py``, ``schedule.py``, ``strategy.py``). ``orchestrate`` still imports these from here."""

from mixtrain_trainer.schedule import learning_rate
from mixtrain_trainer.trainer import PATH_LOOKUP, Trainer, config_digest, default_trial_id, pick_device

__all__ = ["PATH_LOOKUP", "Trainer", "config_digest", "default_trial_id", "learning_rate", "pick_device"]
