"""Models by name. Every model follows timm's two-step contract:

- ``forward_features(x)``: (N, 3, H, W) -> the final feature map (N, C, h, w) (for a ViT: patch tokens
  laid out on their grid), or ``None``-free (N, C) for models without one (``feature_stride is None``);
- ``forward_head(pooled)``: (N, C) -> logits (N, classes);
- ``forward(x)`` = ``forward_head(mean of forward_features over h, w)``;
- ``num_features`` = C and ``feature_stride`` = H / h (None when there is no feature map).

Split propagation needs only these two calls, so any model that follows the contract can be split.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

MODELS: dict[str, Callable[..., nn.Module]] = {}
NO_FEATURE_MAP: set[str] = set()  # models that cannot be split (known without building them)


def register_model(name: str, feature_map: bool = True):
    def wrap(fn):
        MODELS[name] = fn
        if not feature_map:
            NO_FEATURE_MAP.add(name)
        return fn

    return wrap


class FeatureModel(nn.Module):
    """Base: subclasses set ``num_features`` / ``feature_stride`` and implement the two steps."""

    num_features: int
    feature_stride: int | None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, pooled: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def can_split(self) -> bool:
        return self.feature_stride is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.forward_features(x)
        pooled = features.mean(dim=(2, 3)) if features.ndim == 4 else features
        return self.forward_head(pooled)


def create_model(name: str, num_classes: int, image_shape: tuple[int, int, int], width: int | None = None):
    """Build a registered model for ``num_classes`` outputs and (C, H, W) inputs."""
    return MODELS[name](num_classes=num_classes, image_shape=image_shape, width=width)


from mixtrain_trainer.models import cifar_resnet, mlp, torchvision_models, vit  # noqa: E402,F401

__all__ = ["MODELS", "NO_FEATURE_MAP", "FeatureModel", "create_model", "register_model"]
