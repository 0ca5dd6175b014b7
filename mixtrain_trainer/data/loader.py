"""Batch sources: turn sample positions into normalised, augmented image batches on the training device.

- ``ResidentSource``: the uint8 data set lives on the device (airbench style); a batch is an index
  gather plus batch-wide augmentation (random crop with 4-pixel zero padding, horizontal flip).
- ``HostSource``: uint8 arrays stay in (pinned) host memory; batches are gathered on the host, copied
  asynchronously and augmented on the device the same way.
- ``StreamedSource`` (``imagefolder``): persistent DataLoader workers whose batches follow the epoch
  plan; on CUDA they only read bytes and the batch is decoded and augmented on the GPU (``decode.py``),
  on CPU they decode and augment; the device normalises.

All of them: ``fetch(positions, generator) -> (B, C, H, W)`` float, and ``eval_batches()``.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch

from mixtrain_trainer.data.bundle import DataBundle
from mixtrain_trainer.errors import DataError

log = logging.getLogger(__name__)

PAD = 4


def augment_batch(x: torch.Tensor, generator: torch.Generator, flip: bool) -> torch.Tensor:
    """Random crop (zero padding ``PAD``) and horizontal flip of a uint8 batch (N, C, H, W), on its device.

    The draws come from ``generator``, which lives on the batch's device (no host round trip). One
    ``gather`` over the flattened padded images with per-sample pixel indices: the result is a contiguous
    NCHW batch (a strided fancy-index view was several times slower on the CPU, for every later op too).
    """
    n, c, h, w = x.shape
    if n == 0:
        return x
    padded = torch.nn.functional.pad(x, (PAD, PAD, PAD, PAD))
    wp = w + 2 * PAD
    shifts = torch.randint(0, 2 * PAD + 1, (2, n, 1), generator=generator, device=x.device)
    rows = shifts[0] + torch.arange(h, device=x.device)  # (N, H)
    cols = shifts[1] + torch.arange(w, device=x.device)  # (N, W)
    if flip:
        flipped = torch.rand(n, 1, generator=generator, device=x.device) < 0.5
        cols = torch.where(flipped, cols.flip(1), cols)
    index = (rows.view(n, h, 1) * wp + cols.view(n, 1, w)).view(n, 1, h * w).expand(n, c, h * w)
    return padded.flatten(2).gather(2, index).view(n, c, h, w)


class _Normalise:
    def __init__(self, bundle: DataBundle, device, channels_last: bool, dtype=torch.float32):
        self.mean = torch.tensor(bundle.mean, device=device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(bundle.std, device=device).view(1, -1, 1, 1) * 255
        self.channels_last, self.dtype = channels_last, dtype

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float() - self.mean) / self.std
        # Every batch in the configured layout: channels-last inputs where channels_last is off (CPU) made
        # oneDNN's CPU convolution backward corrupt the heap for narrow layers (resnet8 width 4/8, torch 2.15).
        return x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)


class ResidentSource:
    """The whole uint8 data set on ``device`` (NCHW); batches by index gather."""

    def __init__(self, bundle: DataBundle, device, augment: bool, channels_last: bool, pin: bool = False):
        to_nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))  # noqa: E731
        self.train = self._place(to_nchw(bundle.train_images), device, pin)
        self.test = self._place(to_nchw(bundle.test_images), device, pin)
        self.test_labels = torch.from_numpy(bundle.test_labels).to(device)
        self.device, self.augment, self.flip = torch.device(device), augment, bundle.flip
        self.normalise = _Normalise(bundle, device, channels_last)

    @staticmethod
    def _place(images: torch.Tensor, device, pin: bool) -> torch.Tensor:
        return images.to(device)

    def _gather(self, images: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return images[positions]

    def fetch(self, positions: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = self._gather(self.train, positions)
        if self.augment:
            x = augment_batch(x, generator, self.flip)
        return self.normalise(x)

    def _slice(self, images: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        return images[lo:hi]

    def eval_batches(self, batch_size: int, share: slice = slice(None)):
        """Yield (images, labels) of the test split (or its ``share``, a data-parallel rank's part) in
        order; slices, no index tensors: no host sync."""
        start, stop, _ = share.indices(self.test.shape[0])
        for lo in range(start, stop, batch_size):
            hi = min(lo + batch_size, stop)
            yield self.normalise(self._slice(self.test, lo, hi)), self.test_labels[lo:hi]

    def epoch_batches(self, plan, generator: torch.Generator):
        """Yield (first, second, n_single, x_first, x_second) per mini-batch: positions and their images."""
        for first, second, n_single in plan.batches():
            yield first, second, n_single, self.fetch(first, generator), self.fetch(second, generator)


class HostSource(ResidentSource):
    """uint8 arrays in (pinned) host memory, gathered on the host and copied to the device per batch."""

    @staticmethod
    def _place(images: torch.Tensor, device, pin: bool) -> torch.Tensor:
        return images.pin_memory() if pin and torch.cuda.is_available() else images

    def _to_device(self, batch: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda" and not batch.is_pinned():
            batch = batch.pin_memory()  # a pinned source makes the copy asynchronous: no host wait
        return batch.to(self.device, non_blocking=True)

    def _gather(self, images: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """``positions`` on the CPU (the plan's host copy): gathered here, then one asynchronous copy."""
        return self._to_device(images[positions])

    def _slice(self, images: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        return self._to_device(images[lo:hi])

    def epoch_batches(self, plan, generator: torch.Generator):
        """As ``ResidentSource.epoch_batches``; images are gathered with the plan's CPU positions, so no
        position ever travels back from the device."""
        for (first, second, n_single), (first_h, second_h, _) in zip(plan.batches(), plan.batches(host=True)):
            yield first, second, n_single, self.fetch(first_h, generator), self.fetch(second_h, generator)


class _PlanBatches:
    """Batch sampler of a persistent DataLoader: the batches (lists of positions) of the plan set last."""

    def __init__(self):
        self.batches: list[list[int]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _host_batches(plan):
    """(first, second, n_single) per mini-batch on the CPU: one copy of the plan's positions per epoch."""
    if getattr(plan, "first_host", None) is not None:
        return list(plan.batches(host=True))
    host = dataclasses.replace(plan, first=plan.first.cpu(), second=plan.second.cpu())
    return list(host.batches())


class StreamedSource:
    """imagefolder: persistent DataLoader workers whose batches follow the plan.

    ``decode`` "workers": workers decode and augment (PIL); "device": workers read bytes, the batch is
    decoded and augmented on the training device (``decode.py``); "auto": device on CUDA. Workers live
    across epochs; ``prefetch(plan)`` starts the next epoch's reads as soon as its plan is known. Positions
    reach the workers through one host copy of the plan per epoch (no per-batch sync). Unreadable images:
    ``DataError`` naming the file, or with ``skip_bad_images`` left out (a pair loses both constituents)
    and recorded in ``bad_files``.
    """

    def __init__(self, bundle: DataBundle, device, channels_last: bool, num_workers: int, pin: bool):
        self.streamed = bundle.streamed
        self.device = torch.device(device)
        self.normalise = _Normalise(bundle, device, channels_last)
        self.test_labels = torch.from_numpy(bundle.test_labels)
        self.num_workers, self.pin = num_workers, pin and torch.cuda.is_available()
        mode = self.streamed.decode
        self.on_device = mode == "device" or (mode == "auto" and self.device.type == "cuda")
        self.bad_files: dict[str, str] = {}  # path -> why, for the images left out (skip_bad_images)
        self._loaders: dict[bool, tuple] = {}
        self._prefetched = None  # (plan, host batches, iterator)

    def _loader(self, train: bool):
        if train not in self._loaders:
            from mixtrain_trainer.data.imagefolder import collate_decoded, collate_items

            sampler = _PlanBatches()
            workers = self.num_workers
            loader = torch.utils.data.DataLoader(
                self.streamed.encoded(train) if self.on_device else self.streamed.dataset(train),
                batch_sampler=sampler,
                num_workers=workers,
                collate_fn=collate_items if self.on_device else collate_decoded,
                pin_memory=self.pin and not self.on_device,
                persistent_workers=workers > 0,
                # encoded batches are small: read further ahead; decoded ones (38 MB at 256 x 224 px) take
                # shared memory, which containers often keep small
                prefetch_factor=(4 if self.on_device else 2) if workers > 0 else None,
            )
            self._loaders[train] = (loader, sampler)
        return self._loaders[train]

    def _start(self, plan):
        host = _host_batches(plan)
        loader, sampler = self._loader(True)
        sampler.batches = [f.tolist() + s.tolist() for f, s, _ in host]
        return host, iter(loader)

    def prefetch(self, plan) -> None:
        """Start reading ``plan``'s batches now (e.g. while the previous epoch is evaluated); the
        ``epoch_batches(plan)`` call that follows continues from them."""
        self._prefetched = (plan, *self._start(plan))

    def epoch_batches(self, plan, generator: torch.Generator):
        """Yield (first, second, n_single, x_first, x_second) per mini-batch, following the plan."""
        if self._prefetched is not None and self._prefetched[0] is plan:
            _, host, batches = self._prefetched
        else:
            host, batches = self._start(plan)
        self._prefetched = None
        for (first, second, n_single), (hf, hs, _), batch in zip(plan.batches(), host, batches):
            positions = hf.tolist() + hs.tolist()
            images, bad = self._images(batch, positions, True, generator)
            if bad:
                first, second, n_single, images = _drop_bad(first, second, n_single, images, bad)
                if first.numel() == 0:
                    continue
            n1 = first.numel()
            yield first, second, n_single, images[:n1], images[n1:]

    def eval_batches(self, batch_size: int, share: slice = slice(None)):
        start, n, _ = share.indices(len(self.test_labels))
        loader, sampler = self._loader(False)
        sampler.batches = [list(range(lo, min(lo + batch_size, n))) for lo in range(start, n, batch_size)]
        for positions, batch in zip(sampler.batches, loader):
            images, bad = self._images(batch, positions, False, None)
            if bad:
                keep = [i for i in range(len(positions)) if i not in bad]
                if not keep:
                    continue
                images, positions = images[torch.tensor(keep, device=images.device)], [positions[i] for i in keep]
                labels = self.test_labels[torch.tensor(positions)]
            else:
                labels = self.test_labels[positions[0] : positions[-1] + 1]
            yield images, labels.to(self.device, non_blocking=True)

    def _images(self, batch, positions: list[int], train: bool, generator):
        """Normalised (B, C, S, S) images of one loader batch, aligned with ``positions`` (bad ones as zeros),
        and the batch indices of the bad ones."""
        data, errors = batch
        if self.on_device:
            from mixtrain_trainer.data import decode

            todo = [i for i, e in enumerate(errors) if not e]
            decoded, reasons = decode.decode_batch([data[i] for i in todo], self.device)
            errors = list(errors)
            for i, reason in zip(todo, reasons):
                errors[i] = reason
            good = [i for i, e in enumerate(errors) if not e]
            imgs = [img for img in decoded if img is not None]
            size = self.streamed.image_size
            if imgs:
                sizes = decode.image_sizes(imgs, self.device)
                if train and self.streamed.augment:
                    x = decode.crop_resize(imgs, decode.random_resized_boxes(sizes, generator), size)
                    x = decode.flip_batch(x, generator) if self.streamed.flip else x
                else:
                    x = decode.crop_resize(imgs, decode.center_boxes(sizes, size, self.streamed.resize), size)
            else:
                x = torch.empty(0, 3, size, size, device=self.device)
        else:
            good = [i for i, e in enumerate(errors) if not e]
            x = data.to(self.device, non_blocking=True) if good else torch.empty(
                0, *self.streamed.image_shape, dtype=torch.uint8, device=self.device)
        bad = {i: e for i, e in enumerate(errors) if e}
        if bad:
            self._report(bad, positions, train)
            full = torch.zeros(len(positions), *x.shape[1:], dtype=x.dtype, device=x.device)
            full[torch.tensor(good, dtype=torch.long, device=x.device)] = x
            x = full
        return self.normalise(x), bad

    def _report(self, bad: dict[int, str], positions: list[int], train: bool) -> None:
        paths = self.streamed.paths(train)
        for i, reason in bad.items():
            path = paths[positions[i]]
            if not self.streamed.skip_bad_images:
                raise DataError(
                    f"dataset imagefolder: cannot read image {path!r} ({reason}); replace or remove it, or set "
                    "dataset.skip_bad_images: true to leave such images out"
                )
            if path not in self.bad_files:
                self.bad_files[path] = reason
                log.warning("dataset imagefolder: skipping unreadable image %r (%s)", path, reason)

    @property
    def skipped_images(self) -> int:
        """How many distinct files were left out so far (``skip_bad_images``)."""
        return len(self.bad_files)


def _drop_bad(first, second, n_single: int, images: torch.Tensor, bad: dict[int, str]):
    """Leave the bad batch items out: a bad single goes alone, a pair with a bad constituent goes whole.
    ``images`` is aligned with [first..., second...]. Returns (first, second, n_single, images)."""
    n1, n_pairs = first.numel(), second.numel()
    keep_single = [i for i in range(n_single) if i not in bad]
    keep_pair = [k for k in range(n_pairs) if (n_single + k) not in bad and (n1 + k) not in bad]
    rows_first = keep_single + [n_single + k for k in keep_pair]
    rows = rows_first + [n1 + k for k in keep_pair]
    dev_rows = torch.tensor(rows_first, dtype=torch.long).to(first.device, non_blocking=True)
    dev_pairs = torch.tensor(keep_pair, dtype=torch.long).to(second.device, non_blocking=True)
    picked = images[torch.tensor(rows, dtype=torch.long).to(images.device, non_blocking=True)]
    return first[dev_rows], second[dev_pairs], len(keep_single), picked


def make_source(bundle: DataBundle, device, augment: bool, channels_last: bool, resident: str,
                num_workers: int, pin: bool):
    """Pick the batch source: device-resident when the data fits (or is asked to), host otherwise."""
    if bundle.streamed is not None:
        return StreamedSource(bundle, device, channels_last, num_workers, pin)
    device = torch.device(device)
    if resident == "auto":
        nbytes = bundle.train_images.nbytes + bundle.test_images.nbytes
        fits = device.type == "cpu" or nbytes < 0.25 * torch.cuda.get_device_properties(device).total_memory
        resident = "yes" if fits else "no"
    cls = ResidentSource if resident == "yes" else HostSource
    return cls(bundle, device, augment, channels_last, pin)
