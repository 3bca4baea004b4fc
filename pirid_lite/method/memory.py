"""Memory banks of §2.2–2.3: the intra-camera memory K (Eq. 1, Eq. 2) and the prototype memory K'.

Rows here are the paper's columns: ``features[j]`` is K[j], the centroid of global intra-camera ID j.
Both banks are updated by the momentum rule of Eq. 1 (``momentum_update_``) and score a feature by the
cosine similarity to every row divided by the temperature τ. The query feature f(x) is L2-normalised
before the product, as in the memory-bank ReID code the paper builds on (SpCL, cluster-contrast): with
τ = 0.01 an unnormalised BN feature would make the logits explode.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def momentum_update_(bank: torch.Tensor, features: torch.Tensor, labels: torch.Tensor, momentum: float,
                     renormalize: bool = True) -> torch.Tensor:
    """Eq. 1, in place: K[j] ← μ K[j] + (1 − μ) f(x_i) for every sample i of label j = ``labels[i]``.

    Same result as applying the rule sample by sample in batch order, without a Python loop: an ID seen
    n times in the batch ends as μ^n K[j] + (1 − μ) Σ_t μ^(n−1−t) f_t (t = its occurrence order). Each
    touched row is then L2-normalised once when ``renormalize``. Labels < 0 (noise) are ignored.
    ``features`` are detached and cast to the bank's dtype. Returns ``bank``.

    Speed (benchmarks/RESULTS.md): the batch is read once, by a sparse (IDs × batch) weight matrix product
    that also skips noise samples, so no (B, d) copy is made; the touched rows are gathered once and written
    back by one ``index_add_`` of their change (index_copy_/index_put_ are per-element kernels on CPU).
    """
    if bank.dim() != 2 or features.dim() != 2 or features.shape[1] != bank.shape[1]:
        raise ValueError(f"momentum_update_: bank {tuple(bank.shape)} and features {tuple(features.shape)} "
                         "must be (N, d) and (B, d)")
    if labels.shape != features.shape[:1]:
        raise ValueError(f"momentum_update_: labels {tuple(labels.shape)} must be (B,) = ({features.shape[0]},)")
    if labels.numel() == 0:
        return bank
    sorted_labels, order = torch.sort(labels.to(bank.device), stable=True)  # batch order kept within an ID
    if sorted_labels[-1].item() >= bank.shape[0]:
        raise ValueError(f"momentum_update_: label {sorted_labels[-1].item()} out of range for a bank of "
                         f"{bank.shape[0]} rows")
    if sorted_labels[0].item() < 0:  # noise samples sort first: drop them from the small index vectors only
        first = int((sorted_labels < 0).sum())
        sorted_labels, order = sorted_labels[first:], order[first:]
        if len(order) == 0:
            return bank
    ids, group, counts = torch.unique_consecutive(sorted_labels, return_inverse=True, return_counts=True)
    # occurrences of the same ID after each sample (sorted position p of group g: end_g − 1 − p)
    later = counts.cumsum(0).index_select(0, group).sub_(torch.arange(1, len(order) + 1, device=bank.device))
    mu = torch.scalar_tensor(momentum, dtype=bank.dtype, device=bank.device)
    neg_weights = mu.pow(later).mul_(momentum - 1)  # −(1 − μ) μ^(n−1−t): the product below is −(new row)
    weights = torch.sparse_coo_tensor(torch.stack((group, order)), neg_weights, (len(ids), len(labels)),
                                      is_coalesced=True, check_invariants=False)  # rows sorted, then columns
    old_rows = bank.index_select(0, ids)
    neg_rows = torch.sparse.mm(weights, features.detach().to(bank.dtype))
    neg_rows.addcmul_(old_rows, mu.pow(counts).unsqueeze(1), value=-1)
    if renormalize:
        neg_rows.div_(torch.linalg.vector_norm(neg_rows, dim=1, keepdim=True).clamp_min_(1e-12))
    bank.index_add_(0, ids, old_rows.add_(neg_rows), alpha=-1)  # K[j] − (K[j] − new K[j])
    return bank


def _check_features(features: torch.Tensor, dim: int, name: str) -> None:
    if features.dim() != 2 or features.shape[1] != dim:
        raise ValueError(f"{name}: features of shape {tuple(features.shape)}, expected (B, {dim})")


def id_centroids(features: torch.Tensor, labels: torch.Tensor, num_ids: int) -> torch.Tensor:
    """(num_ids, d): the L2-normalised mean of the L2-normalised features of each ID's images.

    K's initial value (docs/DESIGN.md §2) and, with ``prototype_source="fresh"``, the input of §2.3's DBSCAN.
    Every ID must have at least one image."""
    labels = torch.as_tensor(labels, device=features.device).long()
    counts = torch.bincount(labels, minlength=num_ids)
    missing = torch.nonzero(counts == 0).flatten().tolist()
    if missing:
        raise ValueError(f"id_centroids: {len(missing)} ID(s) have no feature, e.g. {missing[:10]}")
    normed = F.normalize(features, dim=1)
    sums = torch.zeros(num_ids, features.shape[1], dtype=features.dtype, device=features.device)
    sums.index_add_(0, labels, normed)
    return F.normalize(sums / counts.unsqueeze(1), dim=1)


class IntraCameraMemory(nn.Module):
    """Intra-camera memory bank K (§2.2) with the camera-restricted non-parametric softmax of Eq. 2.

    ``label_camera[j]`` is the camera (softmax group) of global ID j. Buffers: ``features`` (N, d) = K
    (row j = K[j]), ``label_camera`` (N,), and a derived (C, N) boolean ``camera_mask``.
    """

    def __init__(self, label_camera: torch.Tensor, dim: int, momentum: float = 0.05, temperature: float = 0.01,
                 renormalize: bool = True) -> None:
        super().__init__()
        label_camera = torch.as_tensor(label_camera, dtype=torch.long)
        if label_camera.dim() != 1 or label_camera.numel() == 0 or label_camera.min() < 0:
            raise ValueError("IntraCameraMemory: label_camera must be a non-empty 1-D tensor of cameras >= 0, got "
                             f"shape {tuple(label_camera.shape)}")
        if not 0.0 <= momentum <= 1.0 or temperature <= 0:
            raise ValueError(f"IntraCameraMemory: momentum={momentum} must be in [0, 1], temperature={temperature} > 0")
        self.momentum, self.temperature, self.renormalize = momentum, temperature, renormalize
        num_cameras = int(label_camera.max()) + 1
        self.register_buffer("features", torch.zeros(len(label_camera), dim))
        self.register_buffer("label_camera", label_camera)
        mask = label_camera.unsqueeze(0) == torch.arange(num_cameras).unsqueeze(1)  # mask[c, j]: ID j in camera c
        self.register_buffer("camera_mask", mask, persistent=False)

    @property
    def num_ids(self) -> int:
        return self.features.shape[0]

    @torch.no_grad()
    def initialize(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """K[j] ← normalised mean of the L2-normalised features of ID j's images (docs/DESIGN.md §2)."""
        _check_features(features, self.features.shape[1], "IntraCameraMemory.initialize")
        labels = torch.as_tensor(labels, device=self.features.device).long()
        in_range = labels.numel() > 0 and labels.min() >= 0 and labels.max() < self.num_ids
        if labels.shape != features.shape[:1] or not in_range:
            raise ValueError(f"IntraCameraMemory.initialize: labels must be ({features.shape[0]},) IDs in "
                             f"[0, {self.num_ids}), got shape {tuple(labels.shape)}")
        self.features.copy_(id_centroids(features.detach().to(self.features), labels, self.num_ids))

    def update(self, f: torch.Tensor, labels: torch.Tensor) -> None:
        """Eq. 1 with this bank's μ (see ``momentum_update_``)."""
        momentum_update_(self.features, f, labels, self.momentum, self.renormalize)

    def log_probs(self, f: torch.Tensor, camids: torch.Tensor) -> torch.Tensor:
        """Eq. 2: log p(j|x) over the IDs of x's own camera, (B, N); other cameras' IDs get −inf.

        logits = normalize(f) · K[j] / τ (f is L2-normalised, see module docstring); the camera mask is
        gathered per image, so the softmax runs over columns A_c..A_c+N_c−1 only.
        """
        _check_features(f, self.features.shape[1], "IntraCameraMemory.log_probs")
        logits = F.normalize(f.to(self.features.dtype), dim=1) @ self.features.T / self.temperature
        own_camera = self.camera_mask[camids.to(self.camera_mask.device).long()]
        return F.log_softmax(logits.masked_fill(~own_camera, float("-inf")), dim=1)


