"""§2.3 prototypes: distances, DBSCAN grouping, cannot-link, oracle grouping, quality diagnostics."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pirid_lite.method.prototypes import (camera_centred, cosine_distance, form_prototypes, jaccard_distance, prototype_quality,
                                   eps_sweep, prototypes_from_groups)


def naive_jaccard(x: np.ndarray, k1: int, k2: int) -> np.ndarray:
    """k-reciprocal Jaccard distance with per-point loops, after Zhong et al. 2017 / SpCL."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    n = len(x)
    d = np.maximum(2 - 2 * x @ x.T, 0)
    np.fill_diagonal(d, 0)
    rank = np.argsort(d - 2 * np.eye(n), axis=1, kind="stable")

    def reciprocal(i, k):
        forward = rank[i, : k + 1]
        return forward[np.where(rank[forward, : k + 1] == i)[0]]

    v = np.zeros((n, n))
    for i in range(n):
        r = reciprocal(i, k1)
        expansion = r
        for c in r:
            half = reciprocal(c, int(np.around(k1 / 2)))
            if len(np.intersect1d(half, r)) > 2 / 3 * len(half):
                expansion = np.append(expansion, half)
        expansion = np.unique(expansion)
        w = np.exp(-d[i, expansion])
        v[i, expansion] = w / w.sum()
    if k2 > 1:
        v = np.stack([v[rank[i, :k2]].mean(0) for i in range(n)])
    jac = np.array([[1 - (m := np.minimum(v[i], v[j]).sum()) / (2 - m) for j in range(n)] for i in range(n)])
    return np.maximum(jac, 0)


def clustered_points(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(6, 8))
    return np.concatenate([centers[rng.integers(0, 6, 40)] + 0.5 * rng.normal(size=(40, 8)),
                           rng.normal(size=(10, 8))])


def groups_and_isolated(dim: int = 16) -> tuple[torch.Tensor, list[set[int]]]:
    """3 tight groups of 3 unit vectors around orthogonal axes + 2 isolated axes (IDs 9, 10)."""
    gen = torch.Generator().manual_seed(0)
    eye = torch.eye(dim)
    rows = [eye[g] + 0.05 * torch.randn(dim, generator=gen) for g in range(3) for _ in range(3)]
    rows += [eye[5], eye[6]]
    return F.normalize(torch.stack(rows), dim=1), [{0, 1, 2}, {3, 4, 5}, {6, 7, 8}]


def partition(assignment: torch.Tensor) -> list[set[int]]:
    return sorted(({int(i) for i in torch.nonzero(assignment == p).flatten()}
                   for p in assignment.unique() if p >= 0), key=min)


def test_cosine_distance_hand_values():
    dist = cosine_distance(torch.tensor([[1.0, 0.0], [2.0, 2.0], [-3.0, 0.0]]))
    expected = torch.tensor([[0.0, 1 - 1 / math.sqrt(2), 2.0],
                             [1 - 1 / math.sqrt(2), 0.0, 1 + 1 / math.sqrt(2)],
                             [2.0, 1 + 1 / math.sqrt(2), 0.0]])
    assert torch.allclose(dist, expected, atol=1e-6)


@pytest.mark.parametrize("k1,k2", [(6, 3), (20, 6), (4, 1)])
def test_jaccard_matches_naive_reference(k1, k2):
    x = clustered_points()
    got = jaccard_distance(torch.tensor(x), k1=k1, k2=k2).double().numpy()
    np.testing.assert_allclose(got, naive_jaccard(x, k1, k2), atol=1e-5)


def test_jaccard_is_symmetric_bounded_with_zero_diagonal():
    dist = jaccard_distance(torch.tensor(clustered_points(1), dtype=torch.float32), k1=8, k2=3)
    assert torch.allclose(dist, dist.T, atol=1e-6)
    assert dist.min() >= 0 and dist.max() <= 1
    assert torch.all(dist.diagonal() == 0)
    assert dist.max() == 1  # far-apart points share no neighbour at all


