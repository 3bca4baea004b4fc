"""Input pipeline: transforms (§3.1 image size + ReID augmentation), the P-K sampler (§3.1: 8 IDs × 4 images)
and DataLoaders; plus :func:`load_image_tensor` for the in-memory training path.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import v2
from tqdm import tqdm

from .base import TestItem, TrainItem
from ..errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
Item = TrainItem | TestItem


class UnreadableImageError(UserError, OSError):
    """An image file is missing, truncated or not an image (the message names the file)."""

    def __init__(self, message: str) -> None:
        # a DataLoader worker's error is re-raised as this type with the worker's whole traceback as the
        # message; its last line is the original "…UnreadableImageError: cannot read image <path>: …"
        last = message.strip().splitlines()[-1] if message.strip() else message
        super().__init__(last.split("UnreadableImageError: ", 1)[-1])


def read_image(path: str) -> Image.Image:
    """Decode an image fully (``.load()`` so truncation shows up here, not later) as RGB."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as error:
        raise UnreadableImageError(f"cannot read image {path}: {error}") from error


def _resize(height: int, width: int) -> v2.Resize:
    # one definition so the DataLoader and the in-memory path see identical pixels
    return v2.Resize((height, width), interpolation=v2.InterpolationMode.BILINEAR, antialias=True)


def build_transforms(height: int, width: int, train: bool, *, flip: float = 0.5, pad: int = 10,
                     random_erasing: float = 0.5) -> v2.Compose:
    """PIL image → normalised float tensor ``(3, height, width)``; ``train`` adds flip, pad-and-crop and
    random erasing (ReID convention; unstated in the paper)."""
    steps: list = [v2.ToImage(), _resize(height, width)]
    if train and flip > 0:
        steps.append(v2.RandomHorizontalFlip(flip))
    if train and pad > 0:
        steps += [v2.Pad(pad), v2.RandomCrop((height, width))]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if train and random_erasing > 0:
        steps.append(v2.RandomErasing(p=random_erasing, value=0))
    return v2.Compose(steps)


def item_target(item: Item) -> int:
    """The second element of a sample: the intra-camera label of a training item, the pid of a test item."""
    return item.label if isinstance(item, TrainItem) else item.pid


class ImageDataset(Dataset):
    """``items[i]`` → ``(image, label_or_pid, camid, i)``."""

    def __init__(self, items: Sequence[Item], transform=None) -> None:
        self.items = list(items)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        item = self.items[index]
        image = read_image(item.path)
        if self.transform is not None:
            image = self.transform(image)
        return image, item_target(item), item.camid, index


class PKSampler(Sampler[int]):
    """P-K sampling (§3.1): each batch holds ``num_ids_per_batch`` (P) distinct labels × ``num_instances``
    (K) images of each; a label with fewer than K images is sampled with replacement. Labels < 0 (e.g.
    prototype noise) are never sampled. Yields flat indices, ``num_batches`` × P × K per epoch (default:
    about one pass, ``len(labels) // (P*K)`` batches); ``set_epoch`` reshuffles deterministically."""

    def __init__(self, labels, num_ids_per_batch: int = 8, num_instances: int = 4, seed: int = 0,
                 num_batches: int | None = None) -> None:
        labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels, dtype=np.int64)
        valid = np.flatnonzero(labels >= 0)
        self.order = valid[np.argsort(labels[valid], kind="stable")]  # image indices grouped by label
        _, self.starts, self.counts = np.unique(labels[self.order], return_index=True, return_counts=True)
        if len(self.counts) < num_ids_per_batch:
            raise UserError(f"PKSampler needs at least P={num_ids_per_batch} distinct labels >= 0 "
                            f"(num_ids_per_batch), got {len(self.counts)}")
        self.p, self.k, self.seed, self.epoch = num_ids_per_batch, num_instances, seed, 0
        self.num_batches = num_batches if num_batches is not None else max(1, len(labels) // (self.p * self.k))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches * self.p * self.k

    def batches(self) -> np.ndarray:
        """Array ``(num_batches, P*K)`` of image indices for the current seed and epoch."""
        rng = np.random.default_rng([self.seed, self.epoch])
        num_labels = len(self.counts)
        chosen = np.stack([rng.choice(num_labels, self.p, replace=False) for _ in range(self.num_batches)])
        counts = self.counts[chosen].reshape(-1)                          # images of each chosen label
        offsets = np.where((counts >= self.k)[:, None], self._distinct_offsets(rng, counts),
                           rng.integers(0, counts[:, None], size=(len(counts), self.k)))  # else: replacement
        picks = self.order[self.starts[chosen].reshape(-1, 1) + offsets]
        return picks.reshape(self.num_batches, self.p * self.k)

    def _distinct_offsets(self, rng: np.random.Generator, counts: np.ndarray) -> np.ndarray:
        """K distinct uniform offsets in [0, count) per row (rows with count < K get garbage, unused).

        Slot i draws x in [0, count − i) and steps over the already chosen offsets in increasing order, so
        x lands on the x-th unchosen offset — a loop over the K slots, vectorised over all rows."""
        picks = np.zeros((len(counts), self.k), dtype=np.int64)
        for slot in range(self.k):
            x = rng.integers(0, np.maximum(counts - slot, 1))
            for chosen in np.sort(picks[:, :slot], axis=1).T:
                x += x >= chosen
            picks[:, slot] = x
        return picks

    def __iter__(self) -> Iterator[int]:
        return iter(self.batches().reshape(-1).tolist())

    def rank_batches(self, rank: int = 0, world_size: int = 1) -> np.ndarray:
        """Rank ``rank``'s part of every batch of one plan: its P / world_size labels × K images (columns
        of :meth:`batches`, which hold each label's K images side by side). Ranks' parts are disjoint."""
        if self.p % world_size:
            raise UserError(f"{world_size} processes cannot share a batch of P={self.p} identities "
                            f"(num_ids_per_batch must be a multiple of the number of processes)")
        width = self.p // world_size * self.k
        return self.batches()[:, rank * width:(rank + 1) * width]


class RankBatchSampler(Sampler[list[int]]):
    """The batches of a :class:`PKSampler` as lists, restricted to one rank's part (all of it for one
    process)."""

    def __init__(self, sampler: PKSampler, rank: int = 0, world_size: int = 1) -> None:
        self.sampler, self.rank, self.world_size = sampler, rank, world_size

    def __len__(self) -> int:
        return self.sampler.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.sampler.rank_batches(self.rank, self.world_size).tolist())


