"""Losses of §2.2–2.4: L_intra (Eq. 3), L_inter_ID (Eq. 4), L_inter_triplet (Eq. 5) and their sum (Eq. 6–7).

All are vectorised over the mini-batch (no loop over cameras, images or anchors) and free of host
synchronisation, so a CUDA training step does not stall on them.

:data:`LOSS_TERMS` names the terms a training step computes, in order. Logs, the progress bar, the
non-finite-loss message and tables key on these names (``loss_<name>``); a variant says which it uses
(:mod:`pirid_lite.variants`). :func:`build_loss_recipe` builds the recipe from the config: each term carries
its weight (Eq. 7: all 1) and its own settings (the triplet margin m1).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, NamedTuple, Sequence

import torch
import torch.nn.functional as F


def intra_camera_loss(log_probs: torch.Tensor, labels: torch.Tensor, camids: torch.Tensor) -> torch.Tensor:
    """Eq. 3 on a mini-batch: L_intra = Σ_c (1/|D_c|) Σ_{i∈D_c} −log p(j_i|x_i).

    ``log_probs`` (B, N) from ``IntraCameraMemory.log_probs`` (Eq. 2), ``labels`` the global IDs j_i,
    ``camids`` the cameras c_i. |D_c| is the number of the batch's images of camera c: each camera present
    contributes its mean, and the means are summed. Implemented as Σ_i −log p_i / |D_{c_i}|.
    """
    if log_probs.dim() != 2 or labels.shape != log_probs.shape[:1] or camids.shape != labels.shape:
        raise ValueError(f"intra_camera_loss: log_probs {tuple(log_probs.shape)} must be (B, N) with labels and "
                         f"camids of shape (B,), got {tuple(labels.shape)} and {tuple(camids.shape)}")
    nll = -log_probs.gather(1, labels.long().unsqueeze(1)).squeeze(1)
    # a camera id is < N (every camera owns at least one ID), so N slots hold every camera's image count
    per_camera = torch.zeros(log_probs.shape[1], dtype=nll.dtype, device=nll.device)
    per_camera.index_add_(0, camids.long(), torch.ones_like(nll))
    return (nll / per_camera[camids.long()]).sum()


def inter_id_loss(logits: torch.Tensor, proto_labels: torch.Tensor) -> torch.Tensor:
    """Eq. 4: cross-entropy of the prototype logits (``PrototypeMemory.logits``, τ included) against S'.

    Only images whose ID belongs to a prototype (label ≥ 0) contribute. The paper writes a sum over the
    batch; we average over the contributing images so that the loss scale does not depend on the batch
    size, as in the fully supervised methods it cites. Returns a 0 that keeps the graph if none contributes.
    """
    if logits.dim() != 2 or proto_labels.shape != logits.shape[:1]:
        raise ValueError(f"inter_id_loss: logits {tuple(logits.shape)} must be (B, Y) and proto_labels (B,), "
                         f"got {tuple(proto_labels.shape)}")
    valid = proto_labels >= 0
    per_image = F.cross_entropy(logits, proto_labels.long().clamp(min=0), reduction="none")
    per_image = torch.where(valid, per_image, torch.zeros_like(per_image))
    return per_image.sum() / valid.sum().clamp(min=1)


def pairwise_euclidean(x: torch.Tensor) -> torch.Tensor:
    """(B, B) Euclidean distances; the sqrt is clamped away from 0 so its gradient stays finite."""
    squared = x.pow(2).sum(1)
    d2 = squared.unsqueeze(1) + squared.unsqueeze(0) - 2.0 * x @ x.T
    return d2.clamp(min=1e-12).sqrt()


class BatchHardPairs(NamedTuple):
    """The hardest positive and negative of every anchor of a batch (Eq. 5); see :func:`batch_hard_pairs`."""

    positive_distance: torch.Tensor  # (B,) d(a, hardest positive); 0 where there is no positive
    positive_index: torch.Tensor     # (B,) its index in the batch; meaningful only where ``anchors``
    negative_distance: torch.Tensor  # (B,) d(a, hardest negative); inf where there is no negative
    negative_index: torch.Tensor     # (B,) its index in the batch; meaningful only where ``anchors``
    anchors: torch.Tensor            # (B,) bool: label ≥ 0 with at least one positive and one negative


def batch_hard_pairs(g: torch.Tensor, labels: torch.Tensor) -> BatchHardPairs:
    """Batch-hard mining of Eq. 5 (Hermans et al. 2017) on Euclidean distances of ``g``: for every image
    with label ≥ 0, its farthest other image of the same label and its closest image of another label ≥ 0.
    Used by :func:`batch_hard_triplet_loss`; exposed so the notebooks can show who the hard pairs are."""
    if g.dim() != 2 or labels.shape != g.shape[:1]:
        raise ValueError(f"batch_hard_triplet_loss: g {tuple(g.shape)} must be (B, d) and labels (B,), "
                         f"got {tuple(labels.shape)}")
    dist = pairwise_euclidean(g.float())
    valid = labels >= 0
    both_valid = valid.unsqueeze(1) & valid.unsqueeze(0)
    same = labels.unsqueeze(1) == labels.unsqueeze(0)
    eye = torch.eye(len(labels), dtype=torch.bool, device=g.device)
    positive = same & both_valid & ~eye
    negative = ~same & both_valid
    positive_dist = dist.masked_fill(~positive, 0.0)  # distances are > 0, so 0 never wins
    negative_dist = dist.masked_fill(~negative, float("inf"))
    return BatchHardPairs(positive_dist.amax(1), positive_dist.detach().argmax(1),
                          negative_dist.amin(1), negative_dist.detach().argmin(1),
                          valid & positive.any(1) & negative.any(1))


def batch_hard_triplet_loss(g: torch.Tensor, labels: torch.Tensor, margin: float = 0.1) -> torch.Tensor:
    """Eq. 5, batch-hard triplet loss (Hermans et al. 2017) on the GAP features g(x), Euclidean distance.

    For every anchor with label ≥ 0: hardest positive = farthest other image of its label, hardest
    negative = closest image of another label ≥ 0 (:func:`batch_hard_pairs`); loss = mean over anchors of
    [m + d_ap − d_an]_+ (the hinge of Hermans et al., which Eq. 5 leaves implicit). Labels < 0 (noise IDs)
    are excluded entirely; anchors with no positive or no negative in the batch are skipped; 0 with graph
    if no anchor remains.
    """
    pairs = batch_hard_pairs(g, labels)
    hinge = F.relu(margin + pairs.positive_distance - pairs.negative_distance)
    hinge = torch.where(pairs.anchors, hinge, torch.zeros_like(hinge))
    return hinge.sum() / pairs.anchors.sum().clamp(min=1)  # torch.where keeps the graph: 0 with grad if none


def total_loss(*terms: torch.Tensor | None, weights: Sequence[float] | None = None) -> torch.Tensor:
    """Eq. 7 (with Eq. 6): L = Σ_k w_k L_k, summed in the order given (L_intra + L_inter_ID +
    L_inter_triplet). The paper weighs every term 1 (``weights=None``); absent (None) terms are left out
    (stage 1 of §2.4 and the PIRID-1/PIRID-2 ablations of Table 2)."""
    if weights is not None and len(weights) != len(terms):
        raise ValueError(f"total_loss: {len(terms)} terms but {len(weights)} weights")
    loss = None
    for k, term in enumerate(terms):
        if term is None:
            continue
        weighted = term if weights is None else term * weights[k]
        loss = weighted if loss is None else loss + weighted
    if loss is None:
        raise ValueError("total_loss: every term is absent; a step needs at least L_intra")
    return loss


# --------------------------------------------------------------------------- the recipe of a training step
class StepInputs(NamedTuple):
    """What a loss term may read in one step (stage-2 fields are None in stage 1)."""

    g: torch.Tensor                       # (B, d) GAP features (triplet)
    f: torch.Tensor                       # (B, d) BN features (memories)
    log_probs: torch.Tensor               # (B, N) Eq. 2 over each image's own softmax group
    labels: torch.Tensor                  # (B,) memory row of each image
    groups: torch.Tensor                  # (B,) softmax group (camera for ICS) of each image
    image_prototypes: torch.Tensor | None = None   # (B,) prototype of each image's ID, −1 = noise
    prototype_memory: object | None = None         # PrototypeMemory K' (its ``logits(f)``, τ included, feed Eq. 4)


@dataclass(frozen=True)
class LossTerm:
    """One term of Eq. 7: its log name, the paper's name, the first stage of §2.4 that uses it, its weight
    and its own settings (e.g. the triplet margin), which ``compute(inputs, **settings)`` receives."""

    name: str                                     # log key ``loss_<name>``
    paper: str                                    # how the paper names it, for messages
    stage: int
    compute: Callable[..., torch.Tensor]
    weight: float = 1.0
    settings: Mapping[str, float] = field(default_factory=dict)

    def __call__(self, inputs: StepInputs) -> torch.Tensor:
        return self.compute(inputs, **self.settings)


def _intra(s: StepInputs) -> torch.Tensor:
    return intra_camera_loss(s.log_probs, s.labels, s.groups)


def _inter_id(s: StepInputs) -> torch.Tensor:
    return inter_id_loss(s.prototype_memory.logits(s.f), s.image_prototypes)


def _triplet(s: StepInputs, margin: float) -> torch.Tensor:
    return batch_hard_triplet_loss(s.g, s.image_prototypes, margin)


def build_loss_recipe(cfg) -> tuple[LossTerm, ...]:
    """The terms of Eq. 7 in order, each with its weight and settings from ``cfg`` (a PiridConfig).
    Adding a loss: a function above, one line here, and its weight (and settings) in the config."""
    return (
        LossTerm("intra", "L_intra (Eq. 3)", 1, _intra, cfg.intra_weight),
        LossTerm("inter_id", "L_inter_ID (Eq. 4)", 2, _inter_id, cfg.inter_id_weight),
        LossTerm("triplet", "L_inter_triplet (Eq. 5)", 2, _triplet, cfg.triplet_weight,
                 {"margin": cfg.triplet_margin}),
    )


class _AnySetting:
    """Stands in for a config when only the recipe's names are wanted: every setting reads 1."""

    def __getattr__(self, name: str) -> float:
        return 1.0


LOSS_TERMS = tuple(term.name for term in build_loss_recipe(_AnySetting()))  # the recipe's names, in order


def loss_terms(recipe: Sequence[LossTerm], inputs: StepInputs, stage: int,
               uses: Callable[[str], bool]) -> dict[str, torch.Tensor | None]:
    """Every recipe term by name: computed when ``stage`` has reached it and the variant ``uses`` it, else
    None (left out of Eq. 7, logged as 0)."""
    return {term.name: term(inputs) if stage >= term.stage and uses(term.name) else None for term in recipe}
