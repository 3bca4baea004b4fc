"""Which prototypes a stage-2 batch may trust, and the P-K sampling labels that follow (beyond the paper).

§2.3 gives every epoch a set of prototypes; §2.4's batches are drawn by intra-camera ID, so the triplet term
(Eq. 5) never sees a positive from another camera. Drawing batches by prototype instead gives it those
positives, but a batch built on a wrong merge teaches it a wrong one. SpCL (Ge et al., NeurIPS 2020) keeps a
cluster only when re-clustering at a stricter and at a looser setting leaves it as it is; here the same test
decides, per prototype and without the truth, whether its images are drawn by prototype or, as before, by
intra-camera ID:

* **compact** — the grouping at ``(1 − margin) ×`` its threshold forms the same group (every merge inside it
  happened well below the threshold);
* **independent** — the grouping at ``(1 + margin) ×`` its threshold still forms the same group (nothing
  else was about to join it).

:func:`unchanged_groups` compares two groupings and :func:`reliable_prototypes` applies both tests
(``reliability="threshold"``). :func:`mutual_nearest_prototypes` is the other signal (``"mutual-nn"``): every
two members are each other's nearest ID across cameras. On validation instance 1 (seed 0, at the end of stage 1
and at epoch 15) it was the sharper one: 1 of 102 prototypes trusted at the end of stage 1 (precision 0.14 over
all of them), 78 of 142 at epoch 15 with pairwise precision 0.96 (0.72 over all; the threshold test at ±0.2:
41 at 0.85). :func:`sampling_labels` turns the result into one label per training image for the P-K sampler.
"""
from __future__ import annotations

import numpy as np


def _as_labels(assignment) -> np.ndarray:
    return np.asarray(getattr(assignment, "cpu", lambda: assignment)(), dtype=np.int64).reshape(-1)


def group_count(labels) -> int:
    """The number of groups in a labelling with groups 0..Y−1 and −1 = noise: Y."""
    labels = _as_labels(labels)
    return int(labels.max()) + 1 if labels.size and labels.max() >= 0 else 0


def unchanged_groups(assignment, other) -> np.ndarray:
    """(Y,) bool: whether prototype ``p`` of ``assignment`` (−1 = noise) is exactly one group of ``other``
    (the same IDs, no more and no fewer); both hold one group per memory row."""
    assignment, other = _as_labels(assignment), _as_labels(other)
    if assignment.shape != other.shape:
        raise ValueError(f"unchanged_groups: the groupings have {assignment.shape} and {other.shape} rows; "
                         "expected one entry per memory row in both")
    num = group_count(assignment)
    kept = assignment >= 0
    rows, theirs = assignment[kept], other[kept]
    size = np.bincount(rows, minlength=num)
    lowest = np.full(num, np.iinfo(np.int64).max)
    highest = np.full(num, np.iinfo(np.int64).min)
    np.minimum.at(lowest, rows, theirs)
    np.maximum.at(highest, rows, theirs)
    one_group = (lowest == highest) & (lowest >= 0)
    their_size = np.bincount(other[other >= 0], minlength=group_count(other))
    same_size = np.zeros(num, dtype=bool)
    same_size[one_group] = their_size[lowest[one_group]] == size[one_group]
    return one_group & same_size


def reliable_prototypes(assignment, stricter, looser) -> np.ndarray:
    """(Y,) bool: the prototypes of ``assignment`` that the grouping at a stricter and at a looser threshold
    both form unchanged (compact and independent, as the module says)."""
    return unchanged_groups(assignment, stricter) & unchanged_groups(assignment, looser)


def trusted_assignment(assignment, reliable=None) -> np.ndarray:
    """``assignment`` with every prototype that ``reliable`` (Y,) does not trust set to −1 (noise); all are
    trusted when ``reliable`` is None (sampling by every prototype, or the truth)."""
    assignment = _as_labels(assignment)
    if reliable is None:
        return assignment
    reliable = np.asarray(reliable, dtype=bool)
    trusted = (assignment >= 0) & (reliable[np.maximum(assignment, 0)] if reliable.size else False)
    return np.where(trusted, assignment, -1)


def sampling_labels(assignment, reliable, image_labels) -> np.ndarray:
    """One P-K sampling label per training image: its prototype where that prototype is ``reliable``, else
    its own intra-camera ID (shifted past the prototypes, so the two kinds never collide). Images of noise
    IDs keep their ID, as in stage 1."""
    assignment, image_labels = _as_labels(assignment), _as_labels(image_labels)
    used = trusted_assignment(assignment, reliable)
    return np.where(used >= 0, used, group_count(assignment) + np.arange(len(assignment)))[image_labels]


def mutual_nearest_prototypes(assignment, dist, cameras) -> np.ndarray:
    """(Y,) bool: the prototypes whose members are each other's nearest ID across cameras — for every two
    members i and j, j is the ID of j's camera nearest to i (``dist`` (N, N) between the memory rows,
    ``cameras`` (N,)). A prototype with two IDs of one camera is never reliable."""
    assignment, cameras = _as_labels(assignment), _as_labels(cameras)
    dist = np.asarray(dist, dtype=np.float64)
    n, num = len(assignment), group_count(assignment)
    num_cameras = int(cameras.max()) + 1 if n else 0
    # nearest[i, c]: the ID of camera c nearest to ID i (itself excluded); one pass per camera
    dist = dist.copy()
    np.fill_diagonal(dist, np.inf)
    nearest = np.stack([np.flatnonzero(cameras == c)[dist[:, cameras == c].argmin(axis=1)]
                        if (cameras == c).any() else np.full(n, -1) for c in range(num_cameras)], axis=1)
    kept = np.flatnonzero(assignment >= 0)
    member = np.full((num, num_cameras), -1)                                      # member of p in camera c
    member[assignment[kept], cameras[kept]] = kept
    per_camera = np.zeros((num, num_cameras), dtype=np.int64)
    np.add.at(per_camera, (assignment[kept], cameras[kept]), 1)
    others = member[assignment[kept]]                                             # (kept, C)
    agrees = (others < 0) | (others == kept[:, None]) | (nearest[kept] == others)
    reliable = (per_camera <= 1).all(axis=1)
    np.logical_and.at(reliable, assignment[kept], agrees.all(axis=1))
    return reliable
