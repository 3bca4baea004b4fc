"""The k-reciprocal encoding Jaccard distance (Zhong et al. 2017) that §2.3's DBSCAN clusters on.

The paper's DBSCAN threshold (0.6) is the value memory/DBSCAN ReID code (SpCL, cluster-contrast) uses with
this distance. Everything is vectorised over a sparse encoding matrix V; no Python loop runs per point.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

_PAIR_CHUNK = 1 << 22  # (entry, entry) pairs processed at once in the Jaccard sum (bounds memory)


def _k_reciprocal(rank: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """R(i, k): the forward neighbours ``rank[i, :k+1]`` (self included) that also have i among theirs.

    Returns the (N, k+1) neighbour indices and a boolean mask of those that are reciprocal.
    """
    n = rank.shape[0]
    forward = rank[:, : k + 1]
    is_forward = torch.zeros(n, n, dtype=torch.bool, device=rank.device)
    is_forward.scatter_(1, forward, True)  # is_forward[i, j]: j ∈ N(i, k)
    reciprocal = is_forward[forward, torch.arange(n, device=rank.device).unsqueeze(1)]  # i ∈ N(j, k)
    return forward, reciprocal


def _expanded_neighbours(rank: torch.Tensor, k1: int) -> torch.Tensor:
    """(N, N) bool: R*(i, k1) = R(i, k1) ∪ R(c, k1/2) for every c ∈ R(i, k1) whose half set shares more
    than 2/3 of its members with R(i, k1) (k-reciprocal expansion of Zhong et al. 2017)."""
    n = rank.shape[0]
    arange = torch.arange(n, device=rank.device)
    full_idx, full_ok = _k_reciprocal(rank, k1)
    half_idx, half_ok = _k_reciprocal(rank, int(np.around(k1 / 2)))
    expanded = torch.zeros(n, n, dtype=torch.bool, device=rank.device)
    expanded[arange.unsqueeze(1).expand_as(full_idx)[full_ok], full_idx[full_ok]] = True
    anchor, slot = torch.nonzero(full_ok, as_tuple=True)          # every pair (i, c ∈ R(i, k1))
    candidate = full_idx[anchor, slot]
    cand_half, cand_ok = half_idx[candidate], half_ok[candidate]  # R(c, k1/2), padded
    shared = (expanded[anchor.unsqueeze(1), cand_half] & cand_ok).sum(1)
    accept = shared.float() > 2.0 / 3.0 * cand_ok.sum(1).float()
    rows = anchor[accept].unsqueeze(1).expand(-1, cand_half.shape[1])
    keep = cand_ok[accept]
    expanded[rows[keep], cand_half[accept][keep]] = True
    return expanded


def _summed_minimum(rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, n: int) -> torch.Tensor:
    """(n, n) Σ_k min(v[i, k], v[j, k]) of a sparse non-negative v given as COO entries (no duplicates).

    Only pairs of entries sharing a column contribute; each unordered pair is visited once (entry p of a
    column meets entries p.. of that column) and the result is symmetrised.
    """
    order = torch.argsort(cols, stable=True)
    rows, cols, vals = rows[order], cols[order], vals[order]
    counts = torch.bincount(cols, minlength=n)
    col_start = torch.cumsum(counts, 0) - counts
    position = torch.arange(len(cols), device=cols.device) - col_start[cols]  # rank of the entry in its column
    pairs_per_entry = counts[cols] - position
    bounds = torch.cumsum(pairs_per_entry, 0)
    total = torch.zeros(n * n, dtype=vals.dtype, device=vals.device)
    start = 0
    while start < len(rows):  # chunks of entries holding ≤ _PAIR_CHUNK pairs (or a single entry)
        done = int(bounds[start - 1]) if start else 0
        stop = max(start + 1, int(torch.searchsorted(bounds, done + _PAIR_CHUNK, right=True)))
        chunk = torch.arange(start, stop, device=cols.device)
        left = torch.repeat_interleave(chunk, pairs_per_entry[start:stop])
        first_pair = (bounds[start:stop] - pairs_per_entry[start:stop] - done)[left - start]
        right = left + torch.arange(len(left), device=cols.device) - first_pair  # entries p, p+1, .. of the column
        total.index_add_(0, rows[left] * n + rows[right], torch.minimum(vals[left], vals[right]))
        start = stop
    total = total.view(n, n)
    return total + total.T - torch.diag(total.diagonal())


def _row_normalised(rows: torch.Tensor, vals: torch.Tensor, n: int) -> torch.Tensor:
    return vals / torch.zeros(n, dtype=vals.dtype, device=vals.device).index_add_(0, rows, vals)[rows]


def _query_expansion(rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, nearest: torch.Tensor,
                     n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Local query expansion on a row-sorted COO matrix V: row i ← mean of the rows ``nearest[i]``."""
    k = nearest.shape[1]
    per_row = torch.bincount(rows, minlength=n)
    row_start = torch.cumsum(per_row, 0) - per_row
    source = nearest.reshape(-1)                                    # (n·k) rows to copy ...
    target = torch.arange(n, device=rows.device).repeat_interleave(k)  # ... into these rows
    copies = per_row[source]
    pair = torch.repeat_interleave(torch.arange(len(source), device=rows.device), copies)
    entry = row_start[source][pair] + torch.arange(len(pair), device=rows.device) - (torch.cumsum(copies, 0)
                                                                                     - copies)[pair]
    keys, slot = torch.unique(target[pair] * n + cols[entry], return_inverse=True)
    summed = torch.zeros(len(keys), dtype=vals.dtype, device=vals.device).index_add_(0, slot, vals[entry])
    return keys // n, keys % n, summed / k


