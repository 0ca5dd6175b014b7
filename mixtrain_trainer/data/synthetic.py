"""Generated images for tests: each class is a fixed random pattern plus per-sample noise.

Learnable within a few epochs, yet not trivially: the noise makes some samples hard.
"""

from __future__ import annotations

import numpy as np

from mixtrain_trainer.data import register_dataset
from mixtrain_trainer.data.bundle import DataBundle
from mixtrain_trainer.data.parquet import in_memory_bundle


def _make(n: int, prototypes: np.ndarray, rng: np.random.Generator):
    labels = np.arange(n) % len(prototypes)
    rng.shuffle(labels)
    noise = rng.normal(0.0, 70.0, size=(n, *prototypes.shape[1:]))
    images = np.clip(prototypes[labels] + noise, 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)


@register_dataset("synthetic")
def load_synthetic(cfg) -> DataBundle:
    rng = np.random.default_rng(1000 + cfg.num_classes)
    side = cfg.image_size
    coarse = rng.uniform(0, 255, size=(cfg.num_classes, -(-side // 4), -(-side // 4), 3))
    prototypes = coarse.repeat(4, axis=1).repeat(4, axis=2)[:, :side, :side]  # blocks survive crops
    xtr, ytr = _make(cfg.synthetic_train, prototypes, rng)
    xte, yte = _make(cfg.synthetic_test, prototypes, rng)
    arrays = {"xtr": xtr, "ytr": ytr, "xte": xte, "yte": yte, "num_classes": np.array(cfg.num_classes)}
    return in_memory_bundle("synthetic", arrays, flip=cfg.flip if cfg.flip is not None else True)