def _loader_options(cfg) -> dict:
    workers = int(cfg.num_workers)
    return dict(num_workers=workers, persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())


def make_train_loader(items: Sequence[Item], labels, cfg, seed: int = 0, epoch_batches: int | None = None,
                      rank: int = 0, world_size: int = 1) -> DataLoader:
    """Training DataLoader: batches of exactly P×K images sampled by ``labels`` (one per item; < 0 = skip);
    with several processes, this rank's P/world_size identities of each batch of the same plan."""
    if len(labels) != len(items):
        raise ValueError(f"make_train_loader: {len(labels)} labels for {len(items)} items")
    transform = build_transforms(cfg.height, cfg.width, True, flip=cfg.flip, pad=cfg.pad,
                                 random_erasing=cfg.random_erasing)
    sampler = PKSampler(labels, cfg.num_ids_per_batch, cfg.num_instances, seed=seed, num_batches=epoch_batches)
    generator = torch.Generator().manual_seed(augmentation_seed(seed, rank))  # the workers' augmentation RNGs
    return DataLoader(ImageDataset(items, transform), batch_sampler=RankBatchSampler(sampler, rank, world_size),
                      generator=generator, **_loader_options(cfg))


def augmentation_seed(seed: int, rank: int) -> int:
    """Rank 0 (and a single process) augments with ``seed``; other ranks with their own stream."""
    return seed + 1_000_003 * rank


def make_test_loader(items: Sequence[Item], cfg) -> DataLoader:
    """Evaluation DataLoader: resize + normalise only, in order, ``cfg.eval_batch_size`` per batch."""
    dataset = ImageDataset(items, build_transforms(cfg.height, cfg.width, False))
    return DataLoader(dataset, batch_size=cfg.eval_batch_size, shuffle=False, **_loader_options(cfg))


def load_image_tensor(items: Sequence[Item], height: int, width: int, chunk: int = 1024,
                      progress: bool | None = None) -> torch.Tensor:
    """All images decoded once and resized: uint8 ``(n, 3, height, width)`` (same pixels as the eval
    transform before normalisation). Decoding loops over files; resizing runs per chunk on stacked
    same-size images."""
    out = torch.empty((len(items), 3, height, width), dtype=torch.uint8)
    resize = _resize(height, width)
    bar = tqdm(total=len(items), desc="decoding images", unit="img",
               disable=not (progress if progress is not None else len(items) >= 2000))
    for start in range(0, len(items), chunk):
        decoded = [v2.functional.pil_to_tensor(read_image(item.path)) for item in items[start:start + chunk]]
        by_size: dict[tuple[int, ...], list[int]] = {}
        for offset, image in enumerate(decoded):
            by_size.setdefault(tuple(image.shape), []).append(offset)
        for offsets in by_size.values():
            out[[start + o for o in offsets]] = resize(torch.stack([decoded[o] for o in offsets]))
        bar.update(len(decoded))
    bar.close()
    return out
