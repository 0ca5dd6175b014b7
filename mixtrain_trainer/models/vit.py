"""Vision Transformers whose patch tokens form the feature map, so split propagation pools the tokens of
each constituent's patches (METHOD.md).

- ``vit_tiny``: patch 4 for 32x32 inputs (an 8x8 token grid), width 192, depth 12, 3 heads, no class
  token, global average pooling over the tokens;
- ``vit_b_16``: torchvision's ViT-B/16 for 224x224 inputs; its head reads the mean of the patch tokens
  (timm's ``global_pool='avg'``) instead of the class token, so a constituent's tokens can be pooled on
  their own. Trained from scratch, this is an equally standard ViT-B/16 head.
"""

from __future__ import annotations

import torch
import torchvision.models as tvm
from torch import nn

from mixtrain_trainer.models import FeatureModel, register_model


class TinyViT(FeatureModel):
    def __init__(self, num_classes, image_size=32, patch=4, dim=192, depth=12, heads=3, in_chans=3):
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image size {image_size} is not a multiple of the patch size {patch}")
        self.grid = image_size // patch
        self.patch_embed = nn.Conv2d(in_chans, dim, patch, stride=patch)
        self.pos_embed = nn.Parameter(torch.randn(1, self.grid * self.grid, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, dim * 4, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.num_features, self.feature_stride = dim, patch

    def forward_features(self, x):
        tokens = self.patch_embed(x)  # (N, D, g, g)
        n, d, gh, gw = tokens.shape
        tokens = tokens.flatten(2).transpose(1, 2) + self.pos_embed
        tokens = self.norm(self.blocks(tokens))
        return tokens.transpose(1, 2).reshape(n, d, gh, gw)

    def forward_head(self, pooled):
        return self.head(pooled)


class TorchvisionViT(FeatureModel):
    def __init__(self, net: tvm.VisionTransformer):
        super().__init__()
        self.net = net
        self.num_features, self.feature_stride = net.hidden_dim, net.patch_size

    def forward_features(self, x):
        n = x.shape[0]
        tokens = self.net._process_input(x)
        cls = self.net.class_token.expand(n, -1, -1)
        tokens = self.net.encoder(torch.cat([cls, tokens], dim=1))[:, 1:]
        g = int(tokens.shape[1] ** 0.5)
        return tokens.transpose(1, 2).reshape(n, -1, g, g)

    def forward_head(self, pooled):
        return self.net.heads(pooled)


@register_model("vit_tiny")
def vit_tiny(num_classes, image_shape, width=None):
    if width is not None and width % 3:
        from mixtrain_trainer.errors import ConfigError

        raise ConfigError(f"model_width: vit_tiny has 3 attention heads, so its width must be a multiple of 3, not {width}")
    return TinyViT(num_classes, image_size=image_shape[1], dim=width or 192, in_chans=image_shape[0])


@register_model("vit_b_16")
def vit_b_16(num_classes, image_shape, width=None):
    return TorchvisionViT(tvm.vit_b_16(num_classes=num_classes, image_size=image_shape[1]))
