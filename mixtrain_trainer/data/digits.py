"""scikit-learn's bundled handwritten digits (1,797 8x8 images), upscaled: the offline quick-start data.

Split 80/20 train/test, stratified with a fixed seed, so every run sees the same test set.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from mixtrain_trainer.data import register_dataset
from mixtrain_trainer.data.bundle import DataBundle, stratified_subset
from mixtrain_trainer.data.parquet import in_memory_bundle


@register_dataset("digits")
def load_digits(cfg) -> DataBundle:
    from sklearn.datasets import load_digits as sk_digits

    raw = sk_digits()
    images = torch.from_numpy(raw.images.astype(np.float32) / 16.0)[:, None]  # (N, 1, 8, 8) in [0, 1]
    images = F.interpolate(images, size=(cfg.image_size, cfg.image_size), mode="bilinear", align_corners=False)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8).repeat(1, 3, 1, 1)  # 3 channels: any model
    images = images.permute(0, 2, 3, 1).contiguous().numpy()
    labels = raw.target.astype(np.int64)
    train = np.zeros(len(labels), dtype=bool)
    test_size = math.ceil(0.2 * len(labels))  # 360 of 1,797, as scikit-learn's train_test_split(test_size=0.2)
    train[stratified_subset(labels, len(labels) - test_size, seed=1234)] = True
    arrays = {
        "xtr": images[train],
        "ytr": labels[train],
        "xte": images[~train],
        "yte": labels[~train],
        "num_classes": np.array(10),
    }
    return in_memory_bundle("digits", arrays, flip=bool(cfg.flip))  # a mirrored 3 is not a 3
