"""Parquet image tables: an encoded-image column (JPEG/PNG bytes) and an integer label column.

Layouts: ``root/train.parquet`` + ``root/test.parquet``, or ``root/train/*.parquet`` + ``root/test/*.parquet``
(``val`` is accepted for ``test``). Decoded once into uint8 arrays and cached, or, with ``dataset.stream:
true`` (tables too large to hold), streamed like ``imagefolder``: workers read the encoded bytes of the row
group that holds each image (keeping the last few row groups), then decode and augment them on the CPU or
the device (``dataset.decode``), random resized crops of ``image_size`` with ImageNet normalisation.
"""

from __future__ import annotations

import collections
import dataclasses
import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from mixtrain_trainer.data import register_dataset
from mixtrain_trainer.data.bundle import (
    DataBundle,
    cache_dir,
    cached_arrays,
    file_fingerprint,
    require_path,
)
from mixtrain_trainer.data.imagefolder import IMAGENET_MEAN, IMAGENET_STD, StreamedImages
from mixtrain_trainer.errors import DataError

_LABEL_NAMES = ("label", "labels", "target", "y", "class")
_HINT = "point dataset.root at a folder with train.parquet and test.parquet (image bytes + integer label)"


def _split_files(root: Path, split: str) -> list[Path]:
    names = [split] + (["val", "validation"] if split == "test" else [])
    for name in names:
        if (root / f"{name}.parquet").is_file():
            return [root / f"{name}.parquet"]
        if (root / name).is_dir():
            files = sorted((root / name).glob("*.parquet"))
            if files:
                return files
    raise DataError(f"dataset parquet: no {split} split under {str(root)!r}; {_HINT}")


def _pick_columns(schema: pa.Schema, image_column: str | None, label_column: str | None, where: str):
    names = schema.names
    if image_column is None:
        binary = [f.name for f in schema if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)]
        binary += [
            f.name
            for f in schema
            if pa.types.is_struct(f.type) and f.type.get_field_index("bytes") >= 0  # HF {bytes, path}
        ]
        if len(binary) != 1:
            raise DataError(
                f"dataset parquet: {where} has {len(binary)} binary columns {binary}; "
                "set dataset.image_column to the encoded-image column"
            )
        image_column = binary[0]
    if image_column not in names:
        raise DataError(f"dataset parquet: {where} has no column {image_column!r}; columns are {names}")
    if label_column is None:
        label_column = next((n for n in _LABEL_NAMES if n in names), None)
        if label_column is None:
            raise DataError(
                f"dataset parquet: {where} has no label column (looked for {', '.join(_LABEL_NAMES)}); "
                "set dataset.label_column"
            )
    if label_column not in names:
        raise DataError(f"dataset parquet: {where} has no column {label_column!r}; columns are {names}")
    if not pa.types.is_integer(schema.field(label_column).type):
        raise DataError(
            f"dataset parquet: label column {label_column!r} in {where} is "
            f"{schema.field(label_column).type}, expected integers; set dataset.label_column"
        )
    return image_column, label_column


def _open(path: Path, image_column: str | None, label_column: str | None, classes):
    """(ParquetFile, image column, label column, class names from its metadata, else ``classes``)."""
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"dataset parquet: cannot read {str(path)!r} ({err}); is it a Parquet file?") from None
    img_col, lbl_col = _pick_columns(pf.schema_arrow, image_column, label_column, repr(str(path)))
    meta = pf.schema_arrow.metadata or {}
    return pf, img_col, lbl_col, meta[b"classes"].decode().split(",") if b"classes" in meta else classes


def _decode(files: list[Path], image_column: str | None, label_column: str | None):
    images, labels, size = [], [], None
    classes = None
    for path in files:
        pf, img_col, lbl_col, classes = _open(path, image_column, label_column, classes)
        table = pf.read()
        column = table.column(img_col)
        if pa.types.is_struct(column.type):
            column = column.combine_chunks().field("bytes")
        for row, blob in enumerate(column.to_pylist()):
            with Image.open(io.BytesIO(blob)) as im:
                arr = np.asarray(im.convert("RGB"))
            if size is None:
                size = arr.shape
            elif arr.shape != size:
                raise DataError(
                    f"dataset parquet: images of mixed sizes in {str(path)!r} (row {row} is "
                    f"{arr.shape[1]}x{arr.shape[0]}, earlier ones {size[1]}x{size[0]}); resize them to one size"
                )
            images.append(arr)
        labels.append(table.column(lbl_col).to_numpy().astype(np.int64))
    if not images:
        raise DataError(f"dataset parquet: {[str(f) for f in files]} hold no rows")
    return np.stack(images), np.concatenate(labels), classes


def check_parquet(cfg) -> None:
    root = require_path(cfg.root, "parquet", _HINT)
    for split in ("train", "test"):
        files = _split_files(root, split)
        try:
            schema = pq.read_schema(files[0])
        except (pa.ArrowInvalid, OSError) as err:
            raise DataError(f"dataset parquet: cannot read {str(files[0])!r} ({err}); is it a Parquet file?") from None
        _pick_columns(schema, cfg.image_column, cfg.label_column, repr(str(files[0])))


