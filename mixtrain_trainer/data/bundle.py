"""The decoded data set a run trains on, and the helpers every loader shares."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mixtrain_trainer.errors import DataError


@dataclasses.dataclass(frozen=True)
class DataBundle:
    """Images as uint8 NHWC arrays (in memory) or as a streamed data set (``imagefolder``).

    ``train_ids`` are the samples' indices in the full training set: the ``sample_id`` of the history,
    stable under ``train_subset``.
    """

    name: str
    num_classes: int
    mean: tuple[float, ...]  # per channel, in [0, 1] units
    std: tuple[float, ...]
    train_labels: np.ndarray  # (N,) int64
    test_labels: np.ndarray  # (M,) int64
    train_ids: np.ndarray  # (N,) int64
    train_images: np.ndarray | None = None  # (N, H, W, C) uint8, None when streamed
    test_images: np.ndarray | None = None  # (M, H, W, C) uint8
    streamed: object | None = None  # imagefolder.StreamedImages when not in memory
    flip: bool = True  # horizontal flip is a valid augmentation for this data set
    extra: dict = dataclasses.field(default_factory=dict)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the training inputs."""
        if self.train_images is not None:
            _, h, w, c = self.train_images.shape
            return (c, h, w)
        return self.streamed.image_shape

    @property
    def num_train(self) -> int:
        return len(self.train_labels)

    def subset_train(self, index: np.ndarray) -> DataBundle:
        images = self.train_images[index] if self.train_images is not None else None
        streamed = self.streamed.subset_train(index) if self.streamed is not None else None
        return dataclasses.replace(
            self,
            train_images=images,
            train_labels=self.train_labels[index],
            train_ids=self.train_ids[index],
            streamed=streamed,
        )

    def subset_test(self, index: np.ndarray) -> DataBundle:
        images = self.test_images[index] if self.test_images is not None else None
        streamed = self.streamed.subset_test(index) if self.streamed is not None else None
        return dataclasses.replace(
            self, test_images=images, test_labels=self.test_labels[index], streamed=streamed
        )


def stratified_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Indices of a seeded subset of ``size`` samples with the classes in their original proportions.

    Each class gets floor(size * share); the remainder goes to the classes with the largest fractional
    parts (ties by class id). Indices come back sorted, so the subset keeps the data set's order.
    """
    labels = np.asarray(labels)
    if size >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * size / len(labels)
    take = np.floor(exact).astype(int)
    remainder = size - take.sum()
    order = np.lexsort((classes, -(exact - take)))
    take[order[:remainder]] += 1
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:t] for c, t in zip(classes, take)]
    return np.sort(np.concatenate(chosen))


def require_path(path: str | None, dataset: str, hint: str) -> Path:
    """A data root that must exist; otherwise one line saying which and how to fix it."""
    if not path:
        raise DataError(f"dataset {dataset}: dataset.root is not set; {hint}")
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"dataset {dataset}: root {str(p)!r} does not exist; {hint}")
    return p


def cache_dir(configured: str | None) -> Path:
    return Path(configured or os.environ.get("MIXTRAIN_CACHE") or Path.home() / ".cache" / "mixtrain")


def cached_arrays(key_parts: list[str], directory: Path, build: Callable[[], dict[str, np.ndarray]]):
    """Load arrays from ``directory/<hash>.npz`` or build and store them (decode once, reuse after)."""
    key = hashlib.sha256("\0".join(key_parts).encode()).hexdigest()[:20]
    path = directory / f"{key}.npz"
    if path.exists():
        try:
            with np.load(path) as stored:
                return {name: stored[name] for name in stored.files}
        except (OSError, ValueError, EOFError):
            pass  # a damaged cache is rebuilt below
    arrays = build()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{key}.{os.getpid()}.tmp.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except OSError:
        pass  # caching is an optimisation; a read-only home must not stop training
    return arrays


def file_fingerprint(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