@pytest.mark.parametrize("metric,k1", [("cosine", 20), ("jaccard", 3)])
def test_three_groups_and_two_isolated_ids(metric, k1):
    features, groups = groups_and_isolated()
    protos = form_prototypes(features, torch.arange(11), eps=0.6, min_samples=2, metric=metric, k1=k1, k2=1)
    assert protos.num_prototypes == 3 and partition(protos.assignment) == groups
    assert protos.assignment[9] == protos.assignment[10] == -1
    assert protos.noise_share == pytest.approx(2 / 11)
    for p, members in enumerate(partition(protos.assignment)):
        mean = features[sorted(members)].mean(0)
        label = int(protos.assignment[min(members)])
        assert torch.allclose(protos.centroids[label], mean / mean.norm(), atol=1e-6)


def arc(angles: list[float], dim: int = 4) -> torch.Tensor:
    return torch.tensor([[math.cos(a), math.sin(a)] + [0.0] * (dim - 2) for a in angles])


def test_cannot_link_splits_cluster_with_two_ids_of_one_camera():
    features = arc([0.0, 0.05, 0.3, 0.35])
    cameras = torch.tensor([0, 1, 0, 1])
    plain = form_prototypes(features, cameras, eps=0.6, metric="cosine")
    assert partition(plain.assignment) == [{0, 1, 2, 3}]
    split = form_prototypes(features, cameras, eps=0.6, metric="cosine", cannot_link=True)
    assert partition(split.assignment) == [{0, 1}, {2, 3}]
    assert split.centroids.shape == (2, 4)


def test_cannot_link_singletons_become_noise_and_cameras_never_repeat():
    features = arc([0.0, 0.05, 0.1])  # three IDs of camera 0 in one tight cluster: nothing can be merged
    protos = form_prototypes(features, torch.tensor([0, 0, 0]), eps=0.6, metric="cosine", cannot_link=True)
    assert protos.num_prototypes == 0 and torch.all(protos.assignment == -1) and protos.noise_share == 1.0
    gen = torch.Generator().manual_seed(4)
    features = F.normalize(torch.randn(60, 3, generator=gen), dim=1)  # low-dim: big mixed clusters
    cameras = torch.randint(0, 4, (60,), generator=gen)
    protos = form_prototypes(features, cameras, eps=0.3, metric="cosine", cannot_link=True)
    assert protos.num_prototypes > 0
    for p in range(protos.num_prototypes):
        members_cameras = cameras[protos.assignment == p]
        assert len(members_cameras) >= 2 and len(members_cameras.unique()) == len(members_cameras)


def test_form_prototypes_rejects_bad_settings():
    features, _ = groups_and_isolated()
    with pytest.raises(ValueError, match="metric='euclid'"):
        form_prototypes(features, torch.arange(11), metric="euclid")
    with pytest.raises(ValueError, match="label_camera"):
        form_prototypes(features, torch.arange(5))


def test_prototypes_from_groups_drops_singletons_unless_kept():
    features = F.normalize(torch.randn(6, 4, generator=torch.Generator().manual_seed(5)), dim=1)
    groups = torch.tensor([5, 5, 7, 9, 9, 9])
    protos = prototypes_from_groups(features, groups)
    assert protos.assignment.tolist() == [0, 0, -1, 1, 1, 1] and protos.num_prototypes == 2
    mean = features[3:].mean(0)
    assert torch.allclose(protos.centroids[1], mean / mean.norm(), atol=1e-6)
    kept = prototypes_from_groups(features, groups, keep_singletons=True)
    assert kept.assignment.tolist() == [0, 0, 1, 2, 2, 2] and kept.noise_share == 0.0


