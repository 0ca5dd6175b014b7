"""The streamed imagefolder path: batch decode + augmentation on the device (decode.py) against oracles and
against the CPU workers' path, persistent workers and prefetch, unreadable images (one line, or skipped)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from trainer_helpers import tiny_config

from mixtrain_trainer.config import DatasetConfig
from mixtrain_trainer.data import decode, load_dataset
from mixtrain_trainer.data.loader import StreamedSource
from mixtrain_trainer.errors import DataError
from mixtrain_trainer.history import load_samples
from mixtrain_trainer.loop import Trainer
from mixtrain_trainer.sampler import plan_epoch


def _smooth(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth image (gradients + a blob): JPEG and resampling differences stay small on it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    c = rng.uniform(0.2, 0.8, 2) * (h, w)
    blob = np.exp(-((yy - c[0]) ** 2 + (xx - c[1]) ** 2) / (2 * (0.2 * min(h, w)) ** 2))
    chans = [rng.uniform(40, 200) + 50 * np.sin(xx / w * rng.uniform(1, 4)) + 40 * blob * rng.uniform(-1, 1)
             + 30 * yy / h for _ in range(3)]
    return np.clip(np.stack(chans, -1), 0, 255).astype(np.uint8)


def _jpeg_tree(root, per_class=(6, 3), bad: str | None = None):
    """train/ and val/ with two classes of JPEGs of assorted sizes; ``bad``: a corrupt train/cat file."""
    for split, n in zip(("train", "val"), per_class):
        for label, name in enumerate(("cat", "dog")):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = 40 + 7 * ((i + label) % 4), 44 + 5 * (i % 3)
                Image.fromarray(_smooth(h, w, 100 * label + i)).save(folder / f"{i:03d}.jpg", quality=95)
    if bad:
        (root / "train" / "cat" / bad).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" + bytes(200))


def _source(root, decode_mode: str, device="cpu", workers=0, **kw) -> StreamedSource:
    cfg = DatasetConfig(name="imagefolder", root=str(root), image_size=32, decode=decode_mode,
                        num_workers=workers, **kw)
    return StreamedSource(load_dataset(cfg), device, channels_last=False, num_workers=workers, pin=False)


# ------------------------------------------------------------------ pure batch ops against oracles


def test_crop_resize_identity_and_block_average():
    img = torch.arange(3 * 4 * 6, dtype=torch.uint8).view(3, 4, 6)
    # the whole image at its own size: every output pixel is one input pixel centre
    box = torch.tensor([[0.0, 0.0, 6.0, 4.0]])
    assert decode.crop_resize([img], box, 4).shape == (1, 3, 4, 4)  # square output, 6 -> 4 columns
    same = decode.crop_resize([img[:, :, :4]], torch.tensor([[0.0, 0.0, 4.0, 4.0]]), 4)
    torch.testing.assert_close(same[0], img[:, :, :4].float())
    # a 2x2 block to one pixel: the mean of the four (rows 1-2, columns 3-4)
    one = decode.crop_resize([img], torch.tensor([[3.0, 1.0, 5.0, 3.0]]), 1)
    torch.testing.assert_close(one[0, :, 0, 0], img[:, 1:3, 3:5].float().mean((1, 2)))
    # a smaller image padded beside a larger one keeps its own values at its border
    small = torch.full((3, 2, 2), 200, dtype=torch.uint8)
    both = decode.crop_resize([img, small], torch.tensor([[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 2.0, 2.0]]), 3)
    torch.testing.assert_close(both[1], torch.full((3, 3, 3), 200.0))


def test_random_resized_boxes_follow_the_rule_and_the_generator():
    sizes = torch.tensor([[300.0, 400.0], [64.0, 64.0], [500.0, 257.0]]).repeat(50, 1)
    boxes = decode.random_resized_boxes(sizes, torch.Generator().manual_seed(3))
    again = decode.random_resized_boxes(sizes, torch.Generator().manual_seed(3))
    assert torch.equal(boxes, again)
    x0, y0, x1, y1 = boxes.unbind(1)
    h, w = sizes.unbind(1)
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= w).all() and (y1 <= h).all()
    assert torch.equal(boxes, boxes.round())  # integer pixel boxes, as torchvision's
    cw, ch = x1 - x0, y1 - y0
    share, ratio = cw * ch / (h * w), cw / ch
    # rounding to whole pixels moves share and ratio a little beyond the drawn ranges
    assert (share > 0.07).all() and (share <= 1).all()
    assert (ratio > 0.74 * (1 - 2 / ch)).all() and (ratio < 4 / 3 * (1 + 2 / ch)).all()
    assert share.std() > 0.1 and x0.unique().numel() > 10  # really drawn, not a fixed box


def test_random_resized_boxes_fallback_is_the_centred_allowed_box():
    # 10 x 1000: no box with a ratio in [3/4, 4/3] and share >= 0.08 fits; the fallback keeps the full
    # height and a width of round(10 * 4/3) = 13, centred: x0 = floor((1000 - 13) / 2) = 493
    box = decode.random_resized_boxes(torch.tensor([[10.0, 1000.0]]), torch.Generator().manual_seed(0))
    assert box.tolist() == [[493.0, 0.0, 506.0, 10.0]]
    tall = decode.random_resized_boxes(torch.tensor([[1000.0, 10.0]]), torch.Generator().manual_seed(0))
    assert tall.tolist() == [[0.0, 493.0, 10.0, 506.0]]  # h = round(10 / (3/4)) = 13, y0 = floor(987 / 2)


def test_center_boxes_match_resize_then_centre_crop():
    # 64 x 100, resize 36 (shorter side), crop 32: the crop is 32/36 of the shorter side, centred
    box = decode.center_boxes(torch.tensor([[64.0, 100.0]]), 32, 36)[0]
    side = 64 * 32 / 36
    assert box.tolist() == pytest.approx([(100 - side) / 2, (64 - side) / 2, (100 + side) / 2, (64 + side) / 2])


def test_flip_batch_flips_the_drawn_images():
    x = torch.arange(8 * 3 * 2 * 5, dtype=torch.float32).view(8, 3, 2, 5)
    out = decode.flip_batch(x, torch.Generator().manual_seed(1))
    drawn = torch.rand(8, generator=torch.Generator().manual_seed(1)) < 0.5
    assert 0 < drawn.sum() < 8
    for i in range(8):
        torch.testing.assert_close(out[i], x[i].flip(-1) if drawn[i] else x[i])


# ------------------------------------------------------------------ the device path against the workers' path


def _eval_images(source: StreamedSource) -> torch.Tensor:
    return torch.cat([x for x, _ in source.eval_batches(4)]).cpu()


def test_device_decode_matches_the_cpu_path_on_jpegs(tmp_path):
    """decode: device (batch libjpeg decode + roi_align crops, here on the CPU) against decode: workers
    (PIL + torchvision Resize/CenterCrop) on the same JPEGs: the same images up to resampling."""
    _jpeg_tree(tmp_path / "imgs")
    cpu, dev = _source(tmp_path / "imgs", "workers"), _source(tmp_path / "imgs", "device")
    assert not cpu.on_device and dev.on_device
    a, b = _eval_images(cpu), _eval_images(dev)
    assert a.shape == b.shape == (6, 3, 32, 32)
    diff = (a - b).abs() * cpu.normalise.std.view(1, -1, 1, 1)  # back to 0..255 units
    assert diff.mean() < 1.5 and diff.max() < 12, (diff.mean(), diff.max())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: GPU JPEG decode (nvJPEG)")
def test_gpu_decode_matches_the_cpu_path_on_jpegs(tmp_path):
    _jpeg_tree(tmp_path / "imgs")
    cpu = _source(tmp_path / "imgs", "workers")
    gpu = _source(tmp_path / "imgs", "auto", device="cuda")
    assert gpu.on_device
    a, b = _eval_images(cpu), _eval_images(gpu)
    diff = (a - b).abs() * cpu.normalise.std.view(1, -1, 1, 1)
    assert diff.mean() < 1.5 and diff.max() < 12, (diff.mean(), diff.max())
    # training batches: decoded, cropped and flipped on the GPU from the GPU generator, reproducibly
    plan = plan_epoch(torch.zeros(12, dtype=torch.bool), 4, torch.Generator().manual_seed(0)).to("cuda")
    runs = [torch.cat([x1 for _, _, _, x1, _ in gpu.epoch_batches(plan, torch.Generator("cuda").manual_seed(5))])
            for _ in range(2)]
    assert runs[0].device.type == "cuda" and runs[0].shape == (12, 3, 32, 32)
    torch.testing.assert_close(runs[0], runs[1])


@pytest.mark.parametrize("mode", ["workers", "device"])
def test_persistent_workers_and_prefetch_follow_the_plan(tmp_path, mode):
    _jpeg_tree(tmp_path / "imgs")
    source = _source(tmp_path / "imgs", mode, workers=1, augment=False)
    g = torch.Generator().manual_seed(0)
    plan = plan_epoch(torch.arange(12) % 3 == 0, 4, g)
    first = [(f.clone(), s.clone(), n, x1, x2) for f, s, n, x1, x2 in source.epoch_batches(plan, g)]
    pids = [w.pid for w in source._loaders[True][0]._iterator._workers]
    nxt = plan_epoch(torch.arange(12) % 2 == 0, 4, g)
    source.prefetch(nxt)  # the next epoch's reads start now, in the same workers
    second = list(source.epoch_batches(nxt, g))
    assert [w.pid for w in source._loaders[True][0]._iterator._workers] == pids
    assert [f.tolist() for f, *_ in second] == [f.tolist() for f, _, _ in nxt.batches()]
    # the same sample gives the same (unaugmented) image in both epochs, wherever its batch put it
    seen = {}
    for f, s, _, x1, x2 in first + second:
        for pos, img in zip(torch.cat([f, s]).tolist(), torch.cat([x1, x2])):
            if pos in seen:
                torch.testing.assert_close(seen[pos], img)
            seen[pos] = img
    assert len(seen) == 12


# ------------------------------------------------------------------ unreadable images


@pytest.mark.parametrize("mode", ["workers", "device"])
def test_corrupt_image_is_one_line_naming_the_file(tmp_path, mode):
    _jpeg_tree(tmp_path / "imgs", bad="zz_bad.jpg")
    cfg = tiny_config(tmp_path / "store", "baseline", epochs=1, batch_size=4,
                      dataset={"name": "imagefolder", "root": str(tmp_path / "imgs"), "num_workers": 1,
                               "image_size": 32, "decode": mode})
    with pytest.raises(DataError) as err:
        Trainer(cfg).fit()
    text = str(err.value)
    assert len(text.splitlines()) == 1 and "zz_bad.jpg" in text and "skip_bad_images" in text
    assert "Traceback" not in text


def test_corrupt_image_is_exit_2_from_the_cli(tmp_path, capsys):
    import yaml

    from orchestrate.cli import main

    _jpeg_tree(tmp_path / "imgs", bad="zz_bad.jpg")
    run = tmp_path / "run.yaml"
    run.write_text(yaml.safe_dump({
        "variant": "baseline", "model": "resnet8", "model_width": 4, "epochs": 1, "batch_size": 4,
        "device": "cpu", "dataset": {"name": "imagefolder", "root": str(tmp_path / "imgs"), "num_workers": 0,
                                     "image_size": 32}, "storage": {"root": str(tmp_path / "store")}}))
    assert main(["train", "--config", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "zz_bad.jpg" in err[0]


@pytest.mark.parametrize("mode", ["workers", "device"])
def test_skip_bad_images_counts_and_leaves_them_out(tmp_path, mode):
    _jpeg_tree(tmp_path / "imgs", bad="zz_bad.jpg")
    cfg = tiny_config(tmp_path / "store", "naive-cutmix", epochs=1, batch_size=4,
                      dataset={"name": "imagefolder", "root": str(tmp_path / "imgs"), "num_workers": 0,
                               "image_size": 32, "decode": mode, "skip_bad_images": True})
    trainer = Trainer(cfg)
    final = trainer.fit()
    assert list(trainer.source.bad_files) == [str(tmp_path / "imgs" / "train" / "cat" / "zz_bad.jpg")]
    assert trainer.source.skipped_images == 1
    rows = load_samples(cfg.storage.root, cfg.name, trials=[trainer.trial_id])
    bad_id = trainer.data.streamed.train_paths.index(str(tmp_path / "imgs" / "train" / "cat" / "zz_bad.jpg"))
    bad = rows[rows.sample_id == bad_id].iloc[0]
    assert math.isnan(bad.loss)  # not trained this epoch
    # naive-cutmix pairs all 13: six pairs and a single. Left out: the bad image alone (it was the single)
    # or with its partner (a composite needs both)
    assert len(rows) == 13 and rows.loss.notna().sum() in (11, 12)
    assert math.isfinite(final["final_test_acc"])


# ------------------------------------------------------------------ the trainer's prefetch


def test_trainer_prefetches_the_plan_it_trains_on_and_resume_equals_the_whole_run(tmp_path):
    """After epoch E's policy step the trainer builds E+1's plan and hands it to ``prefetch``; epoch E+1
    then trains on that very plan (the prefetched reads). A resume (whose checkpoint rewinds the plan
    generator to before the early plan) equals the uninterrupted run."""
    _jpeg_tree(tmp_path / "imgs", per_class=(8, 3))
    data = {"name": "imagefolder", "root": str(tmp_path / "imgs"), "num_workers": 1, "image_size": 32,
            "augment": False}
    cfg = tiny_config(tmp_path / "a", "mixtrain-cutmix", epochs=3, batch_size=4, dataset=data)
    trainer = Trainer(cfg)
    source, prefetched, trained = trainer.source, [], []
    real_prefetch, real_batches = source.prefetch, source.epoch_batches

    def prefetch(plan):
        prefetched.append((plan, plan.first.tolist(), plan.second.tolist()))
        real_prefetch(plan)

    def epoch_batches(plan, generator):
        waiting = source._prefetched is not None and source._prefetched[0] is plan
        trained.append((plan, waiting, [(f.tolist(), s.tolist()) for f, s, _ in plan.batches()]))
        return real_batches(plan, generator)

    source.prefetch, source.epoch_batches = prefetch, epoch_batches
    trainer.fit()
    assert len(prefetched) == 2  # for epochs 1 and 2; nothing after the last epoch
    for (plan, first, second), (used, waiting, batches) in zip(prefetched, trained[-2:]):
        assert used is plan and waiting  # trained from the prefetched reads
        assert [p for f, _ in batches for p in f] == first
        assert [p for _, s in batches for p in s] == [p for p in second if p >= 0]
    assert source._prefetched is None

    broken = tiny_config(tmp_path / "b", "mixtrain-cutmix", epochs=3, batch_size=4, dataset=data,
                         debug__crash_once_at_epoch=2)
    with pytest.raises(RuntimeError, match="injected crash"):
        Trainer(broken).fit()
    resumed = Trainer(broken)
    resumed.fit(resume=True)
    a = load_samples(cfg.storage.root, cfg.name, trials=[trainer.trial_id]).sort_values(["epoch", "sample_id"])
    b = load_samples(broken.storage.root, broken.name, trials=[resumed.trial_id]).sort_values(["epoch", "sample_id"])
    assert len(a) == len(b) == 3 * 16
    for col in ("partner_id", "mixed", "mix_next", "region"):
        assert (a[col].to_numpy() == b[col].to_numpy()).all(), col
    assert np.allclose(a["loss"].to_numpy(), b["loss"].to_numpy(), equal_nan=True)


# ------------------------------------------------------------------ Parquet tables streamed by row groups


def _parquet_from_tree(tree, out, row_group_size=3):
    """train.parquet / test.parquet holding the tree's JPEG bytes (in the tree's order) and labels."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out.mkdir()
    bundle = load_dataset(DatasetConfig(name="imagefolder", root=str(tree), image_size=32, num_workers=0))
    for split, paths, labels in (("train", bundle.streamed.train_paths, bundle.train_labels),
                                 ("test", bundle.streamed.test_paths, bundle.test_labels)):
        table = pa.table({"image": [open(p, "rb").read() for p in paths], "label": labels.astype(np.int64)})
        pq.write_table(table, out / f"{split}.parquet", row_group_size=row_group_size)


