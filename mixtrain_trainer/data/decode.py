"""Decode and augment a batch of encoded images on the training device (the streamed path's hot part).

Workers only read bytes; here a whole batch is decoded at once (``torchvision.io.decode_jpeg`` with
``device=`` the training device: nvJPEG on CUDA, libjpeg on CPU) and cropped, resized and flipped with
batch tensor ops: one ``roi_align`` per batch does every image's crop and bilinear resize (averaging
``ceil(box / size)`` samples per output pixel, so downscaling does not alias), one ``where`` flips.
Every random draw comes from an explicit ``torch.Generator`` on the device: no host round trip.

Boxes are (x0, y0, x1, y1) in pixel units of each image, pixel i covering [i, i + 1).
"""

from __future__ import annotations

import math

import torch

#: torchvision's RandomResizedCrop defaults (Inception-style): area share and aspect ratio ranges
SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)
TRIES = 10
#: padded float bytes per roi_align call; bigger batches of big images are cut into several calls
CHUNK_BYTES = 1 << 30


def is_jpeg(data: torch.Tensor) -> bool:
    return data.numel() > 3 and bool(data[0] == 0xFF and data[1] == 0xD8 and data[2] == 0xFF)


def decode_batch(encoded: list[torch.Tensor], device) -> tuple[list[torch.Tensor | None], list[str]]:
    """Encoded images (1-D uint8 CPU tensors) -> ((3, H_i, W_i) uint8 tensors on ``device``, reasons).

    JPEGs go to the device decoder in one call; anything else (PNG, a JPEG the device decoder refuses)
    is decoded on the CPU and copied. An image that cannot be decoded at all is None, with its reason.
    """
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

    device = torch.device(device)
    out: list[torch.Tensor | None] = [None] * len(encoded)
    reasons = [""] * len(encoded)
    jpegs = [i for i, data in enumerate(encoded) if is_jpeg(data)]
    if jpegs:
        try:
            decoded = decode_jpeg([encoded[i] for i in jpegs], mode=ImageReadMode.RGB, device=device)
            for i, img in zip(jpegs, decoded):
                out[i] = img
        except RuntimeError:
            pass  # one bad file fails the whole call: the others are decoded one by one below
    for i, data in enumerate(encoded):
        if out[i] is not None:
            continue
        try:
            out[i] = decode_image(data, mode=ImageReadMode.RGB).to(device, non_blocking=True)
        except RuntimeError as err:
            lines = str(err).strip().splitlines()
            reasons[i] = lines[0] if lines else "cannot be decoded"
    return out, reasons


def image_sizes(images: list[torch.Tensor], device) -> torch.Tensor:
    """(B, 2) float (H, W) of each image; shapes are host metadata, so this is one small copy, no sync."""
    return torch.tensor([img.shape[-2:] for img in images], dtype=torch.float32).to(device, non_blocking=True)


def random_resized_boxes(sizes: torch.Tensor, generator: torch.Generator, scale=SCALE, ratio=RATIO,
                         tries: int = TRIES) -> torch.Tensor:
    """torchvision's RandomResizedCrop box rule for a whole batch: (B, 2) sizes (H, W) -> (B, 4) boxes.

    Up to ``tries`` draws of (area share in ``scale``, log-uniform aspect ratio in ``ratio``) per image;
    the first whose rounded width and height fit is kept, at a uniformly drawn integer offset; when none
    fits, the centred crop of the largest box with an allowed aspect ratio. All draws from ``generator``
    (on ``sizes``' device), a fixed number per call.
    """
    b, dev = sizes.shape[0], sizes.device
    h, w = sizes[:, 0:1], sizes[:, 1:2]
    area = h * w * torch.empty(b, tries, device=dev).uniform_(scale[0], scale[1], generator=generator)
    log_r = torch.empty(b, tries, device=dev).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    r = torch.exp(log_r)
    cw, ch = torch.round(torch.sqrt(area * r)), torch.round(torch.sqrt(area / r))
    fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = torch.argmax(fits.int(), dim=1, keepdim=True)  # the first fitting try (0 when none fits)
    any_fits = fits.any(dim=1)
    cw, ch = cw.gather(1, first).squeeze(1), ch.gather(1, first).squeeze(1)
    h, w = h.squeeze(1), w.squeeze(1)
    u = torch.rand(b, 2, device=dev, generator=generator)
    y0 = torch.floor(u[:, 0] * (h - ch + 1)).clamp(max=h - ch)
    x0 = torch.floor(u[:, 1] * (w - cw + 1)).clamp(max=w - cw)
    # the fallback: centred, aspect ratio clamped into ``ratio``
    in_ratio = w / h
    fw = torch.where(in_ratio > ratio[1], torch.round(h * ratio[1]), w)
    fh = torch.where(in_ratio < ratio[0], torch.round(w / ratio[0]), h)
    fy0, fx0 = torch.floor((h - fh) / 2), torch.floor((w - fw) / 2)
    x0, y0 = torch.where(any_fits, x0, fx0), torch.where(any_fits, y0, fy0)
    cw, ch = torch.where(any_fits, cw, fw), torch.where(any_fits, ch, fh)
    return torch.stack([x0, y0, x0 + cw, y0 + ch], dim=1)


