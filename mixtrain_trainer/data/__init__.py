"""Data sets by name. Each loader returns a ``DataBundle``: decoded uint8 images, labels, sample ids.

In-memory data sets (everything but ``imagefolder``) are decoded once into uint8 NHWC arrays, cached on
disk, and can live on the training device (see ``loader.py``); ``imagefolder`` is decoded by workers.
"""

from __future__ import annotations

from collections.abc import Callable

from mixtrain_trainer.data.bundle import DataBundle, stratified_subset

DATASETS: dict[str, Callable] = {}
DATA_CHECKS: dict[str, Callable] = {}  # cheap checks (paths, schemas) run before a sweep starts


def register_dataset(name: str, check: Callable | None = None):
    def wrap(fn):
        DATASETS[name] = fn
        if check is not None:
            DATA_CHECKS[name] = check
        return fn

    return wrap


def check_dataset(cfg) -> None:
    """Fail fast (DataError, one line) when the data cannot be found, without decoding anything."""
    check = DATA_CHECKS.get(cfg.name)
    if check is not None:
        check(cfg)


def load_dataset(cfg, run_seed: int = 0) -> DataBundle:
    """Build the bundle for a ``DatasetConfig`` and apply its stratified, seeded subsets."""
    bundle = DATASETS[cfg.name](cfg)
    seed = run_seed if cfg.seed is None else cfg.seed
    if cfg.train_subset is not None:
        bundle = bundle.subset_train(stratified_subset(bundle.train_labels, cfg.train_subset, seed))
    if cfg.test_subset is not None:
        bundle = bundle.subset_test(stratified_subset(bundle.test_labels, cfg.test_subset, seed + 1))
    return bundle


# Registration side effects: each module adds its loaders.
from mixtrain_trainer.data import cifar, digits, imagefolder, parquet, synthetic  # noqa: E402,F401

__all__ = ["DATASETS", "check_dataset", "DataBundle", "load_dataset", "register_dataset", "stratified_subset"]
