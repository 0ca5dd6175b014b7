"""torchvision's ImageNet models behind the two-step contract (trained from scratch: no weights are
downloaded), plus MobileNetV2 with a CIFAR stem.

Registry names: ``tv_resnet18`` / ``tv_resnet34`` / ``tv_resnet50`` (ImageNet stem, stride 32),
``tv_mobilenet_v2`` (stride 32), ``mobilenet_v2`` (CIFAR: the first two stride-2 steps removed, stride 8).
"""

from __future__ import annotations

import torchvision.models as tvm

from mixtrain_trainer.models import FeatureModel, register_model


class TorchvisionResNet(FeatureModel):
    def __init__(self, net: tvm.ResNet):
        super().__init__()
        self.net = net
        self.num_features = net.fc.in_features
        self.feature_stride = 32

    def forward_features(self, x):
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        return n.layer4(n.layer3(n.layer2(n.layer1(x))))

    def forward_head(self, pooled):
        return self.net.fc(pooled)


class MobileNetV2(FeatureModel):
    def __init__(self, num_classes: int, cifar_stem: bool, width: float = 1.0):
        super().__init__()
        net = tvm.mobilenet_v2(num_classes=num_classes, width_mult=width)
        self.feature_stride = 32
        if cifar_stem:  # 32x32 inputs: keep a 4x4 final map instead of 1x1
            net.features[0][0].stride = (1, 1)
            net.features[2].conv[1][0].stride = (1, 1)
            self.feature_stride = 8
        self.features, self.classifier = net.features, net.classifier
        self.num_features = net.last_channel

    def forward_features(self, x):
        return self.features(x)

    def forward_head(self, pooled):
        return self.classifier(pooled)


def _tv_resnet(builder):
    def build(num_classes, image_shape, width=None):
        return TorchvisionResNet(builder(num_classes=num_classes))

    return build


register_model("tv_resnet18")(_tv_resnet(tvm.resnet18))
register_model("tv_resnet34")(_tv_resnet(tvm.resnet34))
register_model("tv_resnet50")(_tv_resnet(tvm.resnet50))


@register_model("mobilenet_v2")
def mobilenet_v2(num_classes, image_shape, width=None):
    return MobileNetV2(num_classes, cifar_stem=True)


@register_model("tv_mobilenet_v2")
def tv_mobilenet_v2(num_classes, image_shape, width=None):
    return MobileNetV2(num_classes, cifar_stem=False)