@register_dataset("parquet", check=check_parquet)
def load_parquet(cfg) -> DataBundle:
    root = require_path(cfg.root, "parquet", _HINT)
    train_files, test_files = _split_files(root, "train"), _split_files(root, "test")
    if cfg.stream:
        return _streamed_bundle(cfg, train_files, test_files)
    key = ["parquet-v1", str(cfg.image_column), str(cfg.label_column)]
    key += [file_fingerprint(f) for f in train_files + test_files]

    def build():
        xtr, ytr, classes = _decode(train_files, cfg.image_column, cfg.label_column)
        xte, yte, _ = _decode(test_files, cfg.image_column, cfg.label_column)
        if xtr.shape[1:] != xte.shape[1:]:
            raise DataError(
                f"dataset parquet: train images are {xtr.shape[2]}x{xtr.shape[1]} but test images "
                f"{xte.shape[2]}x{xte.shape[1]}; use one size"
            )
        num_classes = len(classes) if classes else int(max(ytr.max(), yte.max()) + 1)
        return {"xtr": xtr, "ytr": ytr, "xte": xte, "yte": yte, "num_classes": np.array(num_classes)}

    arrays = cached_arrays(key, cache_dir(cfg.cache_dir), build)
    return in_memory_bundle("parquet", arrays, flip=cfg.flip if cfg.flip is not None else True)


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] units, from (a sample of) the training images."""
    sample = images[:: max(1, len(images) // 10000)].reshape(-1, images.shape[-1]).astype(np.float64) / 255
    return tuple(sample.mean(0).tolist()), tuple(np.maximum(sample.std(0), 1e-3).tolist())


def in_memory_bundle(name: str, arrays: dict, flip: bool) -> DataBundle:
    xtr, ytr = arrays["xtr"], arrays["ytr"].astype(np.int64)
    mean, std = channel_stats(xtr)
    return DataBundle(
        name=name,
        num_classes=int(arrays["num_classes"]),
        mean=mean,
        std=std,
        train_images=np.ascontiguousarray(xtr),
        train_labels=ytr,
        train_ids=np.arange(len(ytr), dtype=np.int64),
        test_images=np.ascontiguousarray(arrays["xte"]),
        test_labels=arrays["yte"].astype(np.int64),
        flip=flip,
    )


# ---------------------------------------------------------------- streamed (dataset.stream: true)


def _row_index(files: list[Path], image_column: str | None, label_column: str | None):
    """(labels, [(file, row group, row in group)], image column, classes) from the files' metadata and
    label columns only: no image bytes are read."""
    labels, rows, img_col, classes = [], [], None, None
    for path in files:
        pf, img_col, lbl_col, classes = _open(path, image_column, label_column, classes)
        labels.append(pf.read(columns=[lbl_col]).column(0).to_numpy().astype(np.int64))
        for g in range(pf.num_row_groups):
            rows += [(str(path), g, r) for r in range(pf.metadata.row_group(g).num_rows)]
    if not rows:
        raise DataError(f"dataset parquet: {[str(f) for f in files]} hold no rows")
    return np.concatenate(labels), rows, img_col, classes


class _RowGroupBytes:
    """Map-style data set: index -> (the row's encoded image as a 1-D uint8 tensor, "") or (None, why).
    Each worker keeps its last ``keep`` row groups, so rows of one group read it once while they last."""

    def __init__(self, rows: list[tuple[str, int, int]], column: str, keep: int = 4):
        self.rows, self.column, self.keep = rows, column, keep
        self._groups: collections.OrderedDict = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self.rows)

    def _group(self, path: str, group: int):
        key = (path, group)
        if key not in self._groups:
            column = pq.ParquetFile(path).read_row_group(group, columns=[self.column]).column(0).combine_chunks()
            if pa.types.is_struct(column.type):
                column = column.field("bytes")
            self._groups[key] = column
            while len(self._groups) > self.keep:
                self._groups.popitem(last=False)
        self._groups.move_to_end(key)
        return self._groups[key]

    def __getitem__(self, index: int):
        import torch

        path, group, row = self.rows[index]
        try:
            blob = self._group(path, group)[row].as_py()
        except (pa.ArrowException, OSError) as err:
            return None, f"{type(err).__name__}: {err}"
        if not blob:
            return None, "empty image bytes"
        return torch.frombuffer(bytearray(blob), dtype=torch.uint8), ""


def _streamed_bundle(cfg, train_files: list[Path], test_files: list[Path]) -> DataBundle:
    ytr, train_rows, column, classes = _row_index(train_files, cfg.image_column, cfg.label_column)
    yte, test_rows, _, _ = _row_index(test_files, cfg.image_column, cfg.label_column)
    streamed = StreamedRows(
        train_paths=[f"{p}#row-group={g},row={r}" for p, g, r in train_rows],
        test_paths=[f"{p}#row-group={g},row={r}" for p, g, r in test_rows],
        image_size=cfg.image_size, augment=cfg.augment, flip=cfg.flip if cfg.flip is not None else True,
        decode=cfg.decode, skip_bad_images=cfg.skip_bad_images,
        train_rows=train_rows, test_rows=test_rows, column=column,
    )
    return DataBundle(
        name="parquet", num_classes=len(classes) if classes else int(max(ytr.max(), yte.max()) + 1),
        mean=IMAGENET_MEAN, std=IMAGENET_STD, train_labels=ytr, test_labels=yte,
        train_ids=np.arange(len(ytr), dtype=np.int64), streamed=streamed, flip=streamed.flip,
    )


@dataclasses.dataclass(frozen=True)
class StreamedRows(StreamedImages):
    """``StreamedImages`` whose images are rows of Parquet files; ``*_paths`` name the rows (for errors)."""

    train_rows: list = dataclasses.field(default_factory=list)  # [(file, row group, row in group)]
    test_rows: list = dataclasses.field(default_factory=list)
    column: str = ""

    def subset_train(self, index: np.ndarray) -> StreamedRows:
        return dataclasses.replace(super().subset_train(index), train_rows=[self.train_rows[i] for i in index])

    def subset_test(self, index: np.ndarray) -> StreamedRows:
        return dataclasses.replace(super().subset_test(index), test_rows=[self.test_rows[i] for i in index])

    def encoded(self, train: bool):
        return _RowGroupBytes(self.train_rows if train else self.test_rows, self.column)
