"""Which variant trains what (Table 2 and the two diagnostics), in one table.

A :class:`VariantPolicy` says three things about a variant:

* **label space** — what the memory bank's rows are: the intra-camera IDs with one softmax per camera
  (Eq. 2; every ICS variant) or the true identities with one softmax over all of them (``supervised``);
* **losses** — which terms of the loss recipe (:data:`pirid_lite.losses.LOSS_RECIPE`) it uses; ``None`` =
  every term, so a loss added to the recipe is on in the full method at once;
* **grouping** — how stage 2 (§2.3) groups the IDs into prototypes, a registered
  :class:`pirid_lite.groupings.Grouping`: ``ASSOCIATION`` (the method: the truth-free grouping that
  ``PiridConfig.association`` names), ``truth`` (oracle, hidden ground truth), ``identity`` (every row is
  its own prototype) or ``None`` (no stage 2).

Only the policies with ``reads_truth`` read the dataset's hidden cross-camera identities to train.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .groupings import ASSOCIATION, GROUPINGS, Grouping


@dataclass(frozen=True)
class VariantPolicy:
    name: str
    description: str
    label_space: str = "intra-camera"           # "intra-camera" | "true-identity"
    losses: tuple[str, ...] | None = None       # recipe terms used; None = all of them
    grouping: Grouping | None = ASSOCIATION     # None = stage 1 for every epoch

    @property
    def has_stage2(self) -> bool:
        return self.grouping is not None

    @property
    def shares_stage1(self) -> bool:
        """Stage 1 (L_intra on the intra-camera IDs) is the same run for every variant where this holds
        (pirid-1 trains that way throughout)."""
        return self.label_space == "intra-camera"

    @property
    def reads_truth(self) -> bool:
        """True when training (not only logging) reads the hidden cross-camera identities."""
        return self.label_space == "true-identity" or (self.grouping is not None and self.grouping.reads_truth)

    def uses(self, term: str) -> bool:
        return self.losses is None or term in self.losses


POLICIES: dict[str, VariantPolicy] = {p.name: p for p in (
    VariantPolicy("pirid", "the full method: L_intra, then + L_inter_ID + L_inter_triplet on the prototypes of §2.3"),
    VariantPolicy("pirid-1", "L_intra only, every epoch (Table 2)", losses=("intra",), grouping=None),
    VariantPolicy("pirid-2", "PIRID without L_inter_triplet (Table 2)", losses=("intra", "inter_id")),
    VariantPolicy("supervised", "true identities as IDs, one softmax, each identity its own prototype "
                                "(upper bound, diagnostic)", label_space="true-identity", grouping=GROUPINGS["identity"]),
    VariantPolicy("oracle-prototypes", "the true cross-camera grouping instead of the association (diagnostic)",
                  grouping=GROUPINGS["truth"]),
)}
VARIANTS = tuple(POLICIES)


def policy(variant: str) -> VariantPolicy:
    if variant not in POLICIES:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    return POLICIES[variant]


@dataclass
class LabelSpace:
    """What the memory bank's rows mean for a variant.

    ``image_labels[i]`` is the memory row of training image i, ``id_group[j]`` the softmax group of row j
    (its camera for ICS variants, one group for ``supervised``).
    """

    image_labels: np.ndarray
    id_group: np.ndarray

    @property
    def num_ids(self) -> int:
        return len(self.id_group)


def build_label_space(variant: str, dataset) -> LabelSpace:
    if policy(variant).label_space == "true-identity":
        true_ids = dataset.hidden_truth.reveal_per_image(reason=f"{variant} (diagnostic variant)")
        _, labels = np.unique(true_ids, return_inverse=True)
        return LabelSpace(labels.astype(np.int64), np.zeros(labels.max() + 1, dtype=np.int64))
    labels = np.array([item.label for item in dataset.train], dtype=np.int64)
    return LabelSpace(labels, np.asarray(dataset.ics.label_camera, dtype=np.int64))
