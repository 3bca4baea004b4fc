"""§2.3 at the start of a stage-2 epoch: the prototypes this epoch trains on.

:func:`prototypes_for_epoch` is the one place that decides them, from the model, the data, the memory K and
the config. The trainer, the notebooks and the calibration all call it (or its parts below), so there is
one answer to "what did DBSCAN cluster, with which settings".

What is clustered (``cfg.prototype_source``): the rows of K (``"memory"``, the paper's words) or the per-ID
means of features extracted afresh in eval mode (``"fresh"``, one batched pass over the training images).
How IDs are grouped follows the variant (:mod:`pirid_lite.variants`): DBSCAN, the hidden truth (oracle) or
every row on its own (supervised).
"""
from __future__ import annotations

import dataclasses

import torch

from . import data as data_lib
from .config import PiridConfig
from .distributed import SINGLE_PROCESS, DistributedContext
from .evaluate import extract_features
from .memory import IntraCameraMemory, id_centroids
from .prototypes import Prototypes
from .tensor_pipeline import TensorTestLoader
from .variants import LabelSpace, policy


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


def fresh_centroids(features: torch.Tensor, labels: LabelSpace) -> torch.Tensor:
    """(N, d) per-ID means of the training features (:func:`train_features`): ``prototype_source="fresh"``."""
    return id_centroids(features, torch.as_tensor(labels.image_labels, device=features.device), labels.num_ids)


def clustering_input(model: torch.nn.Module, dataset, memory: IntraCameraMemory, cfg: PiridConfig,
                     labels: LabelSpace, device: torch.device, extract=train_features) -> torch.Tensor:
    """What §2.3 clusters this epoch: K's rows or the fresh per-ID centroids (``cfg.prototype_source``).
    ``extract`` computes the training features (a distributed run passes a sharded one)."""
    if cfg.prototype_source == "fresh":
        return fresh_centroids(extract(model, dataset, cfg, device), labels)
    return memory.features.detach()


def group_ids(bank: torch.Tensor, cfg: PiridConfig, labels: LabelSpace, dataset) -> Prototypes:
    """The variant's grouping (:mod:`pirid_lite.groupings`) of the N rows of ``bank`` into prototypes (K'
    starts at their centroids)."""
    grouping = policy(cfg.variant).grouping
    if grouping is None:
        raise ValueError(f"variant {cfg.variant!r} has no stage 2, so it forms no prototypes")
    return grouping(bank, torch.as_tensor(labels.id_group, device=bank.device), cfg, dataset)


def prototypes_for_epoch(model: torch.nn.Module, dataset, memory: IntraCameraMemory, cfg: PiridConfig,
                         labels: LabelSpace, device: torch.device, ctx: DistributedContext = SINGLE_PROCESS,
                         images: torch.Tensor | None = None) -> Prototypes:
    """§2.3: the prototypes of this stage-2 epoch (``assignment`` = S', ``centroids`` = K' init).

    ``images``: the decoded training set of the in-memory pipeline (saves decoding it every epoch). With
    several processes the extraction is sharded over the ranks and gathered, the grouping (DBSCAN) runs on
    rank 0 and its result is broadcast."""
    bank = clustering_input(model, dataset, memory, cfg, labels, device, sharded_train_features(ctx, images))
    if ctx.world_size == 1:
        return group_ids(bank, cfg, labels, dataset)
    prototypes = group_ids(bank, cfg, labels, dataset) if ctx.is_main else None
    if prototypes is not None:  # pickled tensors keep their device: send them from the CPU
        prototypes = dataclasses.replace(prototypes, assignment=prototypes.assignment.cpu(),
                                         centroids=prototypes.centroids.cpu())
    return ctx.broadcast(prototypes)


def sharded_train_features(ctx: DistributedContext, images: torch.Tensor | None = None):
    """:func:`train_features` (from ``images`` when given) split over the ranks and gathered."""
    def extract(model, dataset, cfg, device):
        if ctx.world_size == 1:
            return train_features(model, dataset, cfg, device, images=images)
        mine = train_features(model, dataset, cfg, device, ctx.shard(len(dataset.train)), images)
        return ctx.gather_uneven(mine)
    return extract
