"""ImageNet-style folders (``root/train/<class>/*.jpg``, ``root/val/<class>/*.jpg``), decoded by workers.

Too large to hold in memory, so batches are streamed through a DataLoader whose batch sampler follows
the epoch plan (see ``loader.StreamedSource``). Workers return uint8 tensors; normalisation happens on
the device.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mixtrain_trainer.data import register_dataset
from mixtrain_trainer.data.bundle import DataBundle, require_path
from mixtrain_trainer.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class StreamedImages:
    train_paths: list[str]
    test_paths: list[str]
    image_size: int
    augment: bool
    flip: bool

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (3, self.image_size, self.image_size)

    def subset_train(self, index: np.ndarray) -> StreamedImages:
        return dataclasses.replace(self, train_paths=[self.train_paths[i] for i in index])

    def subset_test(self, index: np.ndarray) -> StreamedImages:
        return dataclasses.replace(self, test_paths=[self.test_paths[i] for i in index])

    def dataset(self, train: bool):
        return _Decoded(self.train_paths if train else self.test_paths, self._transform(train))

    def _transform(self, train: bool):
        from torchvision.transforms import v2

        if train and self.augment:
            steps = [v2.RandomResizedCrop(self.image_size, antialias=True)]
            steps += [v2.RandomHorizontalFlip()] if self.flip else []
        else:
            steps = [v2.Resize(int(self.image_size * 8 / 7), antialias=True), v2.CenterCrop(self.image_size)]
        return v2.Compose([v2.PILToTensor(), *steps])


class _Decoded:
    """Map-style data set: index -> uint8 CHW tensor (labels travel separately, by index)."""

    def __init__(self, paths: list[str], transform):
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        from PIL import Image

        with Image.open(self.paths[index]) as im:
            return self.transform(im.convert("RGB"))


def _scan(root, split_names: tuple[str, ...], classes: list[str] | None):
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    for name in split_names:
        folder = root / name
        if folder.is_dir():
            found = classes or sorted(d.name for d in folder.iterdir() if d.is_dir())
            if not found:
                raise DataError(f"dataset imagefolder: {str(folder)!r} has no class folders")
            samples = make_dataset(
                str(folder), {c: i for i, c in enumerate(found)}, IMG_EXTENSIONS, allow_empty=True
            )
            if not samples:
                raise DataError(f"dataset imagefolder: no images under {str(folder)!r}")
            return found, samples
    raise DataError(
        f"dataset imagefolder: no {'/'.join(split_names)} folder under {str(root)!r}; "
        "expected root/train/<class>/*.jpg and root/val/<class>/*.jpg"
    )


_HINT = "point dataset.root at a folder with train/<class>/ and val/<class>/ image folders"


def check_imagefolder(cfg) -> None:
    root = require_path(cfg.root, "imagefolder", _HINT)
    if not (root / "train").is_dir() or not any((root / n).is_dir() for n in ("val", "test", "validation")):
        raise DataError(f"dataset imagefolder: {str(root)!r} lacks train/ or val/; {_HINT}")


@register_dataset("imagefolder", check=check_imagefolder)
def load_imagefolder(cfg) -> DataBundle:
    root = require_path(cfg.root, "imagefolder", _HINT)
    classes, train = _scan(root, ("train",), None)
    _, test = _scan(root, ("val", "test", "validation"), classes)
    streamed = StreamedImages(
        train_paths=[p for p, _ in train],
        test_paths=[p for p, _ in test],
        image_size=cfg.image_size,
        augment=cfg.augment,
        flip=cfg.flip if cfg.flip is not None else True,
    )
    return DataBundle(
        name="imagefolder",
        num_classes=len(classes),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        train_labels=np.array([y for _, y in train], dtype=np.int64),
        test_labels=np.array([y for _, y in test], dtype=np.int64),
        train_ids=np.arange(len(train), dtype=np.int64),
        streamed=streamed,
        flip=streamed.flip,
        extra={"classes": classes},
    )
