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

The peers' association (CMT, TCSVT 2024; CCAFL, TCSVT 2025), for comparison (``association="min-jaccard"``):
:func:`min_image_distance` gives two IDs the smallest distance between their images, and
:func:`camera_disjoint_merges` joins IDs along ascending edges only while the two groups share no camera.
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


# --------------------------------------------------------------------------- the peers' association
def min_image_distance(image_dist, image_ids, num_ids: int):
    """(N, N) distance between two IDs = the smallest distance between an image of one and an image of the
    other (``image_dist`` (n, n) over the training images, ``image_ids`` (n,) their memory rows). Torch in,
    torch out, two scatter-minimums: no loop over images."""
    import torch

    image_dist = torch.as_tensor(image_dist)
    ids = torch.as_tensor(image_ids, device=image_dist.device).long()
    n = image_dist.shape[0]
    if image_dist.shape != (n, n) or ids.shape != (n,):
        raise ValueError(f"min_image_distance: distances {tuple(image_dist.shape)} must be (n, n) with one ID "
                         f"per image, got IDs {tuple(ids.shape)}")
    inf = torch.full((n, num_ids), float("inf"), dtype=image_dist.dtype, device=image_dist.device)
    per_image = inf.scatter_reduce(1, ids.expand(n, n), image_dist, "amin")            # (n, N)
    inf = torch.full((num_ids, num_ids), float("inf"), dtype=image_dist.dtype, device=image_dist.device)
    return inf.scatter_reduce(0, ids[:, None].expand(n, num_ids), per_image, "amin")   # (N, N)


def camera_disjoint_merges(dist: np.ndarray, cameras: np.ndarray, eps: float) -> np.ndarray:
    """Cluster labels (N,) as CMT / CCAFL associate intra-camera IDs: every pair of IDs of two cameras closer
    than ``eps`` is an edge; edges are taken in ascending order and join two groups only if the groups'
    camera sets are disjoint. Groups of one ID are noise (−1), as in :func:`camera_constrained_linkage`."""
    dist, cameras = _check(dist, cameras)
    n = len(cameras)
    upper = np.triu(np.ones((n, n), dtype=bool), k=1) & (cameras[:, None] != cameras[None, :]) & (dist < eps)
    first, second = np.nonzero(upper)
    order = np.argsort(dist[first, second], kind="stable")
    parent = np.arange(n)
    camera_sets = [{int(c)} for c in cameras]

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in zip(first[order], second[order]):  # one pass over the edges below eps (a sparse set)
        ra, rb = root(int(a)), root(int(b))
        if ra != rb and camera_sets[ra].isdisjoint(camera_sets[rb]):
            parent[rb] = ra
            camera_sets[ra] |= camera_sets[rb]
    labels = np.array([root(i) for i in range(n)], dtype=np.int64)
    sizes = np.bincount(labels, minlength=n)
    return np.where(sizes[labels] > 1, labels, -1).astype(np.int64)
