"""Bad input fails early with one line that names the key or the path (CONTRACT.md)."""

from __future__ import annotations

import pytest
import torch
from trainer_helpers import tiny_config

from mixtrain_trainer.config import RunConfig, load_run_config, validate_run_config
from mixtrain_trainer.errors import ConfigError, DataError, MixtrainError
from mixtrain_trainer.trainer import Trainer


def _one_line(err) -> str:
    text = str(err.value)
    assert text and "\n" not in text
    assert isinstance(err.value, MixtrainError)
    return text


def test_error_classes_share_the_base():
    assert issubclass(ConfigError, MixtrainError) and issubclass(DataError, MixtrainError)


def test_every_key_has_a_default():
    cfg = validate_run_config({})
    assert isinstance(cfg, RunConfig) and cfg.variant == "baseline" and cfg.k == 1


@pytest.mark.parametrize(
    ("data", "names"),
    [
        ({"variant": "mixtrain-cutmux"}, ["variant", "'mixtrain-cutmux'", "mixtrain-cutmix"]),
        ({"model": "resnet9000"}, ["model", "'resnet9000'"]),
        ({"dataset": {"name": "imagenet22k"}}, ["dataset.name", "'imagenet22k'"]),
        ({"epochz": 3}, ["epochz", "unknown key"]),
        ({"dataset": {"name": "digits", "rooot": "/x"}}, ["dataset.rooot", "unknown key"]),
        ({"epochs": -1}, ["epochs", "greater than 0"]),
        ({"batch_size": 0}, ["batch_size", "greater than 0"]),
        ({"k": 0}, ["k", "greater than or equal to 1"]),
        ({"optimizer": {"lr": 0}}, ["optimizer.lr"]),
        ({"name": "a/b"}, ["name"]),
        ({"epochs": "twelve"}, ["epochs"]),
    ],
)
def test_bad_values_raise_config_error_naming_the_key(data, names):
    with pytest.raises(ConfigError) as err:
        validate_run_config(data, source="run.yaml")
    text = _one_line(err)
    assert text.startswith("run.yaml: ")
    for name in names:
        assert name in text


def test_a_config_that_is_not_a_mapping():
    with pytest.raises(ConfigError) as err:
        validate_run_config(["variant", "baseline"])
    assert "mapping" in _one_line(err)


def test_run_file_with_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("variant: mixtrain-cutmix\ndataset: digits\nepochs: 3\n")
    cfg = load_run_config(path, ["k=2", "dataset.image_size=16", "optimizer.lr=0.1"])
    assert (cfg.variant, cfg.dataset.name, cfg.epochs, cfg.k, cfg.dataset.image_size) == (
        "mixtrain-cutmix",
        "digits",
        3,
        2,
        16,
    )
    assert cfg.optimizer.lr == 0.1


def test_bad_override_names_the_override_and_key(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("variant: baseline\n")
    with pytest.raises(ConfigError) as err:
        load_run_config(path, ["epochs=-2"])
    text = _one_line(err)  # the bad value came from the --set, not from the file: the --set is blamed
    assert text.startswith("--set epochs=-2: epochs:") and "greater than 0" in text
    path.write_text("epochs: -2\n")
    with pytest.raises(ConfigError) as err:
        load_run_config(path, [])
    assert str(path) in _one_line(err) and "epochs" in str(err.value), "a bad value in the file names the file"
    with pytest.raises(ConfigError) as err:
        load_run_config(path, ["epochs"])
    assert "key=value" in _one_line(err)


def test_malformed_yaml_names_the_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("variant: baseline\ndataset: {name: digits\nepochs: 2\n")
    with pytest.raises(ConfigError) as err:
        load_run_config(path)
    text = _one_line(err)
    assert str(path) in text and "invalid YAML" in text and "line" in text


def test_missing_file_and_wrong_top_level(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_run_config(tmp_path / "nope.yaml")
    assert "nope.yaml" in _one_line(err)
    path = tmp_path / "list.yaml"
    path.write_text("- variant\n- baseline\n")
    with pytest.raises(ConfigError) as err:
        load_run_config(path)
    assert "list.yaml" in _one_line(err)


def test_missing_parquet_root_is_a_data_error_naming_the_path(tmp_path):
    nowhere = tmp_path / "no" / "such" / "folder"
    cfg = tiny_config(
        tmp_path, dataset={"name": "parquet", "root": str(nowhere), "cache_dir": str(tmp_path / "c")}
    )
    with pytest.raises(DataError) as err:
        Trainer(cfg)
    text = _one_line(err)
    assert str(nowhere) in text and "parquet" in text


def test_unset_root_is_a_data_error_naming_the_key(tmp_path):
    cfg = tiny_config(tmp_path, dataset={"name": "parquet"})
    with pytest.raises(DataError) as err:
        Trainer(cfg)
    assert "dataset.root" in _one_line(err)


def test_vit_width_must_suit_its_heads(tmp_path):
    cfg = tiny_config(tmp_path, model="vit_tiny", model_width=8)
    with pytest.raises(ConfigError) as err:
        Trainer(cfg)
    assert "model_width" in _one_line(err)


def test_image_size_must_tile_the_feature_grid_for_cutmix(tmp_path):
    cfg = tiny_config(tmp_path, "mixtrain-cutmix", model="resnet18", model_width=4, dataset__image_size=20)
    with pytest.raises(ConfigError) as err:
        Trainer(cfg)
    assert "resnet18" in _one_line(err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown where there is no GPU")
def test_cuda_without_a_gpu(tmp_path):
    with pytest.raises(ConfigError) as err:
        Trainer(tiny_config(tmp_path, device="cuda"))
    assert "device" in _one_line(err)
