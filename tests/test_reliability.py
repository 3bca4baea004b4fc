"""Issue 28's pieces: reliable prototypes and their sampling labels (pirid_lite.method.reliability), the peers'
association (image-level min-Jaccard, camera-disjoint merges) — hand-worked cases and naive references — and a
short run of each through the trainer."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from pirid_lite import datasets, logkeys
from pirid_lite.config import get_config
from pirid_lite.engine.runfiles import LOG
from pirid_lite.engine.trainer import Trainer
from pirid_lite.errors import UserError
from pirid_lite.method.association import camera_disjoint_merges, min_image_distance, same_camera_prototypes
from pirid_lite.method.groupings import GROUPINGS, ImageFeatures, associate, reliability
from pirid_lite.method.reliability import (mutual_nearest_prototypes, reliable_prototypes, sampling_labels,
                                          unchanged_groups)

from conftest import random_ids


def as_sets(labels) -> set[frozenset]:
    labels = np.asarray(labels)
    return {frozenset(np.flatnonzero(labels == c).tolist()) for c in np.unique(labels[labels >= 0])}


# --------------------------------------------------------------------------- reliability
def test_unchanged_groups_by_hand():
    grouping = np.array([0, 0, 1, 1, 1, 2, 2, -1])
    other = np.array([5, 5, 3, 3, -1, 0, 0, 0])   # {0,1} kept; {2,3,4} lost row 4; {5,6} gained row 7
    assert unchanged_groups(grouping, other).tolist() == [True, False, False]


def test_unchanged_groups_equals_a_set_comparison():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.integers(-1, 5, size=30), rng.integers(-1, 5, size=30)
        a = np.where(np.isin(a, np.unique(a[a >= 0])), a, -1)
        relabelled = np.full_like(a, -1)
        relabelled[a >= 0] = np.unique(a[a >= 0], return_inverse=True)[1]
        groups_b = as_sets(b)
        expected = [frozenset(np.flatnonzero(relabelled == p).tolist()) in groups_b
                    for p in range(relabelled.max() + 1)]
        assert unchanged_groups(relabelled, b).tolist() == expected


def test_reliable_needs_both_the_stricter_and_the_looser_grouping():
    grouping = np.array([0, 0, 1, 1, 2, 2])
    stricter = np.array([0, 0, -1, -1, 1, 1])       # prototype 1 falls apart: not compact
    looser = np.array([0, 0, 1, 1, 1, 1])           # prototypes 1 and 2 merge: not independent
    assert reliable_prototypes(grouping, stricter, looser).tolist() == [True, False, False]


def test_sampling_labels_by_hand():
    assignment = np.array([0, 0, 1, 1, -1])          # IDs 0-1 reliable prototype 0, IDs 2-3 unreliable 1, ID 4 noise
    image_ids = np.array([0, 1, 1, 2, 3, 4, 4])
    labels = sampling_labels(assignment, np.array([True, False]), image_ids)
    # prototype 0 for IDs 0 and 1; every other image its own ID shifted past the 2 prototypes
    assert labels.tolist() == [0, 0, 0, 2 + 2, 2 + 3, 2 + 4, 2 + 4]


def test_reliability_trusts_every_prototype_of_a_grouping_without_threshold():
    bank = torch.nn.functional.normalize(torch.randn(6, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    protos = GROUPINGS["identity"](bank, torch.zeros(6, dtype=torch.long), get_config("test"), None)
    assert reliability(GROUPINGS["identity"], protos, bank, torch.zeros(6), get_config("test"), None).all()


def test_reliability_of_the_linkage_on_two_tight_pairs_and_a_loose_one():
    # three people in cameras 0/1: two pairs at distance ~0.01, one at ~0.5 (the threshold sits between)
    angles = torch.tensor([0.0, 0.1, 1.5, 1.6, 3.0, 4.0])
    bank = torch.stack([angles.cos(), angles.sin()], dim=1)
    cameras = torch.tensor([0, 1, 0, 1, 0, 1])
    cfg = get_config("test", association="camera-linkage", linkage_scale=2.0, linkage_metric="cosine",
                     camera_centring=False, stage2_sampling="reliable-prototype", reliability_margin=0.2)
    protos = associate(bank, cameras, cfg)
    assert as_sets(protos.assignment.numpy()) == {frozenset({0, 1}), frozenset({2, 3})}
    for signal in ("threshold", "mutual-nn"):  # both trust the two tight pairs
        trusted = reliability(GROUPINGS["camera-linkage"], protos, bank, cameras, cfg.replace(reliability=signal), None)
        assert trusted.tolist() == [True, True]


def test_reliability_margin_is_checked():
    with pytest.raises(UserError, match="reliability_margin"):
        get_config("test", reliability_margin=1.0)


# --------------------------------------------------------------------------- the peers' association
def test_min_image_distance_equals_a_naive_double_loop():
    rng = np.random.default_rng(1)
    points = rng.normal(size=(14, 3))
    dist = np.linalg.norm(points[:, None] - points[None], axis=2)
    ids = rng.integers(0, 5, size=14)
    fast = min_image_distance(torch.as_tensor(dist), torch.as_tensor(ids), 5).numpy()
    for a, b in itertools.product(range(5), repeat=2):
        pairs = [dist[i, j] for i in np.flatnonzero(ids == a) for j in np.flatnonzero(ids == b)]
        assert fast[a, b] == pytest.approx(min(pairs) if pairs else np.inf)


def naive_camera_disjoint(dist, cameras, eps) -> set[frozenset]:
    """Ascending edges, merge while the groups' camera sets are disjoint, written with sets only."""
    groups = [{i} for i in range(len(cameras))]
    edges = sorted((dist[a, b], a, b) for a, b in itertools.combinations(range(len(cameras)), 2)
                   if cameras[a] != cameras[b] and dist[a, b] < eps)
    for _, a, b in edges:
        ga = next(g for g in groups if a in g)
        gb = next(g for g in groups if b in g)
        if ga is not gb and not {cameras[i] for i in ga} & {cameras[i] for i in gb}:
            groups.remove(gb)
            ga |= gb
    return {frozenset(g) for g in groups if len(g) > 1}


