"""Eq. 3 (intra-camera loss), Eq. 4 (inter-camera ID loss), Eq. 5 (batch-hard triplet), Eq. 7 (sum)."""
from __future__ import annotations

import math

import pytest
import torch

from pirid_lite.method.losses import StepInputs, batch_hard_triplet_loss, inter_id_loss, intra_camera_loss, total_loss


def test_eq3_weights_each_camera_by_its_image_count():
    # camera 0 has 1 image, camera 1 has 3: L = nll_0 + (nll_1 + nll_2 + nll_3) / 3
    log_probs = torch.log(torch.tensor([[0.5, 0.5, 0.0, 0.0],
                                        [0.0, 0.0, 0.25, 0.75],
                                        [0.0, 0.0, 0.5, 0.5],
                                        [0.0, 0.0, 0.8, 0.2]]))
    labels = torch.tensor([0, 3, 2, 2])
    camids = torch.tensor([0, 1, 1, 1])
    expected = -math.log(0.5) + (-math.log(0.75) - math.log(0.5) - math.log(0.8)) / 3
    assert intra_camera_loss(log_probs, labels, camids).item() == pytest.approx(expected, rel=1e-6)


def test_eq3_matches_per_camera_loop_on_random_batch():
    gen = torch.Generator().manual_seed(0)
    log_probs = torch.log_softmax(torch.randn(20, 9, generator=gen), dim=1)
    labels = torch.randint(0, 9, (20,), generator=gen)
    camids = torch.randint(0, 4, (20,), generator=gen)
    expected = sum(-log_probs[camids == c, :].gather(1, labels[camids == c].unsqueeze(1)).mean()
                   for c in camids.unique())
    assert torch.allclose(intra_camera_loss(log_probs, labels, camids), expected)


def test_eq4_hand_computation_ignores_noise_images():
    logits = torch.tensor([[1.0, 2.0, 0.0], [5.0, -3.0, 0.0], [0.0, 0.0, 3.0]], requires_grad=True)
    labels = torch.tensor([1, -1, 0])
    row0 = -math.log(math.exp(2) / (math.exp(1) + math.exp(2) + 1))
    row2 = -math.log(1 / (2 + math.exp(3)))
    loss = inter_id_loss(logits, labels)
    assert loss.item() == pytest.approx((row0 + row2) / 2, rel=1e-6)
    loss.backward()
    assert torch.all(logits.grad[1] == 0)


def test_eq4_no_valid_image_gives_zero_with_graph():
    logits = torch.randn(3, 4, requires_grad=True)
    loss = inter_id_loss(logits, torch.full((3,), -1))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(logits.grad == 0)


def test_eq5_one_dimensional_hand_example():
    # anchors 0,1 (label 0 at 0 and 1), 2,3 (label 1 at 3 and 7): only anchor 2 violates the margin:
    # d_ap = 4, d_an = 2 -> 0.1 + 4 - 2 = 2.1. The noise point at 3.5 would be anchor 2/3's closest
    # negative if counted; the lone label-2 point has no positive, so it is skipped as an anchor.
    g = torch.tensor([[0.0], [1.0], [3.0], [7.0], [3.5], [100.0]])
    labels = torch.tensor([0, 0, 1, 1, -1, 2])
    loss = batch_hard_triplet_loss(g, labels, margin=0.1)
    assert loss.item() == pytest.approx(2.1 / 4, rel=1e-5)


def naive_batch_hard(g, labels, margin):
    losses = []
    for a in range(len(g)):
        if labels[a] < 0:
            continue
        pos = [torch.dist(g[a], g[p]) for p in range(len(g)) if p != a and labels[p] == labels[a]]
        neg = [torch.dist(g[a], g[n]) for n in range(len(g)) if labels[n] >= 0 and labels[n] != labels[a]]
        if pos and neg:
            losses.append(torch.relu(margin + max(pos) - min(neg)))
    return torch.stack(losses).mean()


