"""Tests of pirid_lite.evaluation.evaluate: CMC/mAP against a naive pure-Python reference written here from the
Market-1501 protocol (docs/DESIGN.md §3), a hand-worked example, cosine distances and feature extraction."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from sklearn.metrics.pairwise import cosine_distances

from pirid_lite import get_config
from pirid_lite.evaluation.evaluate import cosine_distmat, evaluate_model, evaluate_rank, extract_features


def naive_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
    """Protocol, query by query: order the gallery by (distance, gallery index); drop same-identity
    same-camera images; skip queries without a hit; CMC from the first hit, AP = mean precision at hits."""
    cmcs, aps = [], []
    num_g = len(g_pids)
    for i in range(len(q_pids)):
        order = sorted(range(num_g), key=lambda j: (float(distmat[i][j]), j))
        kept = [j for j in order if not (g_pids[j] == q_pids[i] and g_camids[j] == q_camids[i])]
        hits = [g_pids[j] == q_pids[i] for j in kept]
        if not any(hits):
            continue
        first = hits.index(True)
        cmcs.append([1.0 if first <= k else 0.0 for k in range(min(max_rank, num_g))])
        precisions, found = [], 0
        for position, hit in enumerate(hits, start=1):
            if hit:
                found += 1
                precisions.append(found / position)
        aps.append(sum(precisions) / len(precisions))
    return np.mean(cmcs, axis=0), float(np.mean(aps))


def random_problem(seed: int, num_q: int = 25, num_g: int = 90, num_ids: int = 8, num_cams: int = 4,
                   levels: int | None = 5, dtype=np.float32):
    """Random pids/cameras with distractors (pid 0) and a query identity (99) whose only gallery images
    share its camera; ``levels`` = integer-valued distances (many ties), None = continuous."""
    rng = np.random.default_rng(seed)
    q_pids = rng.integers(1, num_ids + 1, num_q)
    q_camids = rng.integers(0, num_cams, num_q)
    g_pids = rng.integers(0, num_ids + 1, num_g)          # 0 = distractor
    g_camids = rng.integers(0, num_cams, num_g)
    q_pids[0], q_camids[0] = 99, 1                         # only same-camera matches → skipped
    g_pids[:2], g_camids[:2] = 99, 1
    if levels is None:
        distmat = rng.normal(size=(num_q, num_g))
    else:
        distmat = rng.integers(0, levels, (num_q, num_g))
    return distmat.astype(dtype), q_pids, g_pids, q_camids, g_camids


def assert_matches_naive(args, max_rank=20, **kwargs):
    cmc, mAP = evaluate_rank(*args, max_rank=max_rank, **kwargs)
    ref_cmc, ref_map = naive_rank(*args, max_rank=max_rank)
    assert cmc.shape == ref_cmc.shape
    np.testing.assert_allclose(cmc, ref_cmc, atol=1e-12)
    assert mAP == pytest.approx(ref_map, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("levels", [3, 6, None])
def test_matches_naive_reference_with_ties_distractors_and_skipped_queries(seed, levels):
    assert_matches_naive(random_problem(seed, levels=levels))


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int64, np.int32])
def test_matches_naive_reference_for_other_dtypes(dtype):
    assert_matches_naive(random_problem(7, levels=None if np.issubdtype(dtype, np.floating) else 4,
                                        dtype=dtype))


def test_matches_naive_reference_across_chunks_and_blocks():
    args = random_problem(3, num_q=40, levels=4)
    assert_matches_naive(args, chunk_elements=7 * args[0].shape[1])        # 6 chunks of 7 queries


def test_negative_zero_ties_with_zero_and_wide_ranges_stay_exact():
    distmat, *rest = random_problem(5, levels=3)
    distmat = distmat - 1.0                                # −1, 0, 1 ...
    distmat[distmat == 0] = np.where(np.arange((distmat == 0).sum()) % 2, 0.0, -0.0)
    assert np.signbit(distmat[distmat == 0]).any()
    assert_matches_naive((distmat, *rest))
    rng = np.random.default_rng(0)                         # spans too wide for int32 keys
    wide = (10.0 ** rng.uniform(-30, 30, distmat.shape) * rng.choice([-1, 1], distmat.shape)).astype(np.float32)
    assert_matches_naive((wide, *rest))


def test_hand_worked_example():
    # gallery: g0 pid1 cam0 | g1 pid1 cam1 | g2 pid2 cam0 | g3 pid0 cam1 (distractor) | g4 pid1 cam2
    g_pids, g_camids = np.array([1, 1, 2, 0, 1]), np.array([0, 1, 0, 1, 2])
    q_pids, q_camids = np.array([1, 2]), np.array([0, 1])
    distmat = np.array([
        # q0 (pid 1, cam 0): g0 is junk (same pid+cam); kept order g2 .20, g1 .25 hit, g3 .30, g4 .90 hit
        #   → hits at ranks 2 and 4: AP = (1/2 + 2/4) / 2 = 0.5, first hit rank 2
        [0.10, 0.25, 0.20, 0.30, 0.90],
        # q1 (pid 2, cam 1): no junk; g1, g2, g3 tie at .30 → by index: g4 .10, g1, g2 hit, g3, g0
        #   → hit at rank 3: AP = 1/3, first hit rank 3
        [0.40, 0.30, 0.30, 0.30, 0.10],
    ], dtype=np.float32)
    with pytest.warns(UserWarning, match="max_rank"):
        cmc, mAP = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50)
    # CMC over 5 ranks: rank 1: none; rank 2: q0; rank ≥ 3: both.  mAP = (0.5 + 1/3) / 2 = 5/12
    np.testing.assert_allclose(cmc, [0.0, 0.5, 1.0, 1.0, 1.0])
    assert mAP == pytest.approx(5 / 12)


def test_all_queries_without_true_match_raise():
    distmat = np.zeros((2, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="none of the 2 queries"):
        evaluate_rank(distmat, [1, 2], [1, 2, 0], [0, 1], [0, 1, 1], max_rank=3)   # only same-camera matches


@pytest.mark.parametrize("bad, name", [
    (dict(distmat=np.zeros(5)), "distmat must be 2-D"),
    (dict(q_pids=np.zeros(4, dtype=int)), "q_pids"),
    (dict(g_camids=np.zeros((5, 1), dtype=int)), "g_camids"),
    (dict(g_pids=np.zeros(5)), "g_pids must be an integer array"),
])
def test_shape_and_type_errors_name_the_argument(bad, name):
    args = dict(distmat=np.zeros((3, 5), dtype=np.float32), q_pids=np.ones(3, dtype=int),
                g_pids=np.ones(5, dtype=int), q_camids=np.zeros(3, dtype=int), g_camids=np.ones(5, dtype=int))
    args.update(bad)
    with pytest.raises(ValueError, match=name):
        evaluate_rank(**args)


def test_nan_distance_of_a_true_match_is_refused():
    distmat, *rest = random_problem(1, levels=None)
    q, g = np.argwhere((rest[0][:, None] == rest[1][None]) & (rest[2][:, None] != rest[3][None]))[0]
    distmat[q, g] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate_rank(distmat, *rest)


def test_cosine_distmat_matches_sklearn():
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(6, 5)), rng.normal(size=(9, 5))
    ours = cosine_distmat(torch.as_tensor(q), torch.as_tensor(g)).numpy()
    np.testing.assert_allclose(ours, cosine_distances(q, g), atol=1e-6)


class Doubling(torch.nn.Module):
    """Returns (g, f) = (x, 2x) flattened and records the mode it was called in."""

    def __init__(self):
        super().__init__()
        self.modes = []

    def forward(self, x):
        self.modes.append(self.training)
        return x.flatten(1), 2 * x.flatten(1)


def _loader():
    # two batches of 1×1×2 "images": [1, 3], [0, 2] then [4, 0]
    images = torch.tensor([[[[1.0, 3.0]]], [[[0.0, 2.0]]], [[[4.0, 0.0]]]])
    return [(images[:2], torch.tensor([5, 6]), torch.tensor([0, 1]), torch.tensor([0, 1])),
            (images[2:], torch.tensor([7]), torch.tensor([2]), torch.tensor([2]))]


def test_extract_features_normalises_f_and_restores_the_mode():
    model = Doubling().train()
    feats, pids, camids = extract_features(model, _loader(), "cpu")
    # f = 2x, L2-normalised: [1,3]/√10, [0,1], [1,0]
    expected = torch.tensor([[1 / 10 ** 0.5, 3 / 10 ** 0.5], [0.0, 1.0], [1.0, 0.0]])
    torch.testing.assert_close(feats, expected)
    assert feats.dtype == torch.float32 and feats.device.type == "cpu"
    np.testing.assert_array_equal(pids, [5, 6, 7])
    np.testing.assert_array_equal(camids, [0, 1, 2])
    assert model.modes == [False, False] and model.training


def test_extract_features_flip_averages_image_and_mirror():
    model = Doubling().eval()
    feats, _, _ = extract_features(model, _loader(), "cpu", flip=True)
    # f(x) + f(flip x) = 2([1,3] + [3,1]) = [8, 8] → [1,1]/√2; [0,2]+[2,0] → same; [4,0]+[0,4] → same
    torch.testing.assert_close(feats, torch.full((3, 2), 2 ** -0.5))
    assert not model.training


class MeanColour(torch.nn.Module):
    def forward(self, x):
        f = x.mean(dim=(2, 3))
        return f, f


@pytest.mark.filterwarnings("ignore::UserWarning")  # fake tree: published-count warnings
def test_evaluate_model_reports_percentages_of_evaluate_rank(market_tree):
    from pirid_lite.datasets import load

    dataset = load("market1501", root=market_tree.root, verbose=False)
    cfg = get_config("test", height=8, width=4, device="cpu")
    metrics = evaluate_model(MeanColour(), dataset, cfg, torch.device("cpu"))
    assert set(metrics) == {"R1", "R5", "R10", "mAP"}
    from pirid_lite.datasets.pipeline import make_test_loader

    qf, qp, qc = extract_features(MeanColour(), make_test_loader(dataset.query, cfg), "cpu")
    gf, gp, gc = extract_features(MeanColour(), make_test_loader(dataset.gallery, cfg), "cpu")
    cmc, mAP = evaluate_rank(cosine_distmat(qf, gf).numpy(), qp, gp, qc, gc)
    assert metrics["R1"] == pytest.approx(100 * cmc[0]) and metrics["mAP"] == pytest.approx(100 * mAP)
    assert 0 <= metrics["mAP"] <= 100 and metrics["R1"] <= metrics["R5"] <= metrics["R10"]
