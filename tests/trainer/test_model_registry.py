"""Every registered model follows the two-step contract that split propagation relies on (STYLE.md)."""

from __future__ import annotations

import pytest
import torch
from trainer_helpers import tiny_config

from mixtrain_trainer.errors import ConfigError, MixtrainError
from mixtrain_trainer.history import load_samples
from mixtrain_trainer.models import MODELS, NO_FEATURE_MAP, create_model
from mixtrain_trainer.trainer import Trainer

CLASSES = 7
IMAGENET_SIZED = {"tv_resnet18", "tv_resnet34", "tv_resnet50", "tv_mobilenet_v2", "vit_b_16"}


def test_the_registry_holds_the_documented_names():
    documented = {"resnet8", "resnet20", "resnet18", "resnet34", "resnet50", "mobilenet_v2", "vit_tiny"}
    assert documented <= set(MODELS)
    assert IMAGENET_SIZED <= set(MODELS)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_contract(name):
    size, batch = (224, 1) if name in IMAGENET_SIZED else (32, 2)
    torch.manual_seed(0)
    model = create_model(name, CLASSES, (3, size, size)).eval()
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        features = model.forward_features(x)
        if model.feature_stride is None:
            assert not model.can_split
            assert features.shape == (batch, model.num_features)
            pooled = features
        else:
            assert model.can_split
            s = model.feature_stride
            assert size % s == 0
            assert features.shape == (batch, model.num_features, size // s, size // s)
            pooled = features.mean(dim=(2, 3))
        logits = model.forward_head(pooled)
        assert logits.shape == (batch, CLASSES)
        if name in IMAGENET_SIZED:
            return  # shapes only for the big ones
        assert torch.allclose(model(x), logits, atol=1e-5), "forward = head(mean of features)"
        assert torch.isfinite(logits).all()


@pytest.mark.parametrize(
    ("name", "width", "features"), [("resnet8", 4, 16), ("resnet20", 8, 32), ("resnet18", 8, 64)]
)
def test_width_sets_the_feature_width(name, width, features):
    assert create_model(name, 10, (3, 32, 32), width=width).num_features == features


def test_expected_strides():
    strides = {
        "resnet8": 4,
        "resnet20": 4,
        "resnet18": 8,
        "resnet50": 8,
        "mobilenet_v2": 8,
        "vit_tiny": 4,
        "tv_resnet18": 32,
        "vit_b_16": 16,
        "mlp": None,
    }
    for name, stride in strides.items():
        size = 224 if name in IMAGENET_SIZED else 32
        model = create_model(
            name, 10, (3, size, size), width={"resnet18": 8, "resnet50": 8, "vit_tiny": 12}.get(name)
        )
        assert model.feature_stride == stride, name


def test_mlp_cannot_be_split_and_cutmix_variants_refuse_it(tmp_path):
    """The configuration refuses CutMix on a model without a feature map, for every CutMix variant and for
    an operator override, before anything is built (the Trainer has no second check to fall back on)."""
    assert not create_model("mlp", 10, (3, 16, 16)).can_split
    assert "mlp" in NO_FEATURE_MAP
    for variant, operator in (("mixtrain-cutmix", None), ("naive-cutmix", None), ("mixtrain-mixup", "cutmix")):
        with pytest.raises(ConfigError) as err:
            tiny_config(tmp_path, variant, model="mlp", operator=operator)
        text = str(err.value)
        assert "\n" not in text and isinstance(err.value, MixtrainError)
        assert text.startswith("run config: model: 'mlp' gives no feature map"), text
    tiny_config(tmp_path, "mixtrain-cutmix", model="mlp", operator="mixup")  # MixUp is fine


def test_mlp_trains_with_mixup(tmp_path):
    cfg = tiny_config(tmp_path, "naive-mixup", epochs=1, model="mlp", model_width=32)
    trainer = Trainer(cfg)
    trainer.fit()
    rows = load_samples(cfg.storage.root, cfg.name, trials=[trainer.trial_id])
    assert len(rows) == 128 and rows["mixed"].all()
