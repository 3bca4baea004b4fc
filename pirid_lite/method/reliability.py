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

:func:`unchanged_groups` compares two groupings, :func:`reliable_prototypes` applies both tests and
:func:`sampling_labels` turns the result into one label per training image for the P-K sampler.
"""
from __future__ import annotations

import numpy as np


def _as_labels(assignment) -> np.ndarray:
    return np.asarray(getattr(assignment, "cpu", lambda: assignment)(), dtype=np.int64).reshape(-1)


def unchanged_groups(assignment, other) -> np.ndarray:
    """(Y,) bool: whether prototype ``p`` of ``assignment`` (−1 = noise) is exactly one group of ``other``
    (the same IDs, no more and no fewer); both hold one group per memory row."""
    assignment, other = _as_labels(assignment), _as_labels(other)
    if assignment.shape != other.shape:
        raise ValueError(f"unchanged_groups: the groupings have {assignment.shape} and {other.shape} rows; "
                         "expected one entry per memory row in both")
    num = int(assignment.max()) + 1 if assignment.size and assignment.max() >= 0 else 0
    kept = assignment >= 0
    rows, theirs = assignment[kept], other[kept]
    size = np.bincount(rows, minlength=num)
    lowest = np.full(num, np.iinfo(np.int64).max)
    highest = np.full(num, np.iinfo(np.int64).min)
    np.minimum.at(lowest, rows, theirs)
    np.maximum.at(highest, rows, theirs)
    one_group = (lowest == highest) & (lowest >= 0)
    their_size = np.bincount(other[other >= 0], minlength=int(other.max()) + 1 if (other >= 0).any() else 0)
    same_size = np.zeros(num, dtype=bool)
    same_size[one_group] = their_size[lowest[one_group]] == size[one_group]
    return one_group & same_size


def reliable_prototypes(assignment, stricter, looser) -> np.ndarray:
    """(Y,) bool: the prototypes of ``assignment`` that the grouping at a stricter and at a looser threshold
    both form unchanged (compact and independent, as the module says)."""
    return unchanged_groups(assignment, stricter) & unchanged_groups(assignment, looser)


def sampling_labels(assignment, reliable, image_labels) -> np.ndarray:
    """One P-K sampling label per training image: its prototype where that prototype is ``reliable``, else
    its own intra-camera ID (shifted past the prototypes, so the two kinds never collide). Images of noise
    IDs keep their ID, as in stage 1."""
    assignment, image_labels = _as_labels(assignment), _as_labels(image_labels)
    reliable = np.asarray(reliable, dtype=bool)
    per_row = np.where(assignment >= 0, assignment, 0)
    trusted = (assignment >= 0) & reliable[per_row] if reliable.size else np.zeros_like(assignment, dtype=bool)
    row_label = np.where(trusted, assignment, len(reliable) + np.arange(len(assignment)))
    return row_label[image_labels]
