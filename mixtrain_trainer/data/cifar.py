"""CIFAR-10 / CIFAR-100 in torchvision's folder layout (``cifar-10-batches-py`` under the root)."""

from __future__ import annotations

import numpy as np

from mixtrain_trainer.data import register_dataset
from mixtrain_trainer.data.bundle import DataBundle, require_path
from mixtrain_trainer.data.parquet import in_memory_bundle
from mixtrain_trainer.errors import DataError

_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


def _check(cfg, name: str) -> str:
    folder = _FOLDERS[name]
    hint = (
        f"put torchvision's {folder}/ under dataset.root"
        + ("" if cfg.download else ", or set dataset.download: true where the internet is reachable")
    )
    if cfg.download:
        if not cfg.root:
            raise DataError(f"dataset {name}: dataset.root is not set; {hint}")
    elif not (require_path(cfg.root, name, hint) / folder).is_dir():
        raise DataError(f"dataset {name}: no {folder}/ under {cfg.root!r}; {hint}")
    return hint


def _load(cfg, name: str) -> DataBundle:
    import torchvision.datasets as tvd

    cls = {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}[name]
    folder = cls.base_folder
    hint = _check(cfg, name)
    try:
        train = cls(cfg.root, train=True, download=cfg.download)
        test = cls(cfg.root, train=False, download=cfg.download)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
        raise DataError(f"dataset {name}: {err} under {cfg.root!r}; {hint}") from None
    except OSError as err:  # download failed: offline, DNS, ...
        raise DataError(
            f"dataset {name}: download failed ({type(err).__name__}: {err}); "
            f"the machine seems offline: copy {folder}/ under {cfg.root!r} and set download: false"
        ) from None
    arrays = {
        "xtr": train.data,
        "ytr": np.asarray(train.targets),
        "xte": test.data,
        "yte": np.asarray(test.targets),
        "num_classes": np.array(len(train.classes)),
    }
    return in_memory_bundle(name, arrays, flip=cfg.flip if cfg.flip is not None else True)


@register_dataset("cifar10", check=lambda cfg: _check(cfg, "cifar10"))
def load_cifar10(cfg) -> DataBundle:
    return _load(cfg, "cifar10")


@register_dataset("cifar100", check=lambda cfg: _check(cfg, "cifar100"))
def load_cifar100(cfg) -> DataBundle:
    return _load(cfg, "cifar100")
