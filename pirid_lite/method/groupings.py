"""How stage 2 (§2.3) groups the ID centroids into prototypes: one registered function per grouping.

A grouping takes the (N, d) bank that §2.3 clusters, the camera of each row, the config and the dataset,
and returns :class:`pirid_lite.method.prototypes.Prototypes`. :data:`GROUPINGS` holds them by name; a variant
(:mod:`pirid_lite.variants`) holds the :class:`Grouping` it uses, and the method's own variants hold
:data:`ASSOCIATION`, which runs the truth-free grouping that ``PiridConfig.association`` names. Adding a
grouping is one function with ``@grouping(...)`` here; ``--set association=<name>`` then selects it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

from .prototypes import Prototypes, form_prototypes, linkage_prototypes, prototypes_from_groups

if TYPE_CHECKING:
    from ..config import PiridConfig

GroupingFn = Callable[[torch.Tensor, torch.Tensor, "PiridConfig", object], Prototypes]


@dataclass(frozen=True)
class Grouping:
    name: str
    description: str
    group: GroupingFn
    reads_truth: bool = False   # trains on the hidden cross-camera identities (diagnostic variants only)

    def __call__(self, bank: torch.Tensor, cameras: torch.Tensor, cfg: "PiridConfig", dataset) -> Prototypes:
        return self.group(bank, cameras, cfg, dataset)


GROUPINGS: dict[str, Grouping] = {}


def grouping(name: str, description: str, reads_truth: bool = False) -> Callable[[GroupingFn], GroupingFn]:
    """Register ``fn`` as the grouping ``name`` in :data:`GROUPINGS`."""
    def register(fn: GroupingFn) -> GroupingFn:
        if name in GROUPINGS:
            raise ValueError(f"grouping {name!r} is registered twice")
        GROUPINGS[name] = Grouping(name, description, fn, reads_truth)
        return fn
    return register


@grouping("dbscan", "§2.3 as the paper words it: DBSCAN at eps on the centroids (cluster_metric, "
                    "camera_centring and cannot_link as set)")
def dbscan(bank, cameras, cfg, dataset) -> Prototypes:
    return form_prototypes(bank, cameras, eps=cfg.dbscan_eps, min_samples=cfg.dbscan_min_samples,
                           metric=cfg.cluster_metric, cannot_link=cfg.cannot_link, k1=cfg.jaccard_k1,
                           k2=cfg.jaccard_k2, camera_centring=cfg.camera_centring)


@grouping("camera-linkage", "complete linkage that never groups two IDs of one camera, at linkage_scale × the "
                            "median cross-camera nearest-neighbour distance (beyond the paper)")
def camera_linkage(bank, cameras, cfg, dataset) -> Prototypes:
    return linkage_prototypes(bank, cameras, scale=cfg.linkage_scale, metric=cfg.linkage_metric,
                              k1=cfg.jaccard_k1, k2=cfg.jaccard_k2, camera_centring=cfg.camera_centring)


@grouping("truth", "the hidden true cross-camera identities (oracle, diagnostic)", reads_truth=True)
def truth(bank, cameras, cfg, dataset) -> Prototypes:
    identities = dataset.hidden_truth.reveal_per_label(reason=f"{cfg.variant} diagnostic variant")
    return prototypes_from_groups(bank, torch.as_tensor(identities, device=bank.device))


@grouping("identity", "every memory row its own prototype (supervised: the rows are true identities)")
def identity(bank, cameras, cfg, dataset) -> Prototypes:
    return prototypes_from_groups(bank, torch.arange(bank.shape[0], device=bank.device), keep_singletons=True)


def associations() -> tuple[str, ...]:
    """The names ``PiridConfig.association`` may take: every registered grouping that reads no truth and
    groups (``identity`` keeps every row apart), wherever in this module or beyond it was registered."""
    return tuple(name for name, g in GROUPINGS.items() if not g.reads_truth and name != "identity")


def _configured(bank, cameras, cfg, dataset) -> Prototypes:
    return GROUPINGS[cfg.association](bank, cameras, cfg, dataset)


ASSOCIATION = Grouping("association", "the truth-free grouping named by PiridConfig.association", _configured)


def associate(bank: torch.Tensor, label_camera, cfg: "PiridConfig") -> Prototypes:
    """What the method's stage 2 forms from ``bank`` under ``cfg``: the truth-free grouping that
    ``cfg.association`` names, with every setting read from ``cfg`` — the one call for a notebook that
    asks "what did this run's §2.3 make of these centroids"."""
    return GROUPINGS[cfg.association](bank, torch.as_tensor(label_camera, device=bank.device), cfg, None)