class PrototypeMemory(nn.Module):
    """Inter-camera prototype memory K' (§2.3): Y rows initialised from the prototype centroids.

    ``logits(f)`` = normalize(f) · K'ᵀ / τ feed Eq. 4; ``update`` applies Eq. 1 with the prototype labels
    (−1 = image of a noise ID, ignored).
    """

    def __init__(self, centroids: torch.Tensor, momentum: float = 0.05, temperature: float = 0.01,
                 renormalize: bool = True) -> None:
        super().__init__()
        if centroids.dim() != 2 or centroids.shape[0] == 0:
            raise ValueError(f"PrototypeMemory: centroids must be (Y>0, d), got {tuple(centroids.shape)}")
        if not 0.0 <= momentum <= 1.0 or temperature <= 0:
            raise ValueError(f"PrototypeMemory: momentum={momentum} must be in [0, 1], temperature={temperature} > 0")
        self.momentum, self.temperature, self.renormalize = momentum, temperature, renormalize
        self.register_buffer("features", centroids.detach().clone().float())

    @property
    def num_prototypes(self) -> int:
        return self.features.shape[0]

    def update(self, f: torch.Tensor, proto_labels: torch.Tensor) -> None:
        """Eq. 1 on K' with the images' prototype labels; −1 ignored."""
        momentum_update_(self.features, f, proto_labels, self.momentum, self.renormalize)

    def logits(self, f: torch.Tensor) -> torch.Tensor:
        """(B, Y) cosine similarities of normalize(f) to the prototypes, divided by τ (input of Eq. 4)."""
        _check_features(f, self.features.shape[1], "PrototypeMemory.logits")
        return F.normalize(f.to(self.features.dtype), dim=1) @ self.features.T / self.temperature
