"""The batched in-memory augmentation against torchvision's per-image semantics."""
from __future__ import annotations

import torch

from pirid_lite.datasets.tensor_pipeline import IMAGENET_MEAN, IMAGENET_STD, BatchAugment


def _normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN)[None, :, None, None]
    std = torch.tensor(IMAGENET_STD)[None, :, None, None]
    return (x.float() / 255 - mean) / std


def test_no_augmentation_is_plain_normalisation():
    images = torch.randint(0, 256, (4, 3, 8, 6), dtype=torch.uint8)
    out = BatchAugment(flip=0.0, pad=0, random_erasing=0.0)(images)
    torch.testing.assert_close(out, _normalise(images))


def test_flip_always_mirrors_every_image():
    images = torch.randint(0, 256, (3, 3, 8, 6), dtype=torch.uint8)
    out = BatchAugment(flip=1.0, pad=0, random_erasing=0.0)(images)
    torch.testing.assert_close(out, _normalise(images.flip(-1)))


def test_pad_and_crop_is_a_zero_filled_shift_per_image():
    torch.manual_seed(0)
    images = torch.randint(1, 256, (16, 3, 8, 6), dtype=torch.uint8)
    pad = 2
    out = BatchAugment(flip=0.0, pad=pad, random_erasing=0.0)(images)
    zero_pixel = _normalise(torch.zeros(1, 3, 1, 1, dtype=torch.uint8))[0, :, 0, 0]
    for i in range(len(images)):  # naive reference: try every shift, exactly one must match
        padded = torch.nn.functional.pad(images[i:i + 1].float(), (pad,) * 4)
        candidates = [_normalise(padded[:, :, y:y + 8, x:x + 6].to(torch.uint8))
                      for y in range(2 * pad + 1) for x in range(2 * pad + 1)]
        assert sum(torch.allclose(out[i:i + 1], c) for c in candidates) >= 1
    assert (out == zero_pixel[None, :, None, None]).all(dim=1).any()  # some border got zero fill


def test_random_erasing_zeroes_one_rectangle():
    torch.manual_seed(1)
    images = torch.full((32, 3, 16, 8), 200, dtype=torch.uint8)
    out = BatchAugment(flip=0.0, pad=0, random_erasing=1.0)(images)
    erased = (out == 0).all(dim=1)  # (B, H, W)
    for mask in erased:
        rows, cols = mask.any(dim=1).nonzero().flatten(), mask.any(dim=0).nonzero().flatten()
        assert len(rows) > 0
        box = mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.all()  # a filled rectangle, nothing outside it
        assert mask.sum() == box.numel()
        area = mask.float().mean().item()
        assert 0.0 < area <= 0.5
