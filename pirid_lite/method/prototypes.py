"""Inter-camera prototypes of §2.3: DBSCAN over the ID centroids K, plus diagnostics.

``form_prototypes`` clusters the N rows of the intra-camera memory with DBSCAN on a precomputed distance
— cosine (1 − cos) or the k-reciprocal Jaccard distance (Zhong et al. 2017) with which eps = 0.6 is
conventional in memory/DBSCAN ReID code (SpCL, cluster-contrast). Noise points (isolated IDs) are dropped
(assignment −1); each cluster is one prototype; ``centroids`` initialise the prototype memory K'.
``prototype_quality`` measures the grouping against the hidden truth (logged only, never trained on).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import DBSCAN
from sklearn.metrics.cluster import contingency_matrix, pair_confusion_matrix

from .. import logkeys
from .jaccard import jaccard_distance

DISTANCES = ("cosine", "jaccard", "jaccard-camera")


@dataclass
class Prototypes:
    """Result of §2.3. ``assignment[j]`` = S'[j] ∈ {0..Y−1}, −1 for noise IDs; ``centroids`` (Y, d) = K' init."""

    assignment: torch.Tensor
    centroids: torch.Tensor
    num_prototypes: int
    noise_share: float
    distance: str
    threshold: float | None = None   # the grouping's threshold when it adapts per call (camera-linkage)
    reliable: torch.Tensor | None = None  # (Y,) bool, truth-free (groupings.reliability), when stage 2 samples by it


# --------------------------------------------------------------------------- distances
def cosine_distance(x: torch.Tensor) -> torch.Tensor:
    """(N, N) cosine distance 1 − cos(x_i, x_j) of the L2-normalised rows, clipped at 0, zero diagonal."""
    x = F.normalize(x.float(), dim=1)
    dist = (1.0 - x @ x.T).clamp(min=0.0)
    return dist.fill_diagonal_(0.0)


def pair_distance(features: torch.Tensor, metric: str, k1: int = 20, k2: int = 6,
                  cameras: torch.Tensor | None = None) -> torch.Tensor:
    """(N, N) distance that §2.3 groups on: ``cosine``, ``jaccard`` (k-reciprocal) or ``jaccard-camera``
    (k-reciprocal with neighbours from other cameras, which needs ``cameras``)."""
    if metric == "cosine":
        return cosine_distance(features)
    if metric == "jaccard":
        return jaccard_distance(features, k1=k1, k2=k2)
    if metric == "jaccard-camera" and cameras is not None:
        return jaccard_distance(features, k1=k1, k2=k2, cameras=cameras)
    raise ValueError(f"metric={metric!r}: expected one of {DISTANCES} (PiridConfig.cluster_metric)")


def camera_centred(features: torch.Tensor, cameras: torch.Tensor) -> torch.Tensor:
    """Each row minus the mean row of its camera, L2-normalised (``PiridConfig.camera_centring``).

    Beyond the paper: a camera's colour and exposure shift every ID it sees in one direction, so centroids of
    one camera sit closer to each other than to the same person elsewhere; removing each camera's mean before
    clustering takes that shared direction out of what DBSCAN sees (docs/DESIGN.md §2)."""
    x = features.float()
    cameras = torch.as_tensor(cameras, device=x.device).long()
    num_cameras = int(cameras.max()) + 1 if cameras.numel() else 0
    sums = torch.zeros(num_cameras, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, cameras, x)
    counts = torch.bincount(cameras, minlength=num_cameras).clamp(min=1).unsqueeze(1).to(x.dtype)
    return F.normalize(x - (sums / counts)[cameras], dim=1)


# --------------------------------------------------------------------------- cannot-link
def _split_by_camera(members: np.ndarray, dist: np.ndarray, cameras: np.ndarray, eps: float) -> list[np.ndarray]:
    """Greedy split of one cluster into sub-prototypes that hold at most one ID per camera.

    Members are visited by distance to the cluster's densest member (most members within eps; ties →
    smallest summed distance). Each joins the nearest sub-prototype (single linkage, as DBSCAN links
    points) that has no ID of its camera and lies within eps; otherwise it starts a new sub-prototype.
    """
    d = dist[np.ix_(members, members)]
    density = (d <= eps).sum(1) * (d.shape[0] * (d.max() + 1)) - d.sum(1)  # count first, then closeness
    order = np.argsort(d[np.argmax(density)], kind="stable")
    link = np.empty((0, len(members)))          # link[s, m]: single-linkage distance of member m to sub s
    cams: list[set[int]] = []
    groups: list[list[int]] = []
    for m in order:
        allowed = np.array([cameras[members[m]] not in c for c in cams], dtype=bool)
        candidates = np.where(allowed & (link[:, m] <= eps))[0] if len(cams) else np.array([], dtype=int)
        if len(candidates):
            s = candidates[np.argmin(link[candidates, m])]
            link[s] = np.minimum(link[s], d[m])
        else:
            s = len(groups)
            link = np.vstack([link, d[m]])
            cams.append(set())
            groups.append([])
        cams[s].add(int(cameras[members[m]]))
        groups[s].append(int(m))
    return [members[np.asarray(g)] for g in groups]


def _apply_cannot_link(labels: np.ndarray, dist: np.ndarray, cameras: np.ndarray, eps: float) -> np.ndarray:
    """Split every cluster that holds two IDs of one camera; sub-prototypes of one ID become noise (−1)."""
    out = np.full_like(labels, -1)
    next_label = 0
    for cluster in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == cluster)
        if len(np.unique(cameras[members])) == len(members):
            parts = [members]
        else:
            parts = _split_by_camera(members, dist, cameras, eps)
        for part in parts:
            if len(part) > 1:
                out[part] = next_label
                next_label += 1
    return out


# --------------------------------------------------------------------------- prototypes
def _relabel(labels: np.ndarray) -> np.ndarray:
    """Cluster ids → 0..Y−1 in order of first appearance by id value; −1 stays −1."""
    out = np.full(len(labels), -1, dtype=np.int64)
    kept = labels >= 0
    if kept.any():
        out[kept] = np.unique(labels[kept], return_inverse=True)[1]
    return out


def build_prototypes(memory_features: torch.Tensor, labels: np.ndarray, distance: str) -> Prototypes:
    """Prototypes from cluster labels: K' rows = L2-normalised mean of the members' rows."""
    assignment = torch.as_tensor(_relabel(labels), device=memory_features.device)
    num = int(assignment.max()) + 1 if len(assignment) and assignment.max() >= 0 else 0
    feats = memory_features.detach().float()
    kept = assignment >= 0
    sums = torch.zeros(num, feats.shape[1], device=feats.device).index_add_(0, assignment[kept], feats[kept])
    return Prototypes(assignment=assignment, centroids=F.normalize(sums, dim=1), num_prototypes=num,
                      noise_share=float((~kept).float().mean()) if len(assignment) else 0.0, distance=distance)


def grouping_distance(memory_features: torch.Tensor, label_camera, metric: str, k1: int, k2: int,
                      camera_centring: bool, caller: str) -> tuple[np.ndarray, np.ndarray]:
    """The (N, N) float64 distance a grouping runs on (of :func:`camera_centred` rows when asked) and the
    camera of each row; a ``ValueError`` naming ``caller`` when the shapes do not fit."""
    if memory_features.dim() != 2:
        raise ValueError(f"{caller}: memory_features must be (N, d), got {tuple(memory_features.shape)}")
    cameras = torch.as_tensor(label_camera).cpu().numpy()
    if cameras.shape != (memory_features.shape[0],):
        raise ValueError(f"{caller}: label_camera has shape {cameras.shape}, expected "
                         f"({memory_features.shape[0]},) = one camera per memory row")
    seen = memory_features.detach()
    on_device = torch.as_tensor(cameras, device=seen.device)
    if camera_centring:
        seen = camera_centred(seen, on_device)
    return pair_distance(seen, metric, k1, k2, on_device).double().cpu().numpy(), cameras


def form_prototypes(memory_features: torch.Tensor, label_camera: torch.Tensor, eps: float = 0.6,
                    min_samples: int = 2, metric: str = "jaccard", cannot_link: bool = False,
                    k1: int = 20, k2: int = 6, camera_centring: bool = False) -> Prototypes:
    """§2.3: DBSCAN (``metric="precomputed"``) over the N ID centroids → prototypes; noise IDs dropped.

    ``camera_centring``: DBSCAN sees :func:`camera_centred` rows; the prototypes (K' init) are still the
    means of the rows as given.

    ``cannot_link``: IDs of one camera are known to be different people, so a prototype must not hold two
    of them; violating clusters are split greedily (see ``_split_by_camera``) and singletons become noise.
    """
    dist, cameras = grouping_distance(memory_features, label_camera, metric, k1, k2, camera_centring, "form_prototypes")
    labels = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(dist)
    if cannot_link:
        labels = _apply_cannot_link(labels, dist, cameras, eps)
    return build_prototypes(memory_features, labels, metric + ("+cannot-link" if cannot_link else ""))


def linkage_prototypes(memory_features: torch.Tensor, label_camera: torch.Tensor, scale: float = 2.0,
                       metric: str = "cosine", k1: int = 20, k2: int = 6, camera_centring: bool = False) -> Prototypes:
    """Beyond the paper: §2.3's prototypes from :func:`pirid_lite.method.association.camera_constrained_linkage` —
    complete linkage that never groups two IDs of one camera, at ``scale`` × the median cross-camera
    nearest-neighbour distance (:func:`pirid_lite.method.association.adaptive_threshold`, recomputed per call).
    ``camera_centring`` as in :func:`form_prototypes`."""
    from .association import adaptive_threshold, camera_constrained_linkage

    dist, cameras = grouping_distance(memory_features, label_camera, metric, k1, k2, camera_centring,
                                      "linkage_prototypes")
    threshold = adaptive_threshold(dist, cameras, scale)
    labels = camera_constrained_linkage(dist, cameras, threshold)
    return dataclasses.replace(build_prototypes(memory_features, labels, f"{metric}+camera-linkage"),
                               threshold=threshold)


def prototypes_from_groups(memory_features: torch.Tensor, groups: torch.Tensor,
                           keep_singletons: bool = False) -> Prototypes:
    """Prototypes from a given grouping of the IDs (oracle: true cross-camera identity).

    Groups of one ID become noise, mirroring DBSCAN dropping isolated points, unless ``keep_singletons``
    (every group is a prototype, e.g. the supervised upper bound). Negative group values are noise.
    """
    groups = torch.as_tensor(groups).cpu().numpy().astype(np.int64)
    if groups.shape != (memory_features.shape[0],):
        raise ValueError(f"prototypes_from_groups: groups has shape {groups.shape}, expected "
                         f"({memory_features.shape[0]},)")
    labels = np.where(groups >= 0, groups, -1)
    if not keep_singletons:
        values, counts = np.unique(labels, return_counts=True)
        labels = np.where(np.isin(labels, values[counts == 1]), -1, labels)
    return build_prototypes(memory_features, labels, "groups")


# --------------------------------------------------------------------------- diagnostics
def prototype_quality(assignment: torch.Tensor | np.ndarray, true_identity_per_id: np.ndarray) -> dict[str, float]:
    """Prototypes vs the hidden true identities of the IDs (diagnostics only).

    purity: fraction of clustered IDs whose prototype's majority true identity is theirs. Pairwise scores
    over pairs of IDs (same prototype vs same true identity): a noise ID shares a prototype with nobody,
    so precision counts pairs of clustered IDs and the recall denominator counts *all* true same-identity
    pairs, noise IDs included (dropping a true match costs recall). Undefined ratios are NaN.
    """
    assignment = torch.as_tensor(assignment).cpu().numpy().astype(np.int64)
    truth = np.asarray(true_identity_per_id)
    if truth.shape != assignment.shape:
        raise ValueError(f"prototype_quality: assignment {assignment.shape} and true identities {truth.shape} "
                         "must have one entry per ID")
    clustered = assignment >= 0
    if clustered.any():
        purity = contingency_matrix(truth[clustered], assignment[clustered]).max(0).sum() / clustered.sum()
    else:
        purity = float("nan")
    singleton_noise = np.where(clustered, assignment, -1 - np.arange(len(assignment)))  # noise: own group
    (_, false_pos), (false_neg, true_pos) = pair_confusion_matrix(truth, singleton_noise) // 2
    precision = true_pos / (true_pos + false_pos) if true_pos + false_pos else float("nan")
    recall = true_pos / (true_pos + false_neg) if true_pos + false_neg else float("nan")
    f_score = 2 * precision * recall / (precision + recall) if precision + recall > 0 else float("nan")
    return {logkeys.PURITY: float(purity), logkeys.PAIRWISE_PRECISION: float(precision),
            logkeys.PAIRWISE_RECALL: float(recall), logkeys.PAIRWISE_F: float(f_score),
            logkeys.NUM_PROTOTYPES: int(len(np.unique(assignment[clustered]))),
            logkeys.NUM_TRUE_IDENTITIES: int(len(np.unique(truth))),
            logkeys.NOISE_SHARE: float(1.0 - clustered.mean())}


def eps_sweep(memory_features: torch.Tensor, label_camera, true_identity_per_id: np.ndarray, eps_values,
              metrics=("cosine", "jaccard"), cannot_link: bool = False, min_samples: int = 2,
              k1: int = 20, k2: int = 6, camera_centring: bool = False):
    """Prototype quality (:func:`prototype_quality`) of §2.3's clustering over a grid of eps, per distance:
    a pandas DataFrame with one row per (metric, eps). Diagnostics only (reads the hidden truth)."""
    import pandas as pd

    rows = []
    for metric in metrics:
        for eps in eps_values:
            protos = form_prototypes(memory_features, label_camera, eps=float(eps), min_samples=min_samples,
                                     metric=metric, cannot_link=cannot_link, k1=k1, k2=k2,
                                     camera_centring=camera_centring)
            rows.append({"metric": metric, "eps": float(eps), "cannot_link": cannot_link,
                         "camera_centring": camera_centring,
                         **({"k1": k1} if metric == "jaccard" else {}),
                         **prototype_quality(protos.assignment, true_identity_per_id)})
    return pd.DataFrame(rows)
