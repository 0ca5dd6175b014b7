"""Shared helpers for the trainer tests: a tiny, fast run configuration and the shared CIFAR-10 folder.

(A plain module with a unique name rather than a conftest.py: ``tests/`` has no packages, so test folders
must not share module names.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mixtrain_trainer.config import RunConfig, apply_overrides, validate_run_config

# The repository's `shared` folder sits beside the repository root (CI has it).
SHARED_CIFAR10 = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "cifar10"

N_TRAIN = 128  # synthetic training samples of every tiny run


def tiny_config(root, variant: str = "baseline", epochs: int = 2, **overrides) -> RunConfig:
    """A run that trains in well under a second per epoch on a CPU: 128 synthetic 16x16 images,
    resnet8 of width 4 (feature stride 4: a 4x4 grid), batches of 16. ``overrides``: dotted keys, with
    ``__`` standing for ``.`` (``dataset__image_size=32``)."""
    data = {
        "variant": variant,
        "dataset": {"name": "synthetic", "synthetic_train": N_TRAIN, "synthetic_test": 64, "image_size": 16},
        "model": "resnet8",
        "model_width": 4,
        "batch_size": 16,
        "epochs": epochs,
        "device": "cpu",
        "storage": {"root": str(root)},
    }
    data = apply_overrides(data, {k.replace("__", "."): v for k, v in overrides.items()})
    return validate_run_config(data)


def frames_equal(a, b, columns) -> None:
    """Bitwise equality of DataFrame columns, NaN equal to NaN (losses of skipped samples)."""
    for col in columns:
        x, y = a[col].to_numpy(), b[col].to_numpy()
        if x.dtype.kind == "f":
            assert np.array_equal(x, y, equal_nan=True), col
        else:
            assert (x == y).all(), col
