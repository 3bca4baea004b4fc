"""Which variant trains what (Table 2 and the two diagnostics), in one table.

A :class:`VariantPolicy` says three things about a variant, each a function or table entry, not a string
to compare:

* **label space** — what the memory bank's rows are (:data:`LABEL_SPACES`): the intra-camera IDs with one
  softmax per camera (Eq. 2; every ICS variant) or the true identities with one softmax over all of them
  (``supervised``);
* **losses** — which terms of the loss recipe (:func:`pirid_lite.method.losses.build_loss_recipe`) it uses;
  ``None`` = every term, so a loss added to the recipe is on in the full method at once;
* **grouping** — how stage 2 (§2.3) groups the IDs into prototypes, a registered
  :class:`pirid_lite.method.groupings.Grouping`: ``ASSOCIATION`` (the method: the truth-free grouping that
  ``PiridConfig.association`` names), ``truth`` (oracle, hidden ground truth), ``identity`` (every row is
  its own prototype) or ``None`` (no stage 2).

:data:`POLICIES` is in Table 2's order; the CLI, ``reproduce`` (Table 2's plan), ``calibrate`` (the
``baseline`` rows) and the tables read the variant names from it, so a new variant is one line here.
Only the policies with ``reads_truth`` read the dataset's hidden cross-camera identities to train.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .method.groupings import ASSOCIATION, GROUPINGS, Grouping


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


def intra_camera_labels(dataset, variant: str) -> LabelSpace:
    """Rows = the intra-camera IDs, one softmax per camera (Eq. 2): what ICS gives."""
    labels = np.array([item.label for item in dataset.train], dtype=np.int64)
    return LabelSpace(labels, np.asarray(dataset.ics.label_camera, dtype=np.int64))


def true_identity_labels(dataset, variant: str) -> LabelSpace:
    """Rows = the hidden true identities, one softmax over all of them (the supervised upper bound)."""
    true_ids = dataset.hidden_truth.reveal_per_image(reason=f"{variant} (diagnostic variant)")
    _, labels = np.unique(true_ids, return_inverse=True)
    return LabelSpace(labels.astype(np.int64), np.zeros(labels.max() + 1, dtype=np.int64))


@dataclass(frozen=True)
class LabelSpaceKind:
    name: str
    build: Callable[[object, str], LabelSpace]
    reads_truth: bool


LABEL_SPACES = {kind.name: kind for kind in (
    LabelSpaceKind("intra-camera", intra_camera_labels, reads_truth=False),
    LabelSpaceKind("true-identity", true_identity_labels, reads_truth=True),
)}
INTRA_CAMERA = LABEL_SPACES["intra-camera"]


@dataclass(frozen=True)
class VariantPolicy:
    name: str
    description: str
    label_space: LabelSpaceKind = INTRA_CAMERA
    losses: tuple[str, ...] | None = None       # recipe terms used; None = all of them
    grouping: Grouping | None = ASSOCIATION     # None = stage 1 for every epoch
    baseline: bool = False                      # calibrating the benchmark may run it (never the method itself)

    @property
    def has_stage2(self) -> bool:
        return self.grouping is not None

    @property
    def shares_stage1(self) -> bool:
        """Stage 1 (L_intra on the intra-camera IDs) is the same run for every variant where this holds
        (pirid-1 trains that way throughout)."""
        return not self.label_space.reads_truth

    @property
    def reads_truth(self) -> bool:
        """True when training (not only logging) reads the hidden cross-camera identities."""
        return self.label_space.reads_truth or (self.grouping is not None and self.grouping.reads_truth)

    def uses(self, term: str) -> bool:
        return self.losses is None or term in self.losses

    def label_space_of(self, dataset) -> LabelSpace:
        return self.label_space.build(dataset, self.name)


POLICIES: dict[str, VariantPolicy] = {p.name: p for p in (  # Table 2's order
    VariantPolicy("pirid-1", "L_intra only, every epoch (Table 2)", losses=("intra",), grouping=None, baseline=True),
    VariantPolicy("pirid-2", "PIRID without L_inter_triplet (Table 2)", losses=("intra", "inter_id")),
    VariantPolicy("pirid", "the full method: L_intra, then + L_inter_ID + L_inter_triplet on the prototypes of §2.3"),
    VariantPolicy("oracle-prototypes", "the true cross-camera grouping instead of the association (diagnostic)",
                  grouping=GROUPINGS["truth"], baseline=True),
    VariantPolicy("supervised", "true identities as IDs, one softmax, each identity its own prototype "
                                "(upper bound, diagnostic)", label_space=LABEL_SPACES["true-identity"],
                  grouping=GROUPINGS["identity"], baseline=True),
)}
VARIANTS = tuple(POLICIES)
METHOD = "pirid"                    # the full method: the claims compare the others with it
INTRA_ONLY = "pirid-1"              # stage 1 throughout: the floor the prototypes must lift
ABLATION = "pirid-2"                # without the triplet term (Table 2)
ORACLE = "oracle-prototypes"        # correct prototypes: the room the association can take
UPPER_BOUND = "supervised"          # true identities: the ceiling
BASELINES = tuple(name for name, p in POLICIES.items() if p.baseline)


def policy(variant: str) -> VariantPolicy:
    if variant not in POLICIES:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    return POLICIES[variant]
