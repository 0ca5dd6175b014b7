"""A flat MLP: a baseline with no feature map (``feature_stride = None``), so it cannot be split."""

from __future__ import annotations

import math

from torch import nn

from mixtrain_trainer.models import FeatureModel, register_model


class MLP(FeatureModel):
    def __init__(self, num_classes, image_shape, hidden=256):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(image_shape), hidden), nn.ReLU())
        self.head = nn.Linear(hidden, num_classes)
        self.num_features, self.feature_stride = hidden, None

    def forward_features(self, x):
        return self.body(x)  # (N, hidden): no spatial map

    def forward_head(self, pooled):
        return self.head(pooled)


@register_model("mlp", feature_map=False)
def mlp(num_classes, image_shape, width=None):
    return MLP(num_classes, image_shape, hidden=width or 256)
