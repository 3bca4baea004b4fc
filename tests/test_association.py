"""Camera-constrained association (pirid_lite.method.association): hand-worked cases and a naive reference."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from pirid_lite import datasets, logkeys
from pirid_lite.method.association import (adaptive_threshold, camera_constrained_linkage, cross_camera_nearest,
                                    largest_prototype, same_camera_prototypes)
from pirid_lite.config import get_config
from pirid_lite.method.jaccard import jaccard_distance
from pirid_lite.method.prototypes import linkage_prototypes
from pirid_lite.engine.runfiles import LOG
from pirid_lite.engine.trainer import Trainer

from conftest import random_ids


def naive_constrained_complete_linkage(dist: np.ndarray, cameras: np.ndarray, threshold: float) -> list[set]:
    """Textbook agglomeration: repeatedly merge the two groups with the smallest complete-linkage distance,
    while it is below ``threshold`` and the merged group holds each camera at most once."""
    groups = [{i} for i in range(len(cameras))]
    while True:
        best = None
        for a, b in itertools.combinations(range(len(groups)), 2):
            if {cameras[i] for i in groups[a]} & {cameras[i] for i in groups[b]}:
                continue
            link = max(dist[i, j] for i in groups[a] for j in groups[b])
            if link < threshold and (best is None or link < best[0]):
                best = (link, a, b)
        if best is None:
            return [g for g in groups if len(g) > 1]
        _, a, b = best
        groups[a] |= groups.pop(b)


def as_sets(labels: np.ndarray) -> list[set]:
    return [set(np.flatnonzero(labels == c).tolist()) for c in np.unique(labels[labels >= 0])]


def test_a_chain_through_one_camera_is_cut():
    # A (camera 0) - B (camera 1) - C (camera 0): DBSCAN at 0.25 chains all three; A and C are two people
    dist = np.array([[0.0, 0.1, 0.3], [0.1, 0.0, 0.2], [0.3, 0.2, 0.0]])
    labels = camera_constrained_linkage(dist, np.array([0, 1, 0]), threshold=0.5)
    assert labels.tolist() == [0, 0, -1]


@pytest.mark.parametrize("seed", range(4))
def test_linkage_equals_a_naive_agglomeration(seed):
    dist, cameras = random_ids(seed, n=18, dim=3, num_cameras=4)
    labels = camera_constrained_linkage(dist, cameras, threshold=1.2)
    expected = naive_constrained_complete_linkage(dist, cameras, 1.2)
    assert sorted(map(sorted, as_sets(labels))) == sorted(map(sorted, expected))
    assert same_camera_prototypes(labels, cameras) == 0


def test_adaptive_threshold_by_hand():
    dist = np.array([[0.0, 0.2, 0.5, 0.9],
                     [0.2, 0.0, 0.4, 0.3],
                     [0.5, 0.4, 0.0, 0.8],
                     [0.9, 0.3, 0.8, 0.0]])
    cameras = np.array([0, 0, 1, 1])
    # nearest other-camera row: 0 -> 2 (0.5), 1 -> 3 (0.3), 2 -> 1 (0.4), 3 -> 1 (0.3); median 0.35
    assert cross_camera_nearest(dist, cameras).tolist() == [0.5, 0.3, 0.4, 0.3]
    assert adaptive_threshold(dist, cameras, scale=2.0) == pytest.approx(0.7)
    assert adaptive_threshold(dist, np.zeros(4, dtype=int), scale=2.0) == 0.0  # one camera: no association


def test_truth_free_signals_by_hand():
    assignment = np.array([0, 0, 0, 1, 1, -1, 2])
    cameras = np.array([0, 1, 0, 2, 3, 0, 1])  # prototype 0 holds two IDs of camera 0
    assert same_camera_prototypes(assignment, cameras) == 1
    assert largest_prototype(assignment) == 3
    assert largest_prototype(np.full(3, -1)) == 0 and same_camera_prototypes(np.full(3, -1), cameras[:3]) == 0


def test_linkage_prototypes_respect_the_camera_rule_on_features():
    torch.manual_seed(0)
    features, cameras = torch.randn(60, 16), torch.arange(60) % 5
    prototypes = linkage_prototypes(features, cameras, scale=3.0)
    assert prototypes.num_prototypes > 0 and prototypes.threshold > 0
    assert same_camera_prototypes(prototypes.assignment, cameras) == 0
    assert largest_prototype(prototypes.assignment) <= 5


def test_camera_aware_jaccard_without_shared_cameras_is_the_plain_one():
    x = torch.randn(30, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(jaccard_distance(x, k1=6, k2=3, cameras=torch.arange(30)), jaccard_distance(x, k1=6, k2=3))
    aware = jaccard_distance(x, k1=6, k2=3, cameras=torch.arange(30) % 3)
    assert torch.allclose(aware, aware.T) and aware.min() >= 0 and aware.max() <= 1


@pytest.mark.slow
def test_a_camera_linkage_run_logs_no_prototype_with_two_ids_of_one_camera(tmp_path):
    cfg = get_config("test", variant="pirid", association="camera-linkage", epochs=3, stage1_epochs=1,
                     warmup_epochs=1, lr_milestones=(2,), iters_per_epoch=2)
    Trainer(cfg, datasets.load("tiny", verbose=False), tmp_path, progress=False, log=lambda _: None).fit()
    stage2 = [json.loads(line) for line in (tmp_path / LOG).read_text().splitlines()][1:]
    assert all(r[logkeys.SAME_CAMERA_PROTOTYPES] == 0 and r[logkeys.ASSOCIATION_THRESHOLD] > 0 for r in stage2)
