"""Retrieval evaluation (docs/DESIGN.md §3): features, cosine distances, CMC and mAP (Market-1501 protocol).

Protocol, for every query: gallery images with the query's identity **and** camera are removed ("junk");
the remaining gallery images with the query's identity are its true matches; a query without any true match
left is skipped. Gallery distractors (identity 0) stay. The gallery is ranked by ascending distance with
ties broken by gallery index (a *stable* sort), so a naive reference using ``np.argsort(kind="stable")``
gives exactly the same CMC and AP.

``evaluate_rank`` never sorts a whole gallery: the rank of a true match is one plus the number of kept
gallery images that precede it, so only the distances up to a query's *last* true match matter. One
vectorised comparison over the distance matrix keeps those; they are sorted once per block of queries (as
packed integer keys) and each true match's rank is read off with ``searchsorted``. No Python
loop runs per query; the work beyond the one pass over the matrix is proportional to how many gallery
images rank above the queries' worst true matches.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..distributed import SINGLE_PROCESS, DistributedContext
from ..utils import resolve_device

def _or_auto(device: str | torch.device | None) -> torch.device:
    """The given device, or the best available one for the notebooks' calls that name none (a training
    run resolves its device once and passes it down)."""
    return device if isinstance(device, torch.device) else resolve_device("auto" if device is None else device)


DEFAULT_CHUNK_ELEMENTS = 1 << 24  # distances held per chunk on the device (64 MiB of float32)


# --------------------------------------------------------------------------- features and distances
def cosine_distmat(q: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``1 − cos(q_i, g_j)`` for all pairs: ``(m, d) × (n, d) → (m, n)``, after L2-normalising the rows."""
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"cosine_distmat: expected q (m, d) and g (n, d) with the same d, "
                         f"got {tuple(q.shape)} and {tuple(g.shape)}")
    return 1.0 - F.normalize(q.float(), dim=1) @ F.normalize(g.float(), dim=1).T


def _autocast(device: torch.device, amp: bool):
    """Mixed precision on CUDA only (bf16 where supported, else fp16); a no-op context on CPU."""
    enabled = amp and device.type == "cuda"
    dtype = torch.bfloat16 if enabled and torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=enabled)


def _memory_format(model: torch.nn.Module) -> torch.memory_format:
    """channels_last when the model's first convolution is stored so (the input then matches it)."""
    first = next((p for p in model.parameters() if p.dim() == 4), None)
    if first is not None and not first.is_contiguous() and first.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def extract_features(model: torch.nn.Module, loader, device: str | torch.device | None = None,
                     flip: bool = False, amp: bool = True) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """L2-normalised BN features f(x) (§2.2) of every image of ``loader``.

    ``loader`` yields ``(images, pids, camids, indices)``; ``model(images)`` returns ``(g, f)`` and ``f`` is
    used. ``flip`` averages f(x) and f of the horizontally mirrored image before normalising. The model is
    put in eval mode and its previous mode restored. Returns ``(feats float32 CPU (n, d), pids, camids)``.
    """
    device = _or_auto(device)
    was_training = model.training
    model.eval()
    memory_format = _memory_format(model)
    feats, pids, camids = [], [], []
    try:
        with torch.inference_mode(), _autocast(device, amp):
            for images, pid, camid, _ in tqdm(loader, desc="extracting features", unit="batch", disable=None,
                                              leave=False):
                images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
                f = model(images)[1].float()
                if flip:
                    f = f + model(images.flip(-1))[1].float()
                feats.append(F.normalize(f, dim=1).cpu())
                pids.append(torch.as_tensor(pid).reshape(-1))
                camids.append(torch.as_tensor(camid).reshape(-1))
    finally:
        model.train(was_training)
    if not feats:
        raise ValueError("extract_features: the loader yielded no batch (empty image list?)")
    return torch.cat(feats), torch.cat(pids).numpy(), torch.cat(camids).numpy()


