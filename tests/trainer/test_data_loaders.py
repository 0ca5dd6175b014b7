"""Data sets by name: parquet, imagefolder, cifar10 (errors), digits, stratified subsets, and the shared
real CIFAR-10 Parquet files."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from trainer_helpers import SHARED_CIFAR10, tiny_config

from mixtrain_trainer.config import DatasetConfig
from mixtrain_trainer.data import load_dataset, stratified_subset
from mixtrain_trainer.errors import DataError
from mixtrain_trainer.history import load_samples
from mixtrain_trainer.trainer import Trainer


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _images(n: int, side: int, seed: int, width: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, side, width or side, 3), dtype=np.uint8)


def _write(path, images, labels, label_name="label", metadata=None, extra=None):
    columns = {
        "image": pa.array([_png(im) for im in images], pa.binary()),
        label_name: pa.array(labels, pa.int64()),
    }
    columns.update(extra or {})
    table = pa.table(columns)
    if metadata:
        table = table.replace_schema_metadata(metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def _parquet_cfg(root, cache, **kw) -> DatasetConfig:
    return DatasetConfig(name="parquet", root=str(root), cache_dir=str(cache), **kw)


def _one_line_data_error(err) -> str:
    text = str(err.value)
    assert "\n" not in text and text.startswith("dataset ")
    return text


# ------------------------------------------------------------------ parquet


def test_parquet_decodes_pixels_and_labels_exactly(tmp_path):
    xtr, xte = _images(12, 8, 0), _images(5, 8, 1)
    ytr, yte = np.arange(12) % 3, np.array([0, 1, 2, 2, 1])
    _write(tmp_path / "d" / "train.parquet", xtr, ytr)
    _write(tmp_path / "d" / "test.parquet", xte, yte)
    bundle = load_dataset(_parquet_cfg(tmp_path / "d", tmp_path / "cache"))
    assert bundle.num_classes == 3
    assert bundle.image_shape == (3, 8, 8)
    # PNG is lossless: the exact pixels come back
    assert np.array_equal(bundle.train_images, xtr)
    assert np.array_equal(bundle.test_images, xte)
    assert bundle.train_labels.tolist() == ytr.tolist() and bundle.test_labels.tolist() == yte.tolist()
    assert bundle.train_ids.tolist() == list(range(12))
    assert any((tmp_path / "cache").glob("*.npz")), "decoded once into the cache"
    again = load_dataset(_parquet_cfg(tmp_path / "d", tmp_path / "cache"))  # from the cache
    assert np.array_equal(again.train_images, xtr)


def test_parquet_folder_layout_val_split_classes_metadata_and_other_label_name(tmp_path):
    root = tmp_path / "d"
    a, b, c = _images(4, 8, 0), _images(3, 8, 1), _images(4, 8, 2)
    meta = {b"classes": b"cat,dog,frog,bird"}
    _write(root / "train" / "part-0.parquet", a, [0, 1, 0, 1], label_name="target", metadata=meta)
    _write(root / "train" / "part-1.parquet", b, [1, 0, 1], label_name="target", metadata=meta)
    _write(root / "val" / "part-0.parquet", c, [0, 1, 1, 0], label_name="target")
    bundle = load_dataset(_parquet_cfg(root, tmp_path / "cache"))
    assert bundle.num_train == 7 and len(bundle.test_labels) == 4
    assert np.array_equal(bundle.train_images, np.concatenate([a, b]))
    assert bundle.num_classes == 4  # from the schema's `classes`, not from the labels seen


def test_parquet_hugging_face_image_struct_and_a_damaged_cache(tmp_path):
    xtr, xte = _images(4, 8, 3), _images(2, 8, 4)
    for split, images, labels in (("train", xtr, [0, 1, 1, 0]), ("test", xte, [1, 0])):
        struct = pa.array([{"bytes": _png(im), "path": f"{i}.png"} for i, im in enumerate(images)])
        (tmp_path / "d").mkdir(exist_ok=True)
        pq.write_table(
            pa.table({"img": struct, "labels": pa.array(labels, pa.int8())}),
            tmp_path / "d" / f"{split}.parquet",
        )
    cfg = _parquet_cfg(tmp_path / "d", tmp_path / "cache")
    bundle = load_dataset(cfg)
    assert np.array_equal(bundle.train_images, xtr) and bundle.train_labels.tolist() == [0, 1, 1, 0]
    (cached,) = (tmp_path / "cache").glob("*.npz")
    cached.write_bytes(b"damaged")
    again = load_dataset(cfg)  # rebuilt, not an error
    assert np.array_equal(again.test_images, xte)


def test_parquet_without_a_label_column(tmp_path):
    _write(tmp_path / "d" / "train.parquet", _images(3, 8, 0), [0, 1, 0], label_name="kind")
    _write(tmp_path / "d" / "test.parquet", _images(2, 8, 1), [0, 1], label_name="kind")
    with pytest.raises(DataError) as err:
        load_dataset(_parquet_cfg(tmp_path / "d", tmp_path / "cache"))
    text = _one_line_data_error(err)
    assert "label column" in text and "dataset.label_column" in text and "train.parquet" in text
    bundle = load_dataset(_parquet_cfg(tmp_path / "d", tmp_path / "cache", label_column="kind"))
    assert bundle.train_labels.tolist() == [0, 1, 0]


def test_parquet_with_images_of_mixed_sizes(tmp_path):
    images = list(_images(3, 8, 0)) + list(_images(1, 8, 1, width=10))
    _write(tmp_path / "d" / "train.parquet", images, [0, 1, 0, 1])
    _write(tmp_path / "d" / "test.parquet", _images(2, 8, 2), [0, 1])
    with pytest.raises(DataError) as err:
        load_dataset(_parquet_cfg(tmp_path / "d", tmp_path / "cache"))
    text = _one_line_data_error(err)
    assert "mixed sizes" in text and "row 3" in text and "10x8" in text


def test_parquet_without_a_test_split(tmp_path):
    _write(tmp_path / "d" / "train.parquet", _images(3, 8, 0), [0, 1, 0])
    with pytest.raises(DataError) as err:
        load_dataset(_parquet_cfg(tmp_path / "d", tmp_path / "cache"))
    text = _one_line_data_error(err)
    assert "no test split" in text and str(tmp_path / "d") in text


def test_parquet_with_two_binary_columns_or_float_labels(tmp_path):
    extra = {"thumb": pa.array([b"x"] * 3, pa.binary())}
    _write(tmp_path / "d" / "train.parquet", _images(3, 8, 0), [0, 1, 0], extra=extra)
    _write(tmp_path / "d" / "test.parquet", _images(2, 8, 1), [0, 1], extra={"thumb": pa.array([b"x"] * 2)})
    with pytest.raises(DataError) as err:
        load_dataset(_parquet_cfg(tmp_path / "d", tmp_path / "cache"))
    assert "dataset.image_column" in _one_line_data_error(err)
    table = pa.table(
        {"image": pa.array([_png(im) for im in _images(2, 8, 0)]), "label": pa.array([0.0, 1.0])}
    )
    (tmp_path / "e").mkdir()
    pq.write_table(table, tmp_path / "e" / "train.parquet")
    pq.write_table(table, tmp_path / "e" / "test.parquet")
    with pytest.raises(DataError) as err:
        load_dataset(_parquet_cfg(tmp_path / "e", tmp_path / "cache"))
    assert "expected integers" in _one_line_data_error(err)


def test_parquet_file_that_is_not_parquet(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "train.parquet").write_text("not parquet")
    (tmp_path / "d" / "test.parquet").write_text("not parquet")
    with pytest.raises(DataError) as err:
        load_dataset(_parquet_cfg(tmp_path / "d", tmp_path / "cache"))
    assert "train.parquet" in _one_line_data_error(err)


# ------------------------------------------------------------------ imagefolder


def _image_tree(root):
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 10), ("val", 4)):
        for label, name in enumerate(("cat", "dog")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                h, w = 36 + (i % 3) * 4, 40 - (i % 2) * 6  # assorted sizes: the crops make them 32x32
                base = np.full((h, w, 3), 60 + 120 * label, dtype=np.int16)
                image = np.clip(base + rng.integers(-40, 40, size=(h, w, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(image).save(folder / f"{i:03d}.png")


def test_imagefolder_trains_an_epoch_with_composites(tmp_path):
    _image_tree(tmp_path / "imgs")
    cfg = tiny_config(
        tmp_path / "store",
        "naive-cutmix-split",
        epochs=1,
        batch_size=8,
        dataset={"name": "imagefolder", "root": str(tmp_path / "imgs"), "num_workers": 0, "image_size": 32},
    )
    trainer = Trainer(cfg)
    assert trainer.data.num_classes == 2 and trainer.data.image_shape == (3, 32, 32)
    assert trainer.data.extra["classes"] == ["cat", "dog"]
    assert trainer.data.num_train == 20 and len(trainer.data.test_labels) == 8
    final = trainer.fit()
    rows = load_samples(cfg.storage.root, cfg.name, trials=[trainer.trial_id])
    assert len(rows) == 20 and rows["mixed"].all()
    assert 0.0 <= final["final_test_acc"] <= 1.0 and final["total_inputs"] == 10


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset(DatasetConfig(name="imagefolder", root=str(tmp_path / "missing")))
    assert "missing" in _one_line_data_error(err)
    (tmp_path / "only_train" / "train" / "cat").mkdir(parents=True)
    Image.fromarray(_images(1, 8, 0)[0]).save(tmp_path / "only_train" / "train" / "cat" / "a.png")
    with pytest.raises(DataError) as err:
        load_dataset(DatasetConfig(name="imagefolder", root=str(tmp_path / "only_train")))
    assert "val" in _one_line_data_error(err)


# ------------------------------------------------------------------ cifar10 (torchvision layout)


def test_cifar10_missing_root_or_folder(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset(DatasetConfig(name="cifar10", root=str(tmp_path / "nothing")))
    assert "nothing" in _one_line_data_error(err)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as err:
        load_dataset(DatasetConfig(name="cifar10", root=str(tmp_path / "empty")))
    assert "cifar-10-batches-py" in _one_line_data_error(err)
    with pytest.raises(DataError) as err:
        load_dataset(DatasetConfig(name="cifar100"))
    assert "dataset.root" in _one_line_data_error(err)


# ------------------------------------------------------------------ digits, synthetic


def test_digits_split_and_image_size():
    bundle = load_dataset(DatasetConfig(name="digits", image_size=16))
    assert (bundle.num_train, len(bundle.test_labels)) == (1437, 360)
    assert bundle.image_shape == (3, 16, 16) and bundle.train_images.dtype == np.uint8
    assert bundle.num_classes == 10 and bundle.flip is False
    assert sorted(np.unique(bundle.train_labels)) == list(range(10))
    small = load_dataset(DatasetConfig(name="digits", image_size=8))
    assert small.image_shape == (3, 8, 8)
    assert np.array_equal(small.test_labels, bundle.test_labels), "the same fixed test split at any size"


def test_synthetic_is_deterministic_and_sized():
    cfg = DatasetConfig(name="synthetic", synthetic_train=40, synthetic_test=20, image_size=12, num_classes=4)
    a, b = load_dataset(cfg), load_dataset(cfg)
    assert a.image_shape == (3, 12, 12) and a.num_classes == 4 and a.num_train == 40
    assert np.array_equal(a.train_images, b.train_images)
    assert np.bincount(a.train_labels).tolist() == [10, 10, 10, 10]


def test_train_subset_via_load_dataset_keeps_ids():
    cfg = DatasetConfig(
        name="synthetic",
        synthetic_train=100,
        synthetic_test=20,
        image_size=8,
        train_subset=30,
        test_subset=10,
    )
    bundle = load_dataset(cfg, run_seed=3)
    assert bundle.num_train == 30 and len(bundle.test_labels) == 10
    full = load_dataset(cfg.model_copy(update={"train_subset": None, "test_subset": None}))
    assert np.array_equal(full.train_labels[bundle.train_ids], bundle.train_labels)
    assert np.array_equal(full.train_images[bundle.train_ids], bundle.train_images)
    assert np.array_equal(load_dataset(cfg, run_seed=3).train_ids, bundle.train_ids)
    assert not np.array_equal(load_dataset(cfg, run_seed=4).train_ids, bundle.train_ids)


# ------------------------------------------------------------------ stratified_subset


def test_stratified_subset_keeps_class_proportions():
    labels = np.array([0] * 60 + [1] * 30 + [2] * 10)
    np.random.default_rng(0).shuffle(labels)
    index = stratified_subset(labels, 50, seed=0)
    assert len(index) == 50 and len(np.unique(index)) == 50
    assert np.all(np.diff(index) > 0), "sorted: the subset keeps the data set's order"
    assert np.bincount(labels[index]).tolist() == [30, 15, 5]


def test_stratified_subset_is_seeded():
    labels = np.arange(200) % 4
    a, b, c = (stratified_subset(labels, 40, seed=s) for s in (1, 1, 2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_stratified_subset_remainder_goes_to_the_largest_fractions():
    labels = np.array([0] * 5 + [1] * 3 + [2] * 2)
    # size 5: exact shares 2.5, 1.5, 1.0 -> floors 2, 1, 1; the one left goes to the tie's lower class id
    assert np.bincount(labels[stratified_subset(labels, 5, seed=0)]).tolist() == [3, 1, 1]
    labels = np.array([0] * 7 + [1] * 2 + [2] * 1)
    # size 4: exact 2.8, 0.8, 0.4 -> floors 2, 0, 0; the 2 left go to classes 0 and 1 (fractions 0.8)
    assert np.bincount(labels[stratified_subset(labels, 4, seed=0)], minlength=3).tolist() == [3, 1, 0]


def test_stratified_subset_of_everything_is_everything():
    labels = np.array([2, 0, 1, 1])
    assert stratified_subset(labels, 10, seed=0).tolist() == [0, 1, 2, 3]


# ------------------------------------------------------------------ the shared real CIFAR-10


@pytest.fixture(scope="session")
def cifar_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cifar-cache")


def test_shared_cifar10_parquet_with_a_stratified_subset(cifar_cache):
    assert SHARED_CIFAR10.is_dir(), f"the shared CIFAR-10 Parquet files are expected at {SHARED_CIFAR10}"
    cfg = DatasetConfig(
        name="parquet", root=str(SHARED_CIFAR10), train_subset=500, cache_dir=str(cifar_cache)
    )
    bundle = load_dataset(cfg, run_seed=0)
    assert bundle.num_classes == 10
    assert bundle.image_shape == (3, 32, 32)
    assert bundle.train_images.shape == (500, 32, 32, 3) and bundle.train_images.dtype == np.uint8
    assert np.bincount(bundle.train_labels, minlength=10).tolist() == [50] * 10
    assert len(bundle.test_labels) == 10_000 and np.bincount(bundle.test_labels).tolist() == [1000] * 10
    ids = bundle.train_ids
    assert np.all(np.diff(ids) > 0) and ids.min() >= 0 and ids.max() < 50_000
    assert len(bundle.mean) == 3 and all(0.3 < m < 0.6 for m in bundle.mean)
    again = load_dataset(cfg, run_seed=0)  # from the session's cache
    assert np.array_equal(again.train_ids, ids) and np.array_equal(again.train_images, bundle.train_images)
