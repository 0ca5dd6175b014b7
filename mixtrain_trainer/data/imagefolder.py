"""ImageNet-style folders (``root/train/<class>/*.jpg``, ``root/val/<class>/*.jpg``), decoded by workers.

Too large to hold in memory, so batches are streamed through persistent DataLoader workers whose batches
follow the epoch plan (see ``loader.StreamedSource``). Two decode paths (``dataset.decode``):

- ``workers`` (the CPU default): workers decode with PIL and augment (random resized crop + flip, or
  resize + centre crop for evaluation) and return uint8 tensors;
- ``device`` (the CUDA default): workers only read the encoded bytes; the batch is decoded and augmented
  on the training device (``data/decode.py``).

A file that cannot be read or decoded stops the run with one line naming it (``DataError``), or, with
``dataset.skip_bad_images: true``, is left out of its batch (its pair partner too) and counted.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import torch

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
    decode: str = "auto"  # "workers" | "device" | "auto" (device on CUDA)
    skip_bad_images: bool = False

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (3, self.image_size, self.image_size)

    def subset_train(self, index: np.ndarray) -> StreamedImages:
        return dataclasses.replace(self, train_paths=[self.train_paths[i] for i in index])

    def subset_test(self, index: np.ndarray) -> StreamedImages:
        return dataclasses.replace(self, test_paths=[self.test_paths[i] for i in index])

    @property
    def resize(self) -> int:
        """Evaluation: the shorter side is resized to this, then the centre ``image_size`` square kept."""
        return int(self.image_size * 8 / 7)

    def paths(self, train: bool) -> list[str]:
        return self.train_paths if train else self.test_paths

    def dataset(self, train: bool):
        """Workers decode: index -> (uint8 (3, S, S) tensor or None, error or "")."""
        return _Decoded(self.encoded(train), self._transform(train))

    def encoded(self, train: bool):
        """Workers read bytes only: index -> (1-D uint8 tensor or None, error or "")."""
        return _Encoded(self.paths(train))

    def _transform(self, train: bool):
        from torchvision.transforms import v2

        if train and self.augment:
            steps = [v2.RandomResizedCrop(self.image_size, antialias=True)]
            steps += [v2.RandomHorizontalFlip()] if self.flip else []
        else:
            steps = [v2.Resize(self.resize, antialias=True), v2.CenterCrop(self.image_size)]
        return v2.Compose([v2.PILToTensor(), *steps])


def _reason(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


class _Decoded:
    """Map-style data set: index -> (uint8 CHW tensor, "") or (None, why it failed); labels travel
    separately, by index. Failures are returned, not raised, so the main process reports them in one line.
    ``encoded``: a data set of encoded bytes (``_Encoded``, or rows of a Parquet table)."""

    def __init__(self, encoded, transform):
        self.encoded, self.transform = encoded, transform

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, index: int):
        from PIL import Image, UnidentifiedImageError

        data, error = self.encoded[index]
        if error:
            return None, error
        try:
            with Image.open(io.BytesIO(data.numpy().tobytes())) as im:
                return self.transform(im.convert("RGB")), ""
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:  # PIL's decode errors
            return None, _reason(err)


class _Encoded:
    """Map-style data set: index -> (the file's bytes as a 1-D uint8 tensor, "") or (None, why)."""

    def __init__(self, paths: list[str]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            with open(self.paths[index], "rb") as f:
                data = f.read()
        except OSError as err:
            return None, _reason(err)
        if not data:
            return None, "empty file"
        return torch.frombuffer(bytearray(data), dtype=torch.uint8), ""


def collate_items(items: list[tuple]) -> tuple[list, list[str]]:
    """DataLoader collate of encoded images (they differ in length): (list of tensors or None, errors)."""
    return [t for t, _ in items], [e for _, e in items]


def collate_decoded(items: list[tuple]) -> tuple[torch.Tensor, list[str]]:
    """DataLoader collate of decoded images: (the good ones stacked (n_good, 3, S, S), errors per item)."""
    good = [t for t, e in items if not e]
    stacked = torch.stack(good) if good else torch.empty(0, dtype=torch.uint8)
    return stacked, [e for _, e in items]


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
        decode=cfg.decode,
        skip_bad_images=cfg.skip_bad_images,
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
