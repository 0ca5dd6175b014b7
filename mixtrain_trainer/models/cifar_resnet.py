"""ResNets with the CIFAR stem (3x3 conv, no max-pool).

- ``resnet8`` / ``resnet20``: He et al.'s 3-stage CIFAR ResNets (widths w, 2w, 4w; w = 16), total
  stride 4: small and fast enough for CPU tests and benchmarks;
- ``resnet18`` / ``resnet34`` / ``resnet50``: the ImageNet block layout (widths 64..512) with the CIFAR
  stem, total stride 8, as used for the paper's CIFAR-10 results.
"""

from __future__ import annotations

from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from mixtrain_trainer.models import FeatureModel, register_model


class CifarResNet(FeatureModel):
    def __init__(self, block, layers, widths, num_classes: int, in_chans: int = 3):
        super().__init__()
        self.inplanes = widths[0]
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        stages = []
        for i, (count, width) in enumerate(zip(layers, widths)):
            stages.append(self._stage(block, width, count, stride=1 if i == 0 else 2))
        self.stages = nn.Sequential(*stages)
        self.num_features = widths[-1] * block.expansion
        self.feature_stride = 2 ** (len(layers) - 1)
        self.fc = nn.Linear(self.num_features, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _stage(self, block, planes: int, count: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        blocks = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        blocks += [block(self.inplanes, planes) for _ in range(1, count)]
        return nn.Sequential(*blocks)

    def forward_features(self, x):
        return self.stages(self.stem(x))

    def forward_head(self, pooled):
        return self.fc(pooled)


def _small(layers_per_stage: int):
    def build(num_classes, image_shape, width=None):
        w = width or 16
        return CifarResNet(BasicBlock, [layers_per_stage] * 3, [w, 2 * w, 4 * w], num_classes, image_shape[0])

    return build


register_model("resnet8")(_small(1))
register_model("resnet20")(_small(3))


def _large(block, layers):
    def build(num_classes, image_shape, width=None):
        w = width or 64
        return CifarResNet(block, layers, [w, 2 * w, 4 * w, 8 * w], num_classes, image_shape[0])

    return build


register_model("resnet18")(_large(BasicBlock, [2, 2, 2, 2]))
register_model("resnet34")(_large(BasicBlock, [3, 4, 6, 3]))
register_model("resnet50")(_large(Bottleneck, [3, 4, 6, 3]))
