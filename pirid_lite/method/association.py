"""Cross-camera association that keeps the one rule intra-camera supervision gives for free.

Beyond the paper (docs/DESIGN.md §2). Two intra-camera IDs of one camera are two different people, so a
correct prototype holds at most one ID per camera. DBSCAN (§2.3) does not know this: chains of close IDs
join two IDs of one camera, and from mid stage 2 most of its prototypes do.

:func:`camera_constrained_linkage` is complete-linkage agglomerative clustering (scikit-learn, precomputed
distance) in which every same-camera pair sits at :data:`SEPARATED`, far above any threshold. Complete
linkage merges two groups only if *every* pair across them is within the threshold, so the rule holds for
the whole group, not only pairwise (a chain of pairwise links, as in Precise-ICS, can still break it).

The threshold follows the network without the truth (:func:`adaptive_threshold`): a multiple of the median
distance from an ID to its nearest ID in another camera, recomputed at every epoch — cosine distances
shrink as training goes on, so a fixed threshold that is right at the end leaves most IDs alone early on.

:func:`same_camera_prototypes` and :func:`largest_prototype` are the truth-free signals of any grouping:
a user with real data can read them every epoch.
"""
from __future__ import annotations

import numpy as np
from sklearn.cluster import AgglomerativeClustering

SEPARATED = 1e6  # the distance of two IDs of one camera: no threshold reaches it


def _check(dist: np.ndarray, cameras: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    dist, cameras = np.asarray(dist, dtype=np.float64), np.asarray(cameras)
    if dist.ndim != 2 or dist.shape[0] != dist.shape[1] or cameras.shape != dist.shape[:1]:
        raise ValueError(f"association: distances {dist.shape} must be (N, N) with one camera per row, "
                         f"got cameras {cameras.shape}")
    return dist, cameras


def cross_camera_nearest(dist: np.ndarray, cameras: np.ndarray) -> np.ndarray:
    """(N,) distance from each ID to its nearest ID in another camera (inf where there is none)."""
    dist, cameras = _check(dist, cameras)
    other_camera = cameras[:, None] != cameras[None, :]
    return np.where(other_camera, dist, np.inf).min(axis=1, initial=np.inf)


def adaptive_threshold(dist: np.ndarray, cameras: np.ndarray, scale: float) -> float:
    """``scale`` × the median cross-camera nearest-neighbour distance (:func:`cross_camera_nearest`).

    Truth-free and rank-free: it tracks how close the IDs of one person in two cameras have become. If no ID
    has a neighbour in another camera, the threshold is 0 (nothing is associated)."""
    if scale <= 0:
        raise ValueError(f"adaptive_threshold: scale={scale}, expected > 0 (PiridConfig.linkage_scale)")
    nearest = cross_camera_nearest(dist, cameras)
    nearest = nearest[np.isfinite(nearest)]
    return float(scale * np.median(nearest)) if len(nearest) else 0.0


def camera_constrained_linkage(dist: np.ndarray, cameras: np.ndarray, threshold: float) -> np.ndarray:
    """Cluster labels (N,) of complete linkage at ``threshold`` with same-camera pairs forbidden.

    Groups of one ID are noise (−1), as DBSCAN drops isolated points. No group holds two IDs of one camera.
    """
    dist, cameras = _check(dist, cameras)
    n = len(cameras)
    if n < 2 or threshold <= 0:
        return np.full(n, -1, dtype=np.int64)
    constrained = np.where(cameras[:, None] == cameras[None, :], SEPARATED, dist)
    np.fill_diagonal(constrained, 0.0)
    labels = AgglomerativeClustering(n_clusters=None, metric="precomputed", linkage="complete",
                                     distance_threshold=min(threshold, SEPARATED / 2)).fit_predict(constrained)
    sizes = np.bincount(labels)
    return np.where(sizes[labels] > 1, labels, -1).astype(np.int64)


def same_camera_prototypes(assignment, cameras) -> int:
    """Number of prototypes holding two (or more) IDs of one camera — each one is certainly wrong."""
    assignment, cameras = np.asarray(assignment, dtype=np.int64), np.asarray(cameras, dtype=np.int64)
    kept = assignment >= 0
    if not kept.any():
        return 0
    pairs = np.unique(np.stack([assignment[kept], cameras[kept]], axis=1), axis=0)  # (prototype, camera)
    members = np.bincount(assignment[kept])
    cameras_seen = np.bincount(pairs[:, 0], minlength=len(members))
    return int((members > cameras_seen).sum())


def largest_prototype(assignment) -> int:
    """Number of IDs in the largest prototype (0 if there is none)."""
    assignment = np.asarray(assignment, dtype=np.int64)
    kept = assignment[assignment >= 0]
    return int(np.bincount(kept).max()) if len(kept) else 0
