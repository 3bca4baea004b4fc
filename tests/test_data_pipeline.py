"""Transforms, ImageDataset, the P-K sampler, DataLoaders and the decoded-tensor path (tiny fake images)."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_jpeg
from pirid_lite.config import get_config
from pirid_lite.datasets.pipeline import (IMAGENET_MEAN, IMAGENET_STD, ImageDataset, PKSampler, UnreadableImageError,
                             build_transforms, load_image_tensor, make_test_loader, make_train_loader)
from pirid_lite.datasets import TestItem, TrainItem


@pytest.fixture
def train_items(tmp_path):
    """12 images: labels 0..3 with 4, 4, 3, 1 images; camera = label % 2."""
    labels = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 3]
    items = []
    for i, label in enumerate(labels):
        path = tmp_path / f"img{i}.jpg"
        write_jpeg(path, i + 1)
        items.append(TrainItem(str(path), label % 2, label))
    return items


def _reference_tensor(path) -> torch.Tensor:
    """Naive reference: PIL pixels as a (3, h, w) uint8 tensor."""
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return (x.float() / 255 - mean) / std


def test_eval_transform_is_resize_and_imagenet_normalisation(train_items):
    image = Image.open(train_items[0].path)
    out = build_transforms(8, 4, train=False)(image)                 # native size: resize is the identity
    torch.testing.assert_close(out, _normalise(_reference_tensor(train_items[0].path)))
    assert build_transforms(16, 8, train=False)(image).shape == (3, 16, 8)


def test_train_transform_augments_only_as_asked(train_items):
    image = Image.open(train_items[0].path)
    plain = build_transforms(8, 4, train=False)(image)
    off = build_transforms(8, 4, train=True, flip=0.0, pad=0, random_erasing=0.0)(image)
    torch.testing.assert_close(off, plain)
    flipped = build_transforms(8, 4, train=True, flip=1.0, pad=0, random_erasing=0.0)(image)
    torch.testing.assert_close(flipped, plain.flip(-1))
    torch.manual_seed(0)
    erased = torch.stack([build_transforms(8, 4, train=True, flip=0.0, pad=0, random_erasing=1.0)(image)
                          for _ in range(5)])
    assert ((erased == 0).all(dim=1).flatten(1).any(dim=1)).all()   # every sample has an erased patch
    assert build_transforms(8, 4, train=True, pad=2)(image).shape == (3, 8, 4)


def test_image_dataset_returns_target_camera_and_index(train_items, tmp_path):
    test_item = TestItem(train_items[5].path, pid=42, camid=3)
    dataset = ImageDataset([train_items[5], test_item], build_transforms(8, 4, train=False))
    image, label, camid, index = dataset[0]
    assert image.shape == (3, 8, 4) and (label, camid, index) == (train_items[5].label, train_items[5].camid, 0)
    assert dataset[1][1:] == (42, 3, 1)


def test_unreadable_images_raise_an_error_naming_the_file(train_items, tmp_path):
    truncated = tmp_path / "truncated.jpg"
    data = open(train_items[0].path, "rb").read()
    truncated.write_bytes(data[: len(data) // 2])
    not_image = tmp_path / "text.jpg"
    not_image.write_text("hello")
    for path in (truncated, not_image, tmp_path / "missing.jpg"):
        items = [TrainItem(str(path), 0, 0)]
        with pytest.raises(UnreadableImageError, match=path.name):
            ImageDataset(items, build_transforms(8, 4, train=False))[0]
        with pytest.raises(UnreadableImageError, match=path.name):
            load_image_tensor(items, 8, 4)


def _check_batches(batches: np.ndarray, labels: np.ndarray, p: int, k: int) -> None:
    for batch in batches:
        batch_labels = Counter(labels[batch].tolist())
        assert len(batch_labels) == p and set(batch_labels.values()) == {k}
        assert min(batch_labels) >= 0
        for label in batch_labels:                   # K distinct images when the label has >= K
            available = int((labels == label).sum())
            distinct = len(set(batch[labels[batch] == label].tolist()))
            assert distinct == k if available >= k else distinct <= available


def test_pk_sampler_invariants():
    labels = np.array([0] * 6 + [1] * 4 + [2] * 2 + [3] * 1 + [-1] * 5 + [4] * 9 + [5] * 3)
    sampler = PKSampler(labels, num_ids_per_batch=3, num_instances=4, seed=0, num_batches=40)
    batches = sampler.batches()
    assert batches.shape == (40, 12) and len(sampler) == 40 * 12
    assert list(sampler) == batches.reshape(-1).tolist()
    _check_batches(batches, labels, 3, 4)
    assert not np.isin(np.flatnonzero(labels < 0), batches).any()        # ignored labels never sampled
    assert set(labels[batches].ravel().tolist()) == {0, 1, 2, 3, 4, 5}    # small IDs still drawn (K repeats)


def test_pk_sampler_determinism_and_epochs():
    labels = torch.arange(40) % 10                                       # tensors are accepted too
    first = PKSampler(labels, 4, 2, seed=7).batches()
    assert first.shape == (40 // 8, 8)                                    # default: about one pass
    assert (PKSampler(labels, 4, 2, seed=7).batches() == first).all()
    assert not (PKSampler(labels, 4, 2, seed=8).batches() == first).all()
    sampler = PKSampler(labels, 4, 2, seed=7)
    sampler.set_epoch(1)
    second = sampler.batches()
    assert not (second == first).all()
    sampler.set_epoch(0)
    assert (sampler.batches() == first).all()


def test_pk_sampler_distinct_draw_is_uniform():
    """Each image of a label with 6 images is picked with probability K/6 (independent check)."""
    labels = np.array([0] * 6 + [1] * 6)
    batches = PKSampler(labels, 2, 3, seed=0, num_batches=3000).batches()
    frequency = np.bincount(batches.ravel(), minlength=12) / 3000
    np.testing.assert_allclose(frequency, 3 / 6, atol=0.04)


def test_pk_sampler_needs_p_valid_labels():
    with pytest.raises(ValueError, match="P=3"):
        PKSampler([0, 0, 1, -1, -1], num_ids_per_batch=3, num_instances=2)


@pytest.mark.parametrize("workers", [0, 2])
def test_train_loader_yields_pk_batches(train_items, workers):
    cfg = get_config("test", height=8, width=4, pad=1, num_ids_per_batch=2, num_instances=2, num_workers=workers)
    labels = np.array([item.label for item in train_items])
    loader = make_train_loader(train_items, labels, cfg, seed=3, epoch_batches=2)
    batches = list(loader)
    assert len(batches) == 2
    for images, batch_labels, camids, index in batches:
        assert images.shape == (4, 3, 8, 4) and images.dtype == torch.float32
        assert sorted(Counter(batch_labels.tolist()).values()) == [2, 2]
        assert (batch_labels == torch.as_tensor(labels)[index]).all()
        assert (camids == batch_labels % 2).all()
    expected = PKSampler(labels, 2, 2, seed=3, num_batches=2).batches()
    assert [b[3].tolist() for b in batches] == expected.tolist()  # same indices whatever the worker count


def test_train_loader_rejects_mismatched_labels(train_items):
    with pytest.raises(ValueError, match="labels"):
        make_train_loader(train_items, [0, 1], get_config("test"))


def test_test_loader_keeps_order(train_items):
    items = [TestItem(item.path, pid=100 + i, camid=item.camid) for i, item in enumerate(train_items)]
    cfg = get_config("test", height=8, width=4, eval_batch_size=5)
    batches = list(make_test_loader(items, cfg))
    assert [len(b[3]) for b in batches] == [5, 5, 2]
    assert torch.cat([b[3] for b in batches]).tolist() == list(range(len(items)))
    assert torch.cat([b[1] for b in batches]).tolist() == [100 + i for i in range(len(items))]
    first = batches[0][0][0]
    torch.testing.assert_close(first, _normalise(_reference_tensor(items[0].path)))


def test_load_image_tensor_decodes_and_resizes(train_items, tmp_path):
    big = tmp_path / "big.jpg"
    Image.new("RGB", (8, 16), (10, 200, 30)).save(big)          # another size: resized in its own group
    items = list(train_items) + [TrainItem(str(big), 0, 0)]
    tensor = load_image_tensor(items, 8, 4)
    assert tensor.shape == (len(items), 3, 8, 4) and tensor.dtype == torch.uint8
    for i, item in enumerate(train_items):
        assert torch.equal(tensor[i], _reference_tensor(item.path))   # native size: exact pixels
    eval_transform = build_transforms(8, 4, train=False)
    torch.testing.assert_close(_normalise(tensor[-1]), eval_transform(Image.open(big)))  # same as DataLoader
    assert torch.equal(load_image_tensor(items, 8, 4, chunk=5), tensor)
