"""Eq. 1 (momentum update), memory initialisation and Eq. 2 (camera-masked softmax)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pirid_lite.method.memory import IntraCameraMemory, PrototypeMemory, momentum_update_


def naive_momentum_update(bank, features, labels, momentum, renormalize):
    """Eq. 1 applied literally, one sample after the other."""
    bank = bank.clone()
    touched = set()
    for f, j in zip(features, labels.tolist()):
        if j < 0:
            continue
        bank[j] = momentum * bank[j] + (1 - momentum) * f
        touched.add(j)
    if renormalize:
        for j in touched:
            bank[j] = bank[j] / bank[j].norm()
    return bank


def test_eq1_hand_example_with_repeated_label():
    bank = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    features = torch.tensor([[0.0, 1.0], [1.0, 1.0], [9.0, 9.0], [2.0, 0.0]])
    labels = torch.tensor([0, 2, -1, 0])
    momentum_update_(bank, features, labels, momentum=0.5, renormalize=False)
    # row 0: 0.5*[1,0] + 0.5*[0,1] = [.5,.5], then 0.5*[.5,.5] + 0.5*[2,0] = [1.25,.25]
    # row 2: 0.5*[1,0] + 0.5*[1,1] = [1,.5]; row 1 untouched; the -1 sample ignored
    assert torch.allclose(bank, torch.tensor([[1.25, 0.25], [0.0, 2.0], [1.0, 0.5]]))


def test_eq1_renormalises_only_touched_rows():
    bank = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    momentum_update_(bank, torch.tensor([[0.0, 1.0], [2.0, 0.0]]), torch.tensor([0, 0]), momentum=0.5)
    expected = torch.tensor([1.25, 0.25]) / math.hypot(1.25, 0.25)
    assert torch.allclose(bank[0], expected)
    assert torch.equal(bank[1:], torch.tensor([[0.0, 2.0], [1.0, 0.0]]))


@pytest.mark.parametrize("momentum", [0.0, 0.05, 0.3, 1.0])
@pytest.mark.parametrize("renormalize", [True, False])
def test_eq1_vectorised_matches_sequential_loop(momentum, renormalize):
    gen = torch.Generator().manual_seed(int(momentum * 100) + renormalize)
    bank = F.normalize(torch.randn(10, 5, generator=gen, dtype=torch.float64), dim=1)
    features = torch.randn(40, 5, generator=gen, dtype=torch.float64)
    labels = torch.randint(-1, 10, (40,), generator=gen)
    expected = naive_momentum_update(bank, features, labels, momentum, renormalize)
    momentum_update_(bank, features, labels, momentum, renormalize)
    assert torch.allclose(bank, expected, atol=1e-6)


def test_eq1_casts_and_detaches_features():
    bank = torch.zeros(2, 3, dtype=torch.float64)
    f = torch.ones(1, 3, dtype=torch.float32, requires_grad=True)
    momentum_update_(bank, f, torch.tensor([1]), momentum=0.0, renormalize=False)
    assert bank.dtype == torch.float64 and not bank.requires_grad
    assert torch.equal(bank[1], torch.ones(3, dtype=torch.float64))


def test_eq1_rejects_out_of_range_label():
    with pytest.raises(ValueError, match="out of range"):
        momentum_update_(torch.zeros(2, 3), torch.ones(1, 3), torch.tensor([5]), momentum=0.5)


def test_initialize_is_normalised_per_id_mean_of_normalised_features():
    gen = torch.Generator().manual_seed(1)
    features = torch.randn(12, 4, generator=gen)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 0, 1, 2, 2, 2])
    memory = IntraCameraMemory(torch.tensor([0, 0, 1]), dim=4)
    memory.initialize(features, labels)
    for j in range(3):
        mean = torch.stack([f / f.norm() for f, y in zip(features, labels) if y == j]).mean(0)
        assert torch.allclose(memory.features[j], mean / mean.norm(), atol=1e-6)


def test_initialize_names_ids_without_features():
    memory = IntraCameraMemory(torch.tensor([0, 0, 1, 1]), dim=2)
    with pytest.raises(ValueError, match=r"\[1, 3\]"):
        memory.initialize(torch.ones(2, 2), torch.tensor([0, 2]))


def test_eq2_masks_other_cameras_hand_example():
    memory = IntraCameraMemory(torch.tensor([0, 0, 1]), dim=2, temperature=0.5)
    memory.features.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]))
    f = torch.tensor([[3.0, 0.0], [3.0, 0.0]])  # normalised to [1, 0] before the product
    probs = memory.log_probs(f, torch.tensor([0, 1])).exp()
    # camera 0: logits [1/0.5, 0/0.5] over IDs 0, 1 -> softmax([2, 0]); camera 1 owns ID 2 only
    e2 = math.exp(2.0)
    expected = torch.tensor([[e2 / (e2 + 1), 1 / (e2 + 1), 0.0], [0.0, 0.0, 1.0]])
    assert torch.allclose(probs, expected, atol=1e-6)


def test_eq2_random_probabilities_sum_to_one_within_own_camera():
    gen = torch.Generator().manual_seed(2)
    label_camera = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    memory = IntraCameraMemory(label_camera, dim=6, temperature=0.05)
    memory.initialize(torch.randn(9, 6, generator=gen), torch.arange(9))
    camids = torch.tensor([0, 1, 2, 2, 1])
    probs = memory.log_probs(torch.randn(5, 6, generator=gen), camids).exp()
    own = label_camera.unsqueeze(0) == camids.unsqueeze(1)
    assert torch.all(probs[~own] == 0)
    assert torch.allclose((probs * own).sum(1), torch.ones(5), atol=1e-6)


def test_memory_update_uses_eq1_with_its_momentum():
    memory = IntraCameraMemory(torch.tensor([0, 1]), dim=2, momentum=0.25, renormalize=False)
    memory.features.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    memory.update(torch.tensor([[0.0, 4.0]]), torch.tensor([1]))
    assert torch.allclose(memory.features, torch.tensor([[1.0, 0.0], [0.0, 0.25 + 0.75 * 4.0]]))


def test_prototype_memory_logits_and_update_ignore_noise():
    centroids = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    memory = PrototypeMemory(centroids, momentum=0.5, temperature=0.1, renormalize=False)
    logits = memory.logits(torch.tensor([[3.0, 4.0]]))  # normalised: [0.6, 0.8]
    assert torch.allclose(logits, torch.tensor([[6.0, 8.0]]))
    memory.update(torch.tensor([[2.0, 0.0], [5.0, 5.0]]), torch.tensor([1, -1]))
    assert torch.allclose(memory.features, torch.tensor([[1.0, 0.0], [1.0, 0.5]]))