# --------------------------------------------------------------------------- CMC and mAP
def _as_rank_inputs(distmat, q_pids, g_pids, q_camids, g_camids) -> tuple[np.ndarray, ...]:
    """Numpy views of the inputs with their shapes checked against ``distmat (num_query, num_gallery)``."""
    distmat = np.asarray(distmat)
    if distmat.ndim != 2:
        raise ValueError(f"evaluate_rank: distmat must be 2-D (num_query, num_gallery), got shape {distmat.shape}")
    if not (np.issubdtype(distmat.dtype, np.floating) or np.issubdtype(distmat.dtype, np.integer)):
        raise ValueError(f"evaluate_rank: distmat must hold real numbers, got dtype {distmat.dtype}")
    num_q, num_g = distmat.shape
    out = [np.ascontiguousarray(distmat)]
    for name, value, size, axis in (("q_pids", q_pids, num_q, "num_query"), ("g_pids", g_pids, num_g, "num_gallery"),
                                    ("q_camids", q_camids, num_q, "num_query"),
                                    ("g_camids", g_camids, num_g, "num_gallery")):
        value = np.asarray(value)
        if value.shape != (size,) or not np.issubdtype(value.dtype, np.integer):
            raise ValueError(f"evaluate_rank: {name} must be an integer array of shape ({axis},) = ({size},) "
                             f"matching distmat {distmat.shape}; got shape {value.shape}, dtype {value.dtype}")
        out.append(np.ascontiguousarray(value, dtype=np.int64))
    if num_q == 0 or num_g == 0:
        raise ValueError(f"evaluate_rank: empty query or gallery (distmat shape {distmat.shape})")
    return tuple(out)


@dataclass
class TrueMatches:
    """Each query's true matches in ranking order, padded to ``max(num_valid)`` columns.

    ``distance``/``index``: distance and gallery index of the k-th true match (sorted by distance, then
    index); ``junk_before``: junk images (same identity and camera) that precede it in the stable order;
    ``num_valid``: true matches per query (0 = query skipped).
    """

    distance: torch.Tensor     # (Q, M) distmat dtype
    index: torch.Tensor        # (Q, M) int64
    junk_before: torch.Tensor  # (Q, M) int64
    num_valid: torch.Tensor    # (Q,) int64


