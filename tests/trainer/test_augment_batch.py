"""``data.loader.augment_batch``: random crop with 4-pixel zero padding and horizontal flip, on uint8 batches."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mixtrain_trainer.data.loader import PAD, augment_batch


def _images(n: int, side: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # no zeros, so the zero padding shows wherever it is
    return torch.randint(1, 256, (n, 3, side, side), generator=g, dtype=torch.uint8)


def _crop(x: torch.Tensor, dy: int, dx: int, flip: bool) -> torch.Tensor:
    """The hand version: pad, take the window at (dy, dx), mirror it left-right."""
    _, h, w = x.shape
    window = F.pad(x, (PAD, PAD, PAD, PAD))[:, dy : dy + h, dx : dx + w]
    return window.flip(-1) if flip else window


def _matches(x: torch.Tensor, out: torch.Tensor, flips=(False, True)):
    """For a batch: which (dy, dx, flip) hand crops equal each output. -> (list of options, (options, N) bool)."""
    options = [(dy, dx, f) for dy in range(2 * PAD + 1) for dx in range(2 * PAD + 1) for f in flips]
    padded = F.pad(x, (PAD, PAD, PAD, PAD))
    h, w = x.shape[-2:]
    hits = []
    for dy, dx, f in options:
        window = padded[..., dy : dy + h, dx : dx + w]
        window = window.flip(-1) if f else window
        hits.append((window == out).flatten(1).all(1))
    return options, torch.stack(hits)


def test_shape_dtype_and_empty_batch():
    x = _images(5)
    out = augment_batch(x, torch.Generator().manual_seed(0), flip=True)
    assert out.shape == x.shape and out.dtype == torch.uint8
    empty = x[:0]
    assert augment_batch(empty, torch.Generator(), flip=True).shape == (0, 3, 8, 8)


def test_a_shift_of_zero_on_both_axes_is_the_image_moved_down_and_right_by_the_padding():
    x = _images(1)[0]
    shifted = torch.zeros_like(x)
    shifted[:, PAD:, PAD:] = x[:, :-PAD, :-PAD]
    assert torch.equal(_crop(x, 0, 0, False), shifted)
    assert torch.equal(_crop(x, PAD, PAD, False), x), "the centre window is the image itself"
    assert torch.equal(_crop(x, PAD, PAD, True), x.flip(-1))


def test_every_output_is_one_crop_and_flip_of_its_input():
    x = _images(2000, seed=1)
    out = augment_batch(x, torch.Generator().manual_seed(2), flip=True)
    options, hits = _matches(x, out)
    assert (hits.sum(0) == 1).all(), "each output is exactly one padded crop (mirrored or not) of its input"
    assert hits.any(1).all(), "all 81 shifts, mirrored and not, occur in 2000 draws"
    # the hand check: a sample drawn with a shift of 0 on both axes, unflipped, is its image moved by PAD
    i = int(hits[options.index((0, 0, False))].nonzero()[0])
    shifted = torch.zeros_like(x[i])
    shifted[:, PAD:, PAD:] = x[i, :, :-PAD, :-PAD]
    assert torch.equal(out[i], shifted)


def test_the_draws_follow_the_generator():
    # augment_batch draws the (row, column) shifts, then the flips, from the generator it is given
    x = _images(16, seed=3)
    out = augment_batch(x, torch.Generator().manual_seed(11), flip=True)
    g = torch.Generator().manual_seed(11)
    shifts = torch.randint(0, 2 * PAD + 1, (2, 16, 1), generator=g)
    flipped = torch.rand(16, 1, generator=g) < 0.5
    for i in range(16):
        expected = _crop(x[i], int(shifts[0, i]), int(shifts[1, i]), bool(flipped[i]))
        assert torch.equal(out[i], expected)


def test_without_flip_no_sample_is_mirrored():
    x = _images(300, seed=4)
    out = augment_batch(x, torch.Generator().manual_seed(5), flip=False)
    _, hits = _matches(x, out, flips=(False,))
    assert (hits.sum(0) == 1).all()


def test_deterministic_for_a_seeded_generator():
    x = _images(32, seed=6)
    a = augment_batch(x, torch.Generator().manual_seed(9), flip=True)
    b = augment_batch(x, torch.Generator().manual_seed(9), flip=True)
    c = augment_batch(x, torch.Generator().manual_seed(10), flip=True)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(x, _images(32, seed=6)), "the input is left untouched"