@pytest.mark.parametrize("mode", ["workers", "device"])
def test_streamed_parquet_gives_the_imagefolder_images(tmp_path, mode):
    _jpeg_tree(tmp_path / "imgs")
    _parquet_from_tree(tmp_path / "imgs", tmp_path / "pq")
    folder = _source(tmp_path / "imgs", mode, workers=1, augment=False)
    cfg = DatasetConfig(name="parquet", root=str(tmp_path / "pq"), stream=True, image_size=32, decode=mode,
                        num_workers=1, augment=False)
    bundle = load_dataset(cfg)
    assert bundle.train_images is None and bundle.num_train == 12 and bundle.num_classes == 2
    assert bundle.train_labels.tolist() == load_dataset(DatasetConfig(
        name="imagefolder", root=str(tmp_path / "imgs"), image_size=32)).train_labels.tolist()
    rows = StreamedSource(bundle, "cpu", channels_last=False, num_workers=1, pin=False)
    g = torch.Generator().manual_seed(0)
    plan = plan_epoch(torch.arange(12) % 3 == 0, 4, g)
    for a, b in zip(folder.epoch_batches(plan, g), rows.epoch_batches(plan, g)):
        assert a[0].tolist() == b[0].tolist()
        torch.testing.assert_close(a[3], b[3])
        torch.testing.assert_close(a[4], b[4])
    for (xa, ya), (xb, yb) in zip(folder.eval_batches(4), rows.eval_batches(4)):
        torch.testing.assert_close(xa, xb)
        assert ya.tolist() == yb.tolist()


