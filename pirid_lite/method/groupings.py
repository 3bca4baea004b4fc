"""How stage 2 (§2.3) groups the ID centroids into prototypes: one registered function per grouping.

A grouping takes the (N, d) bank that §2.3 clusters, the camera of each row, the config, the dataset and —
for a grouping that reads images rather than ID centroids (``needs_images``) — the training images' features
(:class:`ImageFeatures`), and returns :class:`pirid_lite.method.prototypes.Prototypes`. :data:`GROUPINGS` holds them by name; a variant
(:mod:`pirid_lite.variants`) holds the :class:`Grouping` it uses, and the method's own variants hold
:data:`ASSOCIATION`, which runs the truth-free grouping that ``PiridConfig.association`` names. Adding a
grouping is one function with ``@grouping(...)`` here; ``--set association=<name>`` then selects it.

:func:`reliability` asks, per prototype and without the truth, whether stage-2 batches may be drawn by it (its
members are mutual cross-camera nearest neighbours, or the grouping forms it unchanged at a stricter and a looser
threshold, ``threshold_field``; :mod:`pirid_lite.method.reliability`): what the ``reliable-prototype`` sampling
trusts.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from .association import camera_disjoint_merges, min_image_distance
from .prototypes import (Prototypes, build_prototypes, form_prototypes, grouping_distance, linkage_prototypes,
                         pair_distance, prototypes_from_groups)
from .reliability import mutual_nearest_prototypes, reliable_prototypes

if TYPE_CHECKING:
    from ..config import PiridConfig

GroupingFn = Callable[..., Prototypes]  # (bank, cameras, cfg, dataset, images) -> Prototypes


@dataclass(frozen=True)
class ImageFeatures:
    """The training images as an image-level grouping reads them: eval-mode f(x), one row per image (L2-normalised),
    and the memory row (intra-camera ID) of each."""

    features: torch.Tensor
    ids: torch.Tensor


@dataclass(frozen=True)
class Grouping:
    name: str
    description: str
    group: GroupingFn
    reads_truth: bool = False          # trains on the hidden cross-camera identities (diagnostic variants only)
    needs_images: bool = False         # reads ImageFeatures, not only the ID centroids
    threshold_field: str | None = None  # the PiridConfig field its threshold scales with (reliability)

    def __call__(self, bank: torch.Tensor, cameras: torch.Tensor, cfg: "PiridConfig", dataset,
                 images: ImageFeatures | None = None) -> Prototypes:
        if self.needs_images and images is None:
            raise ValueError(f"grouping {self.name!r} reads the training images' features: pass images=ImageFeatures(...)")
        return self.group(bank, cameras, cfg, dataset, images)


GROUPINGS: dict[str, Grouping] = {}


def grouping(name: str, description: str, reads_truth: bool = False, needs_images: bool = False,
             threshold_field: str | None = None) -> Callable[[GroupingFn], GroupingFn]:
    """Register ``fn`` as the grouping ``name`` in :data:`GROUPINGS`."""
    def register(fn: GroupingFn) -> GroupingFn:
        if name in GROUPINGS:
            raise ValueError(f"grouping {name!r} is registered twice")
        GROUPINGS[name] = Grouping(name, description, fn, reads_truth, needs_images, threshold_field)
        return fn
    return register


@grouping("dbscan", "§2.3 as the paper words it: DBSCAN at eps on the centroids (cluster_metric, "
                    "camera_centring and cannot_link as set)", threshold_field="dbscan_eps")
def dbscan(bank, cameras, cfg, dataset, images=None) -> Prototypes:
    return form_prototypes(bank, cameras, eps=cfg.dbscan_eps, min_samples=cfg.dbscan_min_samples,
                           metric=cfg.cluster_metric, cannot_link=cfg.cannot_link, k1=cfg.jaccard_k1,
                           k2=cfg.jaccard_k2, camera_centring=cfg.camera_centring)


@grouping("camera-linkage", "complete linkage that never groups two IDs of one camera, at linkage_scale × the "
                            "median cross-camera nearest-neighbour distance (beyond the paper)",
          threshold_field="linkage_scale")
def camera_linkage(bank, cameras, cfg, dataset, images=None) -> Prototypes:
    return linkage_prototypes(bank, cameras, scale=cfg.linkage_scale, metric=cfg.linkage_metric,
                              k1=cfg.jaccard_k1, k2=cfg.jaccard_k2, camera_centring=cfg.camera_centring)


@grouping("min-jaccard", "the peers' association (CMT / CCAFL): IDs joined in ascending order of the smallest "
                         "k-reciprocal Jaccard distance between their images, below min_jaccard_eps, only "
                         "while the two groups' camera sets are disjoint (beyond the paper)",
          needs_images=True, threshold_field="min_jaccard_eps")
def min_jaccard(bank, cameras, cfg, dataset, images: ImageFeatures) -> Prototypes:
    image_dist = pair_distance(images.features, "jaccard", cfg.jaccard_k1, cfg.jaccard_k2)
    id_dist = min_image_distance(image_dist, images.ids, bank.shape[0]).double().cpu().numpy()
    labels = camera_disjoint_merges(id_dist, torch.as_tensor(cameras).cpu().numpy(), cfg.min_jaccard_eps)
    return dataclasses.replace(build_prototypes(bank, labels, "image-jaccard+camera-disjoint"),
                               threshold=cfg.min_jaccard_eps)


@grouping("truth", "the hidden true cross-camera identities (oracle, diagnostic)", reads_truth=True)
def truth(bank, cameras, cfg, dataset, images=None) -> Prototypes:
    identities = dataset.hidden_truth.reveal_per_label(reason=f"{cfg.variant} diagnostic variant")
    return prototypes_from_groups(bank, torch.as_tensor(identities, device=bank.device))


@grouping("identity", "every memory row its own prototype (supervised: the rows are true identities)")
def identity(bank, cameras, cfg, dataset, images=None) -> Prototypes:
    return prototypes_from_groups(bank, torch.arange(bank.shape[0], device=bank.device), keep_singletons=True)


def associations() -> tuple[str, ...]:
    """The names ``PiridConfig.association`` may take: every registered grouping that reads no truth and
    groups (``identity`` keeps every row apart), wherever in this module or beyond it was registered."""
    return tuple(name for name, g in GROUPINGS.items() if not g.reads_truth and name != "identity")


def _configured(bank, cameras, cfg, dataset, images=None) -> Prototypes:
    return GROUPINGS[cfg.association](bank, cameras, cfg, dataset, images)


ASSOCIATION = Grouping("association", "the truth-free grouping named by PiridConfig.association", _configured)


def resolved(grouping_: Grouping, cfg: "PiridConfig") -> Grouping:
    """The registered grouping that runs: the one ``cfg.association`` names for :data:`ASSOCIATION`."""
    return GROUPINGS[cfg.association] if grouping_ is ASSOCIATION else grouping_


def associate(bank: torch.Tensor, label_camera, cfg: "PiridConfig", images: ImageFeatures | None = None) -> Prototypes:
    """What the method's stage 2 forms from ``bank`` under ``cfg``: the truth-free grouping that
    ``cfg.association`` names, with every setting read from ``cfg`` — the one call for a notebook that
    asks "what did this run's §2.3 make of these centroids" (``images`` for an image-level grouping)."""
    return GROUPINGS[cfg.association](bank, torch.as_tensor(label_camera, device=bank.device), cfg, None, images)


def reliability(grouping_: Grouping, prototypes: Prototypes, bank: torch.Tensor, cameras: torch.Tensor,
                cfg: "PiridConfig", dataset, images: ImageFeatures | None = None) -> np.ndarray:
    """(Y,) bool, truth-free: the prototypes stage-2 batches may be drawn by (``cfg.reliability``,
    :mod:`pirid_lite.method.reliability`): ``"mutual-nn"`` — their members are each other's nearest ID across
    cameras on the distance the linkage groups on (``linkage_metric``, ``camera_centring``); ``"threshold"`` —
    ``grouping_`` forms them unchanged at ``(1 ∓ cfg.reliability_margin)`` × its threshold. A grouping without
    a threshold (the oracle's truth, supervised's identities) trusts all of its prototypes."""
    grouping_ = resolved(grouping_, cfg)
    if grouping_.threshold_field is None:
        return np.ones(prototypes.num_prototypes, dtype=bool)
    if cfg.reliability == "mutual-nn":
        dist, cams = grouping_distance(bank, cameras, cfg.linkage_metric, cfg.jaccard_k1, cfg.jaccard_k2,
                                       cfg.camera_centring, "reliability")
        return mutual_nearest_prototypes(prototypes.assignment, dist, cams)
    value = getattr(cfg, grouping_.threshold_field)
    stricter, looser = (grouping_(bank, cameras, cfg.replace(**{grouping_.threshold_field: value * factor}),
                                  dataset, images)
                        for factor in (1.0 - cfg.reliability_margin, 1.0 + cfg.reliability_margin))
    return reliable_prototypes(prototypes.assignment, stricter.assignment, looser.assignment)
