"""mixTrain in plain PyTorch: data, models, mixing, the amenability policy, the epoch planner, the
training loop and the per-sample history. Knows nothing of Ray or MLflow (``orchestrate`` wraps it)."""

from mixtrain_trainer.config import RunConfig, load_run_config, validate_run_config
from mixtrain_trainer.history import load_epochs, load_samples, load_trial_records, load_trials

__all__ = ["RunConfig", "load_epochs", "load_run_config", "load_samples", "load_trial_records", "load_trials", "validate_run_config"]