def test_streamed_parquet_reads_a_row_group_once_while_it_is_kept_and_trains(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from mixtrain_trainer.data import parquet

    _jpeg_tree(tmp_path / "imgs")
    _parquet_from_tree(tmp_path / "imgs", tmp_path / "pq", row_group_size=5)
    bundle = load_dataset(DatasetConfig(name="parquet", root=str(tmp_path / "pq"), stream=True, image_size=32))
    reads = []
    real = pq.ParquetFile.read_row_group
    monkeypatch.setattr(pq.ParquetFile, "read_row_group", lambda self, g, **kw: reads.append(g) or real(self, g, **kw))
    data = parquet._RowGroupBytes(bundle.streamed.train_rows, "image", keep=1)
    blobs = [data[i][0] for i in range(12)]
    assert reads == [0, 1, 2]  # rows 0-4, 5-9, 10-11
    folder = load_dataset(DatasetConfig(name="imagefolder", root=str(tmp_path / "imgs"), image_size=32))
    assert bytes(blobs[7].numpy()) == open(folder.streamed.train_paths[7], "rb").read()
    data[0]
    assert reads == [0, 1, 2, 0]  # keep=1: group 0 was dropped
    monkeypatch.undo()

    cfg = tiny_config(tmp_path / "store", "mixtrain-cutmix", epochs=2, batch_size=4,
                      dataset={"name": "parquet", "root": str(tmp_path / "pq"), "stream": True, "num_workers": 1,
                               "image_size": 32, "decode": "workers"})
    trainer = Trainer(cfg)
    final = trainer.fit()
    assert type(trainer.source).__name__ == "StreamedSource" and math.isfinite(final["final_test_acc"])
    assert len(load_samples(cfg.storage.root, cfg.name, trials=[trainer.trial_id])) == 2 * 12