def jaccard_distance(x: torch.Tensor, k1: int = 20, k2: int = 6, cameras: torch.Tensor | None = None) -> torch.Tensor:
    """(N, N) k-reciprocal-encoding Jaccard distance (Zhong et al. 2017), as SpCL/cluster-contrast's
    ``compute_jaccard_distance`` (no original-distance mixing).

    On L2-normalised rows: ranks by Euclidean distance (self first); N(i, k) = self + k nearest, as in Zhong
    et al.'s ``re_ranking`` (SpCL's faiss search returns k1 columns, i.e. self + k1 − 1 nearest); k-reciprocal
    sets R(i, k1) with the 2/3 expansion by R(c, round(k1/2)); V[i, j] = softmax over j ∈ R*(i) of
    −‖x_i − x_j‖²; local query expansion V[i] ← mean of V over i's k2 nearest (self included);
    d_J(i, j) = 1 − Σ min(V_i, V_j) / Σ max(V_i, V_j) = 1 − m / (2 − m) with m = Σ_k min(V_ik, V_jk).
    Vectorised with a sparse V (no loop over points); symmetric, in [0, 1], zero diagonal.

    ``cameras`` (N,), beyond Zhong et al.: camera-aware neighbours, the inter-camera half of CA-Jaccard (Chen et
    al. 2024). The neighbour sets N(i, k) are drawn from other cameras only (self still first), so a camera's
    shared look cannot fill an ID's k-reciprocal set with IDs of its own camera.
    """
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"jaccard_distance: expected (N, d) features, got {tuple(x.shape)}")
    if k1 < 1 or k2 < 1:
        raise ValueError(f"jaccard_distance: k1={k1} and k2={k2} must be >= 1")
    n = x.shape[0]
    x = F.normalize(x.float(), dim=1)
    sq_dist = (2.0 - 2.0 * x @ x.T).clamp(min=0.0).fill_diagonal_(0.0)
    k1, k2 = min(k1, n - 1), min(k2, n)
    # −2 on the diagonal ranks every point first among its own neighbours (a duplicate cannot overtake it)
    ranked = sq_dist - 2.0 * torch.eye(n, device=x.device)
    if cameras is not None:  # same-camera pairs (4 > any squared distance of unit rows) rank after all others
        cameras = torch.as_tensor(cameras, device=x.device)
        ranked = ranked + 4.0 * ((cameras[:, None] == cameras[None, :]) & ~torch.eye(n, dtype=torch.bool,
                                                                                     device=x.device))
    rank = torch.topk(ranked, max(k1 + 1, k2), dim=1, largest=False).indices
    del ranked
    rows, cols = torch.nonzero(_expanded_neighbours(rank, k1), as_tuple=True)
    vals = _row_normalised(rows, torch.exp(-sq_dist[rows, cols]), n)  # softmax of −d² over R*(i)
    del sq_dist
    if k2 > 1:
        rows, cols, vals = _query_expansion(rows, cols, vals, rank[:, :k2], n)
    shared = _summed_minimum(rows, cols, vals, n)
    dist = (1.0 - shared / (2.0 - shared)).clamp(min=0.0)
    return dist.fill_diagonal_(0.0)
