import numpy as np
import pytest
import torch

from pirid_lite.diagnostics import PAIR_KINDS, pair_similarities, summarize_pairs


def test_pair_kinds_and_similarities_on_a_hand_example():
    # IDs: 0 (cam 0, person A), 1 (cam 0, person B), 2 (cam 1, person A)
    bank = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    pairs = pair_similarities(bank, label_camera=[0, 0, 1], true_identity=[7, 8, 7])
    by_kind = dict(zip(pairs["kind"].astype(str), pairs["similarity"]))
    assert by_kind[PAIR_KINDS[0]] == pytest.approx(1 / np.sqrt(2))  # (0, 2): same person, other camera
    assert by_kind[PAIR_KINDS[1]] == pytest.approx(0.0)             # (0, 1): other person, same camera
    assert by_kind[PAIR_KINDS[2]] == pytest.approx(1 / np.sqrt(2))  # (1, 2)
    assert len(pairs) == 3
    summary = summarize_pairs(pairs)
    assert summary.loc[PAIR_KINDS[0], "count"] == 1
