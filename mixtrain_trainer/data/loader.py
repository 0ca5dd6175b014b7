"""Batch sources: turn sample positions into normalised, augmented image batches on the training device.

- ``ResidentSource``: the uint8 data set lives on the device (airbench style); a batch is an index
  gather plus batch-wide augmentation (random crop with 4-pixel zero padding, horizontal flip).
- ``HostSource``: uint8 arrays stay in (pinned) host memory; batches are gathered on the host, copied
  asynchronously and augmented on the device the same way.
- ``StreamedSource`` (``imagefolder``): a DataLoader whose batch sampler follows the epoch plan;
  workers decode and augment, the device normalises.

All of them: ``fetch(positions, generator) -> (B, C, H, W)`` float, and ``eval_batches()``.
"""

from __future__ import annotations

import numpy as np
import torch

from mixtrain_trainer.data.bundle import DataBundle

PAD = 4


def augment_batch(x: torch.Tensor, generator: torch.Generator, flip: bool) -> torch.Tensor:
    """Random crop (zero padding ``PAD``) and horizontal flip of a uint8 batch (N, C, H, W), on its device.

    The draws come from ``generator``, which lives on the batch's device (no host round trip).
    """
    n, _, h, w = x.shape
    if n == 0:
        return x
    padded = torch.nn.functional.pad(x, (PAD, PAD, PAD, PAD))
    shifts = torch.randint(0, 2 * PAD + 1, (2, n, 1), generator=generator, device=x.device)
    rows = shifts[0] + torch.arange(h, device=x.device)  # (N, H)
    cols = shifts[1] + torch.arange(w, device=x.device)  # (N, W)
    if flip:
        flipped = torch.rand(n, 1, generator=generator, device=x.device) < 0.5
        cols = torch.where(flipped, cols.flip(1), cols)
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    out = padded[batch, :, rows.view(n, h, 1), cols.view(n, 1, w)]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2)


class _Normalise:
    def __init__(self, bundle: DataBundle, device, channels_last: bool, dtype=torch.float32):
        self.mean = torch.tensor(bundle.mean, device=device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(bundle.std, device=device).view(1, -1, 1, 1) * 255
        self.channels_last, self.dtype = channels_last, dtype

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float() - self.mean) / self.std
        # augment_batch returns an NHWC-strided view; without this, inputs would be channels-last even
        # where channels_last is off (CPU), and oneDNN's CPU convolution backward corrupts the heap on
        # such inputs for narrow layers (seen with resnet8 width 4/8, torch 2.15, 2 threads).
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

    def eval_batches(self, batch_size: int):
        for lo in range(0, self.test.shape[0], batch_size):
            idx = torch.arange(lo, min(lo + batch_size, self.test.shape[0]))
            yield self.normalise(self._gather(self.test, idx)), self.test_labels[lo : lo + batch_size]

    def epoch_batches(self, plan, generator: torch.Generator):
        """Yield (first, second, n_single, x_first, x_second) per mini-batch: positions and their images."""
        for first, second, n_single in plan.batches():
            yield first, second, n_single, self.fetch(first, generator), self.fetch(second, generator)


class HostSource(ResidentSource):
    """uint8 arrays in (pinned) host memory, gathered on the host and copied to the device per batch."""

    @staticmethod
    def _place(images: torch.Tensor, device, pin: bool) -> torch.Tensor:
        return images.pin_memory() if pin and torch.cuda.is_available() else images

    def _gather(self, images: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        batch = images[positions.cpu()]
        if self.device.type == "cuda" and images.is_pinned():
            batch = batch.pin_memory()
        return batch.to(self.device, non_blocking=True)


class StreamedSource:
    """imagefolder: a DataLoader per epoch whose batches follow the plan; workers decode and augment."""

    def __init__(self, bundle: DataBundle, device, channels_last: bool, num_workers: int, pin: bool):
        self.streamed = bundle.streamed
        self.device = torch.device(device)
        self.normalise = _Normalise(bundle, device, channels_last)
        self.test_labels = torch.from_numpy(bundle.test_labels)
        self.num_workers, self.pin = num_workers, pin and torch.cuda.is_available()

    def _loader(self, dataset, batches):
        return torch.utils.data.DataLoader(
            dataset,
            batch_sampler=batches,
            num_workers=self.num_workers,
            pin_memory=self.pin,
            persistent_workers=False,
        )

    def epoch_batches(self, plan, generator: torch.Generator):
        """One DataLoader pass over the plan: each batch's positions are [first..., second...]."""
        planned = list(plan.batches())
        batches = [torch.cat([f, s]).tolist() for f, s, _ in planned]
        loader = self._loader(self.streamed.dataset(train=True), batches)
        for (first, second, n_single), images in zip(planned, loader):
            images = self.normalise(images.to(self.device, non_blocking=True))
            yield first, second, n_single, images[: first.numel()], images[first.numel() :]

    def eval_batches(self, batch_size: int):
        n = len(self.test_labels)
        batches = [list(range(lo, min(lo + batch_size, n))) for lo in range(0, n, batch_size)]
        loader = self._loader(self.streamed.dataset(train=False), batches)
        for b, images in zip(batches, loader):
            yield (
                self.normalise(images.to(self.device, non_blocking=True)),
                self.test_labels[b[0] : b[-1] + 1].to(self.device),
            )


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
