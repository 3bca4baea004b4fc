"""In-memory input pipeline: the training set decoded once to a uint8 tensor on the training device and
augmented there in batches (the GPU fast path of the ``paper`` profile; also valid on CPU).

It draws the same kind of batches as :func:`pirid_lite.datasets.pipeline.make_train_loader` (P-K sampling, flip,
pad-and-crop, random erasing, ImageNet normalisation) without JPEG decoding or per-image Python work in
the step, so the GPU is never waiting for a DataLoader.
"""
from __future__ import annotations

import math
from typing import Iterator

import torch
from torchvision.transforms import v2

from . import pipeline as data_lib
from .pipeline import IMAGENET_MEAN, IMAGENET_STD


class BatchAugment:
    """Vectorised train-time augmentation of a uint8 batch ``(B, 3, H, W)`` (ReID convention, §3.1 size).

    Random erasing follows torchvision's ``RandomErasing`` sampling (area 2–33 %, aspect 0.3–3.3, value 0
    after normalisation) but clamps the box into the image instead of re-drawing up to 10 times.
    """

    def __init__(self, flip: float = 0.5, pad: int = 10, random_erasing: float = 0.5,
                 erase_scale: tuple[float, float] = (0.02, 0.33), erase_ratio: tuple[float, float] = (0.3, 3.3)):
        self.flip, self.pad, self.erasing = flip, pad, random_erasing
        self.erase_scale, self.erase_log_ratio = erase_scale, (math.log(erase_ratio[0]), math.log(erase_ratio[1]))

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        b, _, h, w = images.shape
        dev = images.device

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, device=dev, generator=generator)

        x = images.float().div_(255.0)
        flip = rand(b) < self.flip
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if self.pad:
            x = self._pad_and_crop(x, rand)
        mean = torch.tensor(IMAGENET_MEAN, device=dev)[None, :, None, None]
        std = torch.tensor(IMAGENET_STD, device=dev)[None, :, None, None]
        x = (x - mean) / std
        if self.erasing:
            x = x.masked_fill(self._erase_mask(b, h, w, rand), 0.0)
        return x

    def _pad_and_crop(self, x: torch.Tensor, rand) -> torch.Tensor:
        """Zero-pad by ``pad`` and crop back at a random offset = a random shift with zero fill."""
        b, c, h, w = x.shape
        p = self.pad
        padded = torch.nn.functional.pad(x, (p, p, p, p))
        oy = (rand(b) * (2 * p + 1)).long()
        ox = (rand(b) * (2 * p + 1)).long()
        rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None].expand(b, c, h, w)
        cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :].expand(b, c, h, w)
        flat = padded.flatten(2)
        return flat.gather(2, (rows * (w + 2 * p) + cols).flatten(2)).view(b, c, h, w)

    def _erase_mask(self, b: int, h: int, w: int, rand) -> torch.Tensor:
        area = h * w * (self.erase_scale[0] + rand(b) * (self.erase_scale[1] - self.erase_scale[0]))
        log_lo, log_hi = self.erase_log_ratio
        ratio = torch.exp(log_lo + rand(b) * (log_hi - log_lo))
        eh = torch.sqrt(area * ratio).round().clamp(1, h).long()
        ew = torch.sqrt(area / ratio).round().clamp(1, w).long()
        top = (rand(b) * (h - eh + 1)).long()
        left = (rand(b) * (w - ew + 1)).long()
        ys = torch.arange(h, device=top.device)[None, :]
        xs = torch.arange(w, device=top.device)[None, :]
        in_rows = (ys >= top[:, None]) & (ys < (top + eh)[:, None])
        in_cols = (xs >= left[:, None]) & (xs < (left + ew)[:, None])
        apply = rand(b) < self.erasing
        return (in_rows[:, :, None] & in_cols[:, None, :] & apply[:, None, None])[:, None]


class TensorTrainLoader:
    """Yields ``(images, labels, camids, index)`` batches like the DataLoader, from a device-resident
    uint8 tensor of the whole training set and a :class:`pirid_lite.datasets.pipeline.PKSampler` over ``sample_by``."""

    def __init__(self, images_uint8: torch.Tensor, items, sample_by, cfg, seed: int, epoch_batches: int,
                 rank: int = 0, world_size: int = 1):
        self.images = images_uint8
        self.camids = torch.tensor([item.camid for item in items], device=images_uint8.device)
        self.labels = torch.tensor([item.label for item in items], device=images_uint8.device)
        self.sampler = data_lib.PKSampler(sample_by, cfg.num_ids_per_batch, cfg.num_instances, seed=seed,
                                          num_batches=epoch_batches)
        self.augment = BatchAugment(cfg.flip, cfg.pad, cfg.random_erasing)
        self.generator = torch.Generator(device=images_uint8.device)
        self.generator.manual_seed(data_lib.augmentation_seed(seed, rank))
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return self.sampler.num_batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        for batch in torch.as_tensor(self.sampler.rank_batches(self.rank, self.world_size), device=self.images.device):
            yield self.augment(self.images[batch], self.generator), self.labels[batch], self.camids[batch], batch


class TensorTestLoader:
    """Eval-time batches ``(images, targets, camids, index)`` of a decoded uint8 set ``(n, 3, H, W)``, in order:
    the pixels of :func:`pirid_lite.datasets.pipeline.make_test_loader` (resize, then ImageNet normalisation) without
    decoding the JPEGs again — what stage 2's fresh-centroid pass reads every epoch."""

    def __init__(self, images_uint8: torch.Tensor, items, batch_size: int):
        self.images, self.batch_size = images_uint8, batch_size
        self.targets = torch.tensor([data_lib.item_target(item) for item in items])
        self.camids = torch.tensor([item.camid for item in items])
        if len(self.targets) != len(images_uint8):
            raise ValueError(f"TensorTestLoader: {len(images_uint8)} images for {len(self.targets)} items")

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self.images), self.batch_size):
            index = torch.arange(start, min(start + self.batch_size, len(self.images)))
            # torchvision's own functions, so the pixels equal the DataLoader's bit for bit
            x = v2.functional.to_dtype(self.images[start:start + self.batch_size], torch.float32, scale=True)
            yield v2.functional.normalize(x, IMAGENET_MEAN, IMAGENET_STD), self.targets[index], self.camids[index], index
