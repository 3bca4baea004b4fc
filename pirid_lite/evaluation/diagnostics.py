"""Diagnostics that read the hidden ground truth to *explain* training — never to drive it.

Why §2.3 is needed: intra-camera learning (Eq. 1–3) only ever contrasts IDs of the same camera, so the
memory rows of one person seen by two cameras are never pulled together. ``pair_similarities`` measures
exactly that on the memory bank K.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

PAIR_KINDS = ("same person, other camera", "other person, same camera", "other person, other camera")


def pair_similarities(bank: torch.Tensor, label_camera, true_identity) -> pd.DataFrame:
    """Cosine similarity of every pair of memory rows (IDs), labelled by what the pair is.

    ``bank`` (N, d): rows K[j]; ``label_camera`` (N,): camera of each ID; ``true_identity`` (N,): hidden truth.
    Two IDs of one camera are always different people (ICS), so "same person, same camera" cannot occur.
    """
    x = torch.nn.functional.normalize(torch.as_tensor(bank, dtype=torch.float32), dim=1)
    similarity = (x @ x.T).numpy()
    cams, truth = np.asarray(label_camera), np.asarray(true_identity)
    upper = np.triu_indices(len(cams), k=1)
    same_cam = cams[upper[0]] == cams[upper[1]]
    same_person = truth[upper[0]] == truth[upper[1]]
    kind = np.where(same_person, PAIR_KINDS[0], np.where(same_cam, PAIR_KINDS[1], PAIR_KINDS[2]))
    return pd.DataFrame({"kind": pd.Categorical(kind, categories=PAIR_KINDS), "similarity": similarity[upper]})


def summarize_pairs(pairs: pd.DataFrame) -> pd.DataFrame:
    """Mean / median similarity and count per pair kind."""
    return pairs.groupby("kind", observed=False)["similarity"].agg(["count", "mean", "median"]).round(3)


def cross_camera_nn_accuracy(bank: torch.Tensor, label_camera, true_identity) -> float:
    """Share of IDs whose nearest row *in another camera* (cosine) is the same person, over the IDs that have
    a same-person row in another camera at all. What §2.3's clustering can build on; 1/(#IDs) is chance."""
    x = torch.nn.functional.normalize(torch.as_tensor(bank, dtype=torch.float32), dim=1)
    cams = torch.as_tensor(np.asarray(label_camera))
    truth = torch.as_tensor(np.asarray(true_identity))
    similarity = (x @ x.T).masked_fill(cams[:, None] == cams[None, :], float("-inf"))  # other cameras only
    nearest = similarity.argmax(dim=1)
    has_match = ((truth[:, None] == truth[None, :]) & (cams[:, None] != cams[None, :])).any(dim=1)
    if not has_match.any():
        return float("nan")
    return float((truth[nearest] == truth)[has_match].float().mean())