def test_eq5_matches_naive_loop_on_random_batch():
    gen = torch.Generator().manual_seed(3)
    g = torch.randn(24, 8, generator=gen, dtype=torch.float64)
    labels = torch.randint(-1, 6, (24,), generator=gen)
    assert torch.allclose(batch_hard_triplet_loss(g, labels, margin=0.3).double(),
                          naive_batch_hard(g, labels, 0.3), atol=1e-5)


def test_eq5_no_valid_anchor_gives_zero_with_finite_gradient():
    g = torch.randn(4, 3, requires_grad=True)
    loss = batch_hard_triplet_loss(g, torch.tensor([0, 1, -1, 2]), margin=0.1)  # no positives at all
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(g.grad).all()


def test_eq5_gradient_finite_with_identical_features():
    g = torch.zeros(4, 3, requires_grad=True)
    batch_hard_triplet_loss(g, torch.tensor([0, 0, 1, 1]), margin=0.1).backward()
    assert torch.isfinite(g.grad).all()


def test_eq7_unweighted_sum_of_present_terms():
    intra, inter, triplet = torch.tensor(1.5), torch.tensor(0.25), torch.tensor(2.0)
    assert total_loss(intra).item() == 1.5
    assert total_loss(intra, inter).item() == 1.75
    assert total_loss(intra, inter, triplet).item() == 3.75
    assert total_loss(intra, None, triplet).item() == 3.5


def test_batch_hard_pairs_names_the_pairs_the_loss_uses():
    # 1-d points: labels 0 at 0 and 1, label 1 at 3 and 7, one noise image at 1.1
    g = torch.tensor([[0.0], [1.0], [3.0], [7.0], [1.1]])
    labels = torch.tensor([0, 0, 1, 1, -1])
    from pirid_lite.method.losses import batch_hard_pairs
    pairs = batch_hard_pairs(g, labels)
    assert pairs.anchors.tolist() == [True, True, True, True, False]
    assert pairs.positive_index[:4].tolist() == [1, 0, 3, 2]
    assert pairs.negative_index[:4].tolist() == [2, 2, 1, 1]
    assert torch.allclose(pairs.positive_distance[:4], torch.tensor([1.0, 1.0, 4.0, 4.0]), atol=1e-4)
    assert torch.allclose(pairs.negative_distance[:4], torch.tensor([3.0, 2.0, 2.0, 6.0]), atol=1e-4)
    hinge = torch.relu(0.1 + pairs.positive_distance[:4] - pairs.negative_distance[:4]).mean()
    assert torch.isclose(batch_hard_triplet_loss(g, labels, margin=0.1), hinge, atol=1e-5)


def test_eq7_weights_scale_each_present_term():
    intra, inter, triplet = torch.tensor(1.5), torch.tensor(0.25), torch.tensor(2.0)
    assert total_loss(intra, inter, triplet, weights=(1.0, 2.0, 0.5)).item() == 1.5 + 0.5 + 1.0
    assert total_loss(intra, None, triplet, weights=(2.0, 9.0, 1.0)).item() == 5.0
    with pytest.raises(ValueError, match="2 weights"):
        total_loss(intra, inter, triplet, weights=(1.0, 1.0))


def test_the_recipe_carries_weights_and_the_margin_from_the_config():
    from pirid_lite.config import get_config
    from pirid_lite.method.losses import build_loss_recipe
    recipe = {t.name: t for t in build_loss_recipe(get_config("test", triplet_weight=0.5, triplet_margin=0.3))}
    assert recipe["triplet"].weight == 0.5 and recipe["triplet"].settings == {"margin": 0.3}
    assert recipe["intra"].weight == recipe["inter_id"].weight == 1.0  # Eq. 7: the paper's weights
    # the margin reaches Eq. 5: two images of one label at distance 1, one of another at distance 1.2
    g = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.2]])
    inputs = StepInputs(g, g, torch.zeros(3, 3), torch.zeros(3), torch.zeros(3), torch.tensor([0, 0, 1]))
    expected = batch_hard_triplet_loss(g, torch.tensor([0, 0, 1]), margin=0.3)
    assert recipe["triplet"](inputs).item() == pytest.approx(expected.item())