def _identity_groups(q_pids: torch.Tensor, g_pids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gallery indices grouped by identity: ``(order, start, size)`` such that the gallery images of query
    i's identity are ``order[start[i] : start[i] + size[i]]`` in increasing gallery index."""
    order = torch.argsort(g_pids, stable=True)
    pids, counts = torch.unique_consecutive(g_pids[order], return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.searchsorted(pids, q_pids).clamp(max=len(pids) - 1)
    found = pids[pos] == q_pids
    return order, torch.where(found, starts[pos], 0), torch.where(found, counts[pos], 0)


def find_true_matches(distmat: torch.Tensor, q_pids: torch.Tensor, g_pids: torch.Tensor,
                      q_camids: torch.Tensor, g_camids: torch.Tensor) -> TrueMatches:
    """Junk and true matches of every query (docs/DESIGN.md §3), in stable distance order (small tensors only)."""
    num_q, num_g = distmat.shape
    order, start, size = _identity_groups(q_pids, g_pids)
    slot = torch.arange(max(int(size.max()), 1))
    member = slot < size[:, None]
    gallery = order[(start[:, None] + slot).clamp(max=num_g - 1)]          # (Q, S) ascending gallery index
    junk = member & (g_camids[gallery] == q_camids[:, None])
    valid = member & ~junk
    dist = distmat[torch.arange(num_q)[:, None], gallery]
    nan = valid & torch.isnan(dist) if dist.is_floating_point() else torch.zeros_like(valid)
    if nan.any():
        q, k = (int(v) for v in nan.nonzero()[0])
        raise ValueError(f"evaluate_rank: distmat[{q}, {int(gallery[q, k])}] (a true match) is NaN")
    # stable sort of the identity's images by distance: ties keep increasing gallery index
    dist, perm = torch.sort(dist, dim=1, stable=True)
    gallery, junk, valid = gallery.gather(1, perm), junk.gather(1, perm), valid.gather(1, perm)
    junk_seen = torch.cumsum(junk.long(), 1)
    num_valid = valid.sum(1)
    front = torch.argsort((~valid).to(torch.uint8), dim=1, stable=True)[:, :max(int(num_valid.max()), 1)]
    return TrueMatches(dist.gather(1, front), gallery.gather(1, front), junk_seen.gather(1, front), num_valid)


_NARROW = (torch.float16, torch.bfloat16, torch.float32, torch.int8, torch.uint8, torch.int16, torch.int32)


def _order_keys(values: torch.Tensor, universe: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Integer keys ordered exactly like ``values`` (equal values → equal keys, −0.0 = +0.0).

    ≤32-bit types map to int32 bijectively (for floats: the bits, with negative numbers' magnitude bits
    flipped); wider types become int64 ranks among the sorted distinct values of ``universe()``."""
    if values.dtype.is_floating_point and values.dtype in _NARROW:
        bits = values.float().view(torch.int32)
        sign = bits >> 31                                   # −1 for negative numbers, else 0
        return (bits ^ (sign & 0x7FFFFFFF)) - sign          # − sign: −0.0 lands on +0.0's key
    if values.dtype in _NARROW:
        return values.int()
    return torch.searchsorted(torch.unique(universe()), values.contiguous())


def _select(dist: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``dist[mask]`` row by row; on CPU through NumPy's SIMD ``compress`` (≈3× torch.masked_select here)."""
    if dist.device.type == "cpu" and dist.dtype != torch.bfloat16:
        return torch.from_numpy(np.compress(mask.numpy().ravel(), dist.numpy().ravel()))
    return dist.masked_select(mask)


def _row_keys(values: torch.Tensor, per_row: torch.Tensor, distance: torch.Tensor, entry: torch.Tensor,
              num_valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys of the selected values (row by row) and of the true matches, comparable as (row, value).

    Values below a row's first true match precede all its matches alike and share key 0, so a row needs
    only as many key bits as its first-to-last-match span; keys are int32 when all rows fit in 32 bits
    (the radix sort of int32 is ~1.6× faster than of int64)."""
    universe = lambda: torch.cat([values, distance[entry]])  # noqa: E731  (wide dtypes only)
    value_keys, match_keys = _order_keys(values, universe), _order_keys(distance, universe)
    last = match_keys.gather(1, (num_valid - 1).clamp(min=0)[:, None]).squeeze(1).long()
    base = torch.where(num_valid > 0, match_keys[:, 0].long() - 1, last)       # key 0: before the first
    value_bits = max(int((last - base).max()), 1).bit_length()
    # row r's keys start at (r << value_bits) − 2**31: signed int32 then covers all 32 bits
    row_start = (torch.arange(len(base), device=base.device) << value_bits) - 2**31
    narrow = value_bits + max(len(base) - 1, 1).bit_length() <= 32 and value_keys.dtype == torch.int32
    dtype = torch.int32 if narrow else torch.int64
    row_base = torch.repeat_interleave(base.to(dtype), per_row)
    keys = (torch.maximum(value_keys.to(dtype), row_base) - row_base) + torch.repeat_interleave(
        row_start.to(dtype), per_row)
    match_keys = (match_keys.long() - base[:, None]).clamp(0, (1 << value_bits) - 1) + row_start[:, None]
    return keys, match_keys.to(dtype).contiguous()


def _count_block(dist: torch.Tensor, distance: torch.Tensor, index: torch.Tensor,
                 num_valid: torch.Tensor) -> torch.Tensor:
    """``count_preceding`` for one block of rows (see there)."""
    num_rows, num_g = dist.shape
    entry = torch.arange(distance.shape[1], device=dist.device) < num_valid[:, None]
    last = distance.gather(1, (num_valid - 1).clamp(min=0)[:, None])
    upto_last = dist <= last
    if not bool((num_valid > 0).all()):
        upto_last &= (num_valid > 0)[:, None]                         # skipped queries: nothing to count
    values = _select(dist, upto_last)
    per_row = upto_last.view(torch.uint8).sum(1, dtype=torch.int32).long()     # uint8 view: fast row sums
    keys, match_keys = _row_keys(values, per_row, distance, entry, num_valid)
    keys = torch.sort(keys).values
    below = torch.searchsorted(keys, match_keys)                      # row start + values strictly below
    equal = torch.searchsorted(keys, match_keys, right=True) - below  # values equal (the match included)
    counts = below - (torch.cumsum(per_row, 0) - per_row)[:, None]
    tied = ((equal > 1) & entry).nonzero()                            # ties with other images: by index
    step = max(1, (1 << 22) // num_g)                                 # bounds the (pairs, gallery) masks
    for r, k in (part.unbind(1) for part in tied.split(step)):
        earlier = torch.arange(num_g, device=dist.device) < index[r, k, None]
        counts[r, k] += ((dist[r] == distance[r, k, None]) & earlier).sum(1)
    return counts.masked_fill(~entry, 0)


def count_preceding(dist: torch.Tensor, matches: TrueMatches, block_rows: int | None = None) -> torch.Tensor:
    """``(R, M)``: gallery images of each row of ``dist`` that precede each of the row's true matches in
    the stable order (distance, then gallery index).

    Only values up to a row's last true match matter. Per block of rows they are selected in one
    comparison, packed as integer ``(row, order key)`` keys and sorted once; ``searchsorted`` of every true match's
    key then gives how many values of its row are smaller. Images at exactly a true match's distance are
    ordered by gallery index (rare with real-valued distances). CPU blocks of ~2**20 distances keep the
    comparison mask in cache and the sorts in the fast radix-sort range."""
    num_rows, num_g = dist.shape
    if block_rows is None:
        block_rows = num_rows if dist.is_cuda else max(1, (1 << 20) // num_g)
    fields = [getattr(matches, f).to(dist.device) for f in ("distance", "index", "num_valid")]
    return torch.cat([_count_block(dist[a:a + block_rows], *(f[a:a + block_rows] for f in fields))
                      for a in range(0, num_rows, block_rows)])


def _cmc_and_map(ranks: torch.Tensor, num_valid: torch.Tensor, max_rank: int) -> tuple[np.ndarray, float]:
    """CMC from the first true match's rank; AP = mean over true matches of the precision at their ranks."""
    ranks, num_valid = ranks[num_valid > 0].double(), num_valid[num_valid > 0]
    slot = torch.arange(ranks.shape[1])
    precision = torch.where(slot < num_valid[:, None], (slot + 1) / ranks, 0.0)
    average_precision = precision.sum(1) / num_valid
    first = ranks[:, 0].long().clamp(max=max_rank + 1)
    cmc = torch.bincount(first - 1, minlength=max_rank + 1)[:max_rank].cumsum(0).double() / len(first)
    return cmc.numpy(), float(average_precision.mean())


def evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50, *,
                  device: str | torch.device | None = None,
                  chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> tuple[np.ndarray, float]:
    """CMC and mAP under the Market-1501 protocol (docs/DESIGN.md §3; module docstring for details).

    Inputs are array-likes: ``distmat (num_query, num_gallery)`` (smaller = more similar), pids and camids of
    shape ``(num_query,)`` / ``(num_gallery,)``. Returns ``(cmc, mAP)`` as fractions: ``cmc[k]`` = share of
    the evaluated queries whose first true match is at rank ``<= k+1``, of length ``min(max_rank,
    num_gallery)`` (a warning is issued when the gallery is shorter than ``max_rank``). Ties are ordered by
    gallery index. ``device`` (default: CUDA when available) runs the counting; the distance matrix moves
    there ``chunk_elements`` distances at a time. Raises ValueError when no query has a true match.
    """
    dist, q_pids, g_pids, q_camids, g_camids = _as_rank_inputs(distmat, q_pids, g_pids, q_camids, g_camids)
    num_q, num_g = dist.shape
    if max_rank < 1:
        raise ValueError(f"evaluate_rank: max_rank={max_rank}, expected >= 1")
    if max_rank > num_g:
        warnings.warn(f"evaluate_rank: gallery has {num_g} images < max_rank={max_rank}; "
                      f"the CMC curve has {num_g} entries", stacklevel=2)
        max_rank = num_g
    device = _or_auto(device)
    dist_cpu = torch.from_numpy(dist)
    matches = find_true_matches(dist_cpu, *(torch.from_numpy(a) for a in (q_pids, g_pids, q_camids, g_camids)))
    if not bool((matches.num_valid > 0).any()):
        raise ValueError(f"evaluate_rank: none of the {num_q} queries has a true match in another camera "
                         "(same identity, different camera) in the gallery; nothing to evaluate")
    rows_per_chunk = max(1, chunk_elements // num_g)
    counts = []
    for a in range(0, num_q, rows_per_chunk):
        part = TrueMatches(*(getattr(matches, f)[a:a + rows_per_chunk] for f in
                             ("distance", "index", "junk_before", "num_valid")))
        chunk = dist_cpu[a:a + rows_per_chunk].to(device, non_blocking=True)
        counts.append(count_preceding(chunk, part).cpu())
    # rank (1-based, among kept images) = 1 + images before it − junk images before it
    ranks = torch.cat(counts) - matches.junk_before + 1
    return _cmc_and_map(ranks, matches.num_valid, max_rank)


# --------------------------------------------------------------------------- model-level evaluation
def extract_items(model: torch.nn.Module, items, cfg, device, ctx: DistributedContext = SINGLE_PROCESS
                  ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """:func:`extract_features` of test ``items`` (eval transform, ``cfg.eval_flip``); with several processes
    each rank extracts its shard and every rank gets all of them, in order."""
    from ..datasets import pipeline as data_lib  # lazy: keeps evaluate_rank importable without the image stack

    mine = list(items)[ctx.shard(len(items))]
    features, pids, camids = extract_features(model, data_lib.make_test_loader(mine, cfg), device, flip=cfg.eval_flip,
                                              amp=cfg.amp)
    if ctx.world_size == 1:
        return features, pids, camids
    gather = ctx.gather_uneven
    return gather(features), gather(torch.as_tensor(pids)).numpy(), gather(torch.as_tensor(camids)).numpy()


def evaluate_model(model: torch.nn.Module, dataset, cfg, device: torch.device,
                   ctx: DistributedContext = SINGLE_PROCESS) -> dict[str, float]:
    """Rank-1/5/10 and mAP in percent of ``model`` on ``dataset.query`` vs ``dataset.gallery``
    (cosine distance of L2-normalised f(x); ``cfg.eval_flip``, ``cfg.eval_batch_size``, ``cfg.amp``).
    With several processes the extraction is sharded, the metrics computed on rank 0 and broadcast."""
    query, gallery = (extract_items(model, getattr(dataset, split), cfg, device, ctx) for split in ("query", "gallery"))
    metrics = retrieval_metrics(*query, *gallery, device=device) if ctx.is_main else None
    return ctx.broadcast(metrics)


def retrieval_metrics(qf, q_pids, q_camids, gf, g_pids, g_camids, device: str | torch.device | None = None
                      ) -> dict[str, float]:
    """Rank-1/5/10 and mAP in percent from query and gallery features (cosine distance after L2
    normalisation), e.g. features saved by a run (``features_initial.npz``) or fresh from a model."""
    device = _or_auto(device)
    qf, gf = (torch.as_tensor(np.asarray(f, dtype=np.float32)) for f in (qf, gf))
    distmat = cosine_distmat(qf.to(device), gf.to(device)).cpu().numpy()
    cmc, mAP = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=min(50, len(g_pids)),
                             device=device)
    padded = np.concatenate([cmc, np.full(max(0, 10 - len(cmc)), cmc[-1])])
    return {"R1": float(padded[0]) * 100, "R5": float(padded[4]) * 100, "R10": float(padded[9]) * 100,
            "mAP": mAP * 100}
