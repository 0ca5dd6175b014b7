"""CutMix oracle: grid-aligned boxes, area share r, pixels from the right constituent (METHOD.md, Operators)."""

from __future__ import annotations

import pytest
import torch

from mixtrain_trainer import mixing

LEFT, RIGHT, TOP, BOTTOM = 0, 1, 2, 3


def _pair(p: int, side: int):
    """Two batches with distinct pixel values everywhere (x1 > 0 > x2), so a swap cannot go unnoticed."""
    x1 = torch.arange(1, p * 3 * side * side + 1, dtype=torch.float32).view(p, 3, side, side)
    return x1, -x1


def _expected(x1, x2, which: int, cells_kept: int, stride: int):
    """Hand-built composite: x2 with the chosen half (``cells_kept`` cells wide or tall) taken from x1."""
    out = x2.clone()
    side = x1.shape[-1]
    k = cells_kept * stride
    if which == LEFT:
        out[..., :, :k] = x1[..., :, :k]
    elif which == RIGHT:
        out[..., :, side - k :] = x1[..., :, side - k :]
    elif which == TOP:
        out[..., :k, :] = x1[..., :k, :]
    else:
        out[..., side - k :, :] = x1[..., side - k :, :]
    return out


def _box(pixel_mask: torch.Tensor):
    """(top, left, bottom, right) of the True pixels, bottom/right exclusive, and whether they fill it."""
    rows = torch.nonzero(pixel_mask.any(1)).squeeze(1)
    cols = torch.nonzero(pixel_mask.any(0)).squeeze(1)
    top, bottom, left, right = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    filled = bool(pixel_mask[top:bottom, left:right].all()) and int(pixel_mask.sum()) == (bottom - top) * (
        right - left
    )
    return (top, left, bottom, right), filled


@pytest.mark.parametrize("which", [LEFT, RIGHT, TOP, BOTTOM])
def test_half_box_on_even_grid_matches_hand_built_composite(which):
    stride, grid = 4, (4, 4)  # resnet8: total stride 4; 16x16 images
    x1, x2 = _pair(2, 16)
    mask = mixing.half_masks_for(torch.tensor([which, which]), grid)
    assert mask.shape == (2, 4, 4) and mask.dtype == torch.bool
    out = mixing.cutmix(x1, x2, mask, stride)
    assert torch.equal(out, _expected(x1, x2, which, 2, stride))
    assert torch.equal(mixing.mask_ratio(mask), torch.tensor([0.5, 0.5]))


@pytest.mark.parametrize("which", [LEFT, RIGHT, TOP, BOTTOM])
def test_box_corners_are_multiples_of_the_stride_and_area_is_r(which):
    stride, grid = 8, (4, 4)  # resnet18: total stride 8; 32x32 images
    mask = mixing.half_masks_for(torch.tensor([which]), grid)
    pixel = mixing.upsample_mask(mask, stride)[0, 0]
    assert pixel.shape == (32, 32)
    (top, left, bottom, right), filled = _box(pixel)
    assert filled, "constituent 1's pixels must form one rectangle"
    assert all(c % stride == 0 for c in (top, left, bottom, right))
    r = float(mixing.mask_ratio(mask)[0])
    assert (bottom - top) * (right - left) / (32 * 32) == r == 0.5
    # every feature-map cell belongs to exactly one constituent: the pixels of a cell are all x1 or all x2
    cells = pixel.view(4, stride, 4, stride).permute(0, 2, 1, 3).reshape(4, 4, -1)
    assert (cells.all(-1) | ~cells.any(-1)).all()
    assert torch.equal(cells.all(-1), mask[0])


@pytest.mark.parametrize("which", [LEFT, RIGHT, TOP, BOTTOM])
def test_odd_grid_rounds_the_half_down(which):
    stride, grid = 4, (7, 7)  # 28x28 images: a 7x7 grid; the half is 3 of 7 rows or columns
    x1, x2 = _pair(1, 28)
    mask = mixing.half_masks_for(torch.tensor([which]), grid)
    assert int(mask.sum()) == 21
    assert float(mixing.mask_ratio(mask)[0]) == pytest.approx(21 / 49, abs=1e-7)
    out = mixing.cutmix(x1, x2, mask, stride)
    assert torch.equal(out, _expected(x1, x2, which, 3, stride))
    (top, left, bottom, right), filled = _box(mixing.upsample_mask(mask, stride)[0, 0])
    assert filled and all(c % stride == 0 for c in (top, left, bottom, right))


def test_half_masks_for_a_batch_of_choices_is_per_composite():
    x1, x2 = _pair(4, 16)
    which = torch.tensor([LEFT, RIGHT, TOP, BOTTOM])
    out = mixing.cutmix(x1, x2, mixing.half_masks_for(which, (4, 4)), 4)
    for i, w in enumerate(which.tolist()):
        assert torch.equal(out[i], _expected(x1[i : i + 1], x2[i : i + 1], w, 2, 4)[0])


def test_random_half_masks_are_halves_seeded_and_cover_all_four():
    grid = (4, 4)
    masks = mixing.half_grid_masks(200, grid, torch.Generator().manual_seed(3))
    halves = mixing.half_masks_for(torch.arange(4), grid)  # (4, h, w)
    match = (masks.unsqueeze(1) == halves.unsqueeze(0)).flatten(2).all(-1)  # (200, 4)
    assert (match.sum(1) == 1).all(), "every random box is exactly one of the four halves"
    assert (match.sum(0) > 0).all(), "all four halves occur"
    assert torch.equal(masks, mixing.half_grid_masks(200, grid, torch.Generator().manual_seed(3)))
    assert not torch.equal(masks, mixing.half_grid_masks(200, grid, torch.Generator().manual_seed(4)))
    assert torch.equal(mixing.mask_ratio(masks), torch.full((200,), 0.5))


def test_cutmix_refuses_a_grid_that_does_not_tile_the_image():
    x1, x2 = _pair(1, 16)
    with pytest.raises(ValueError, match="does not tile"):
        mixing.cutmix(x1, x2, mixing.half_masks_for(torch.tensor([LEFT]), (3, 3)), 4)