@pytest.mark.parametrize("seed", range(4))
def test_camera_disjoint_merges_equal_a_naive_reference(seed):
    dist, cameras = random_ids(seed, n=16, dim=2, num_cameras=4)
    labels = camera_disjoint_merges(dist, cameras, eps=1.0)
    assert as_sets(labels) == naive_camera_disjoint(dist, cameras, 1.0)
    assert same_camera_prototypes(labels, cameras) == 0


def test_camera_disjoint_merges_by_hand():
    # A(cam 0) - B(cam 1) at 0.1, B - C(cam 0) at 0.2: C cannot join {A, B} (camera 0 taken); D (cam 2) joins at 0.3
    dist = np.array([[0, .1, .5, .3], [.1, 0, .2, .6], [.5, .2, 0, .9], [.3, .6, .9, 0]])
    assert camera_disjoint_merges(dist, np.array([0, 1, 0, 2]), eps=0.4).tolist() == [0, 0, -1, 0]


def test_min_jaccard_needs_the_images():
    cfg = get_config("test", association="min-jaccard")
    with pytest.raises(ValueError, match="images"):
        GROUPINGS["min-jaccard"](torch.eye(3), torch.arange(3), cfg, None)
    features = torch.nn.functional.normalize(torch.randn(9, 4, generator=torch.Generator().manual_seed(2)), dim=1)
    protos = associate(torch.eye(3, 4), torch.arange(3), cfg, ImageFeatures(features, torch.arange(9) % 3))
    assert protos.assignment.shape == (3,)


# --------------------------------------------------------------------------- through the trainer
@pytest.mark.slow
@pytest.mark.parametrize("overrides", [dict(association="camera-linkage", stage2_sampling="reliable-prototype",
                                            reliability="threshold"),
                                       dict(association="camera-linkage", stage2_sampling="reliable-prototype"),
                                       dict(association="min-jaccard", min_jaccard_eps=0.95,
                                            stage2_sampling="reliable-prototype")])
def test_a_run_that_samples_by_reliable_prototype_logs_what_it_drew(tmp_path, overrides):
    cfg = get_config("test", variant="pirid", epochs=3, stage1_epochs=1, warmup_epochs=1, lr_milestones=(2,),
                     iters_per_epoch=2, **overrides)
    Trainer(cfg, datasets.load("tiny", verbose=False), tmp_path, progress=False, log=lambda _: None).fit()
    stage2 = [json.loads(line) for line in (tmp_path / LOG).read_text().splitlines()][1:]
    for record in stage2:
        assert record[logkeys.SAME_CAMERA_PROTOTYPES] == 0
        assert 0.0 <= record[logkeys.PROTOTYPE_SAMPLED_SHARE] <= 1.0
        assert 0.0 <= record[logkeys.RELIABLE_SHARE] <= 1.0
        assert logkeys.SAMPLING_PRECISION in record
        assert record[logkeys.SAMPLED_BY] in ("reliable-prototype", "intra-id")


def naive_mutual_nearest(assignment, dist, cameras) -> list[bool]:
    out = []
    for p in range(assignment.max() + 1):
        members = np.flatnonzero(assignment == p)
        ok = len({cameras[i] for i in members}) == len(members)
        for i in members:
            for j in members:
                if i != j:
                    candidates = [k for k in range(len(cameras)) if cameras[k] == cameras[j] and k != i]
                    ok &= min(candidates, key=lambda k: dist[i, k]) == j
        out.append(bool(ok))
    return out


@pytest.mark.parametrize("seed", range(4))
def test_mutual_nearest_prototypes_equal_a_naive_reference(seed):
    dist, cameras = random_ids(seed, n=20, dim=2, num_cameras=3)
    assignment = camera_disjoint_merges(dist, cameras, eps=1.5)
    assignment[assignment >= 0] = np.unique(assignment[assignment >= 0], return_inverse=True)[1]
    if seed == 0:  # one prototype with two IDs of one camera: never reliable
        assignment[np.flatnonzero(cameras == 0)[:2]] = assignment.max() + 1
    assert mutual_nearest_prototypes(assignment, dist, cameras).tolist() == naive_mutual_nearest(assignment, dist, cameras)


def test_mutual_nearest_by_hand():
    # IDs 0 (cam 0) and 1 (cam 1) are each other's nearest; ID 2 (cam 1) is nearer to 0 than 3 is, so {2, 3} fails
    dist = np.array([[0, .1, .2, .9], [.1, 0, .8, .7], [.2, .8, 0, .6], [.9, .7, .6, 0]])
    assert mutual_nearest_prototypes(np.array([0, 0, 1, 1]), dist, np.array([0, 1, 1, 0])).tolist() == [True, False]
