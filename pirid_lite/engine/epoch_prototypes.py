"""§2.3 at the start of a stage-2 epoch: the prototypes this epoch trains on.

:func:`prototypes_for_epoch` is the one place that decides them, from the run's
:class:`pirid_lite.engine.epoch.EpochContext` (model, data, memory K, config). The trainer, the notebooks and
the calibration all call it or :func:`group_ids`, so there is one answer to "what was clustered, with which
settings".

What is clustered (``cfg.prototype_source``): the rows of K (``"memory"``, the paper's words) or the per-ID
means of features extracted afresh in eval mode (``"fresh"``, one batched pass over the training images).
How IDs are grouped is the variant's :class:`pirid_lite.method.groupings.Grouping` (the association that
``cfg.association`` names, the hidden truth for the oracle, or every row on its own for supervised).
"""
from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

import torch

from .. import logkeys
from ..config import PiridConfig
from ..datasets import pipeline as data_lib
from ..datasets.tensor_pipeline import TensorTestLoader
from ..distributed import SINGLE_PROCESS, DistributedContext
from ..evaluation.evaluate import extract_features
from ..method.groupings import ImageFeatures, reliability, resolved
from ..method.memory import id_centroids
from ..method.prototypes import Prototypes
from ..variants import LabelSpace, VariantPolicy, policy

if TYPE_CHECKING:
    from .epoch import EpochContext


def train_features(model: torch.nn.Module, dataset, cfg: PiridConfig, device: torch.device,
                   part: slice = slice(None), images: torch.Tensor | None = None) -> torch.Tensor:
    """Eval-mode, L2-normalised f(x) of the training images (all, or the slice ``part``), in order, on
    ``device``; read from ``images`` (the decoded set of the in-memory pipeline) when given, else decoded."""
    items = dataset.train[part]
    if images is not None:
        loader = TensorTestLoader(images[part], items, cfg.eval_batch_size)
    else:
        loader = data_lib.make_test_loader(items, cfg)
    features, _, _ = extract_features(model, loader, device, amp=cfg.amp)
    return features.to(device)


def sharded_train_features(model: torch.nn.Module, dataset, cfg: PiridConfig, device: torch.device,
                           ctx: DistributedContext = SINGLE_PROCESS, images: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`train_features` of every training image, split over the ranks of ``ctx`` and gathered."""
    if ctx.world_size == 1:
        return train_features(model, dataset, cfg, device, images=images)
    return ctx.gather_uneven(train_features(model, dataset, cfg, device, ctx.shard(len(dataset.train)), images))


def fresh_centroids(features: torch.Tensor, labels: LabelSpace) -> torch.Tensor:
    """(N, d) per-ID means of the training features (:func:`train_features`): ``prototype_source="fresh"``."""
    return id_centroids(features, torch.as_tensor(labels.image_labels, device=features.device), labels.num_ids)


def clustering_input(run: "EpochContext") -> tuple[torch.Tensor, ImageFeatures | None]:
    """What §2.3 clusters this epoch: K's rows or the fresh per-ID centroids (``cfg.prototype_source``), and
    the training images' features when the grouping reads images (one feature pass serves both)."""
    needs_images = resolved(run.variant.grouping, run.cfg).needs_images
    features = run.train_features() if run.cfg.prototype_source == "fresh" or needs_images else None
    bank = fresh_centroids(features, run.labels) if run.cfg.prototype_source == "fresh" else run.memory.features.detach()
    return bank, ImageFeatures(features, run.image_labels) if needs_images else None


def group_ids(bank: torch.Tensor, cfg: PiridConfig, labels: LabelSpace, dataset,
              variant: VariantPolicy | None = None, images: ImageFeatures | None = None) -> Prototypes:
    """The variant's grouping (:mod:`pirid_lite.method.groupings`) of the N rows of ``bank`` into
    prototypes (K' starts at their centroids); with ``cfg.stage2_sampling="reliable-prototype"`` also which
    of them are reliable (``Prototypes.reliable``). ``variant`` defaults to ``cfg.variant``'s policy; a
    notebook calls this with a run's config to see exactly what that run's stage 2 formed."""
    grouping = (variant or policy(cfg.variant)).grouping
    if grouping is None:
        raise ValueError(f"variant {cfg.variant!r} has no stage 2, so it forms no prototypes")
    cameras = torch.as_tensor(labels.id_group, device=bank.device)
    prototypes = grouping(bank, cameras, cfg, dataset, images)
    if cfg.stage2_sampling != "reliable-prototype":
        return prototypes
    return dataclasses.replace(prototypes, reliable=torch.as_tensor(
        reliability(grouping, prototypes, bank, cameras, cfg, dataset, images)))


def prototypes_for_epoch(run: "EpochContext", timings: dict | None = None) -> Prototypes:
    """§2.3: the prototypes of this stage-2 epoch (``assignment`` = S', ``centroids`` = K' init); ``timings``,
    if given, receives the wall seconds of the feature pass and of the grouping (log keys).

    With several processes the extraction is sharded over the ranks and gathered, the grouping runs on
    rank 0 and its result is broadcast."""
    timings = {} if timings is None else timings
    started = time.perf_counter()
    bank, images = clustering_input(run)
    timings[logkeys.FEATURE_PASS_SECONDS] = round(time.perf_counter() - started, 3)
    started = time.perf_counter()
    prototypes = group_ids(bank, run.cfg, run.labels, run.dataset, run.variant, images) if run.ctx.is_main else None
    timings[logkeys.GROUPING_SECONDS] = round(time.perf_counter() - started, 3)
    if run.ctx.world_size == 1:
        return prototypes
    if prototypes is not None:  # pickled tensors keep their device: send them from the CPU
        prototypes = dataclasses.replace(prototypes, assignment=prototypes.assignment.cpu(),
                                         centroids=prototypes.centroids.cpu(),
                                         reliable=None if prototypes.reliable is None else prototypes.reliable.cpu())
    return run.ctx.broadcast(prototypes)