def center_boxes(sizes: torch.Tensor, size: int, resize: int) -> torch.Tensor:
    """Evaluation crops: what ``Resize(resize)`` (shorter side) then ``CenterCrop(size)`` keep of each
    image, as boxes in its own pixels. (B, 2) sizes (H, W) -> (B, 4)."""
    h, w = sizes[:, 0], sizes[:, 1]
    side = torch.minimum(h, w) * (size / resize)  # the crop's side in original pixels
    side_h, side_w = torch.minimum(side, h), torch.minimum(side, w)
    y0, x0 = (h - side_h) / 2, (w - side_w) / 2
    return torch.stack([x0, y0, x0 + side_w, y0 + side_h], dim=1)


def crop_resize(images: list[torch.Tensor], boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop ``boxes`` out of ``images`` (each (3, H_i, W_i) uint8) and resize them to ``size`` x ``size``:
    (B, 3, size, size) float in [0, 255]. The images are padded into one tensor (several when that
    would exceed ``CHUNK_BYTES``) and cropped + resized by one ``roi_align`` each."""
    from torchvision.ops import roi_align

    if not images:
        return torch.empty(0, 3, size, size, device=boxes.device)
    dev, dtype = boxes.device, torch.float32  # float32 boxes: half precision is 0.5 px at 1000 px
    out = []
    for lo, hi in _chunks(images, 4):
        part = images[lo:hi]
        hmax, wmax = max(i.shape[-2] for i in part), max(i.shape[-1] for i in part)
        padded = torch.zeros(hi - lo, 3, hmax, wmax, dtype=dtype, device=dev)
        for k, img in enumerate(part):
            h, w = img.shape[-2:]
            padded[k, :, :h, :w] = img
            # one replicated row and column: samples within half a pixel of the border interpolate with
            # the edge, as at the border of the largest image, instead of with the zero padding
            if w < wmax:
                padded[k, :, :h, w] = img[:, :, -1]
            if h < hmax:
                padded[k, :, h, : min(w + 1, wmax)] = padded[k, :, h - 1, : min(w + 1, wmax)]
        rois = torch.cat([torch.arange(hi - lo, device=dev, dtype=dtype).unsqueeze(1), boxes[lo:hi].to(dtype)], 1)
        out.append(roi_align(padded, rois, (size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True))
    return torch.cat(out)


def _chunks(images: list[torch.Tensor], item_bytes: int):
    lo, hmax, wmax = 0, 0, 0
    for i, img in enumerate(images):
        h2, w2 = max(hmax, img.shape[-2]), max(wmax, img.shape[-1])
        if i > lo and (i - lo + 1) * 3 * h2 * w2 * item_bytes > CHUNK_BYTES:
            yield lo, i
            lo, h2, w2 = i, img.shape[-2], img.shape[-1]
        hmax, wmax = h2, w2
    yield lo, len(images)


def flip_batch(x: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Flip each image of (B, C, H, W) horizontally with probability ``p`` (one draw per image)."""
    flipped = torch.rand(x.shape[0], device=x.device, generator=generator) < p
    return torch.where(flipped.view(-1, 1, 1, 1), x.flip(-1), x)