def test_prototype_quality_hand_example():
    # prototypes {0,1} {2,3,4}, noise 5 and 6; true identities a a c c b c b
    assignment = torch.tensor([0, 0, 1, 1, 1, -1, -1])
    truth = np.array(["a", "a", "c", "c", "b", "c", "b"])
    quality = prototype_quality(assignment, truth)
    # purity: prototype 0 all a (2), prototype 1 majority c (2 of 3) -> 4/5
    # predicted pairs (0,1) (2,3) (2,4) (3,4), true among them (0,1) (2,3) -> precision 2/4
    # true pairs (0,1) (2,3) (2,5) (3,5) (4,6) -> recall 2/5
    assert quality["purity"] == pytest.approx(0.8)
    assert quality["pairwise_precision"] == pytest.approx(0.5)
    assert quality["pairwise_recall"] == pytest.approx(0.4)
    assert quality["pairwise_f"] == pytest.approx(2 * 0.5 * 0.4 / 0.9)
    assert quality["num_prototypes"] == 2 and quality["num_true_identities"] == 3
    assert quality["noise_share"] == pytest.approx(2 / 7)


def test_eps_sweep_rows_follow_the_clustering_of_each_eps():
    # IDs at angles 0, 0.05 (person 0, cameras 0/1) and 0.5, 0.55 (person 1, cameras 0/1): cosine distances
    # 1 - cos(0.05) ≈ 0.0012 within a person and ≥ 1 - cos(0.45) ≈ 0.0996 across people.
    features = arc([0.0, 0.05, 0.5, 0.55])
    truth = np.array([0, 0, 1, 1])
    sweep = eps_sweep(features, torch.tensor([0, 1, 0, 1]), truth, [0.0005, 0.01, 0.5], metrics=("cosine",))
    assert list(sweep["eps"]) == [0.0005, 0.01, 0.5] and set(sweep["metric"]) == {"cosine"}
    assert list(sweep["num_prototypes"]) == [0, 2, 1]          # all noise, the two people, one blob
    assert list(sweep["noise_share"]) == [1.0, 0.0, 0.0]
    assert list(sweep["pairwise_f"].round(3))[1:] == [1.0, round(2 * (2 / 6) / (1 + 2 / 6), 3)]
    linked = eps_sweep(features, torch.tensor([0, 1, 0, 1]), truth, [0.5], metrics=("cosine",), cannot_link=True)
    assert linked["num_prototypes"].item() == 2 and linked["pairwise_f"].item() == 1.0  # the blob split by camera


def test_camera_centred_matches_a_loop_over_cameras():
    features, cameras = torch.randn(9, 5, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 2, 0, 1, 2, 2, 0, 1, 0])
    expected = torch.empty_like(features)
    for camera in cameras.unique():
        rows = cameras == camera
        expected[rows] = features[rows] - features[rows].mean(0)
    assert torch.allclose(camera_centred(features, cameras), F.normalize(expected, dim=1), atol=1e-6)


def test_camera_centring_groups_people_a_camera_bias_had_split():
    """Three people, each seen by cameras 0 and 1; each camera adds a strong bias of its own (rows: 0.5·e_p +
    2·e_{3+c}). By hand: same camera cos = 4/4.25 (distance 0.06), same person cos = 0.25/4.25 (0.94), so
    cosine DBSCAN at eps 0.5 groups by camera. Centred, a person's two rows coincide (distance 0) and two people
    have cos −1/2 (distance 1.5): one prototype per person, whose K' init is still the mean of the raw rows."""
    eye = torch.eye(5)
    rows = [0.5 * eye[p] + 2 * eye[3 + c] for c in (0, 1) for p in range(3)]
    features, cameras = torch.stack(rows), torch.tensor([0, 0, 0, 1, 1, 1])
    by_camera = form_prototypes(features, cameras, eps=0.5, metric="cosine")
    assert partition(by_camera.assignment) == [{0, 1, 2}, {3, 4, 5}]
    centred = form_prototypes(features, cameras, eps=0.5, metric="cosine", camera_centring=True)
    assert partition(centred.assignment) == [{0, 3}, {1, 4}, {2, 5}]
    raw_mean = 0.5 * eye[1] + eye[3] + eye[4]
    assert torch.allclose(centred.centroids[int(centred.assignment[1])], raw_mean / raw_mean.norm(), atol=1e-6)
