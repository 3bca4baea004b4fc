"""Eq. 1 memory update: ``momentum_update_`` vs a per-sample Python loop with the same semantics.

``python -m benchmarks.bench_memory_update [--small]`` — bank of N = 3,000 IDs × d = 2,048, batch of 256
features (64 IDs × 4 images, P-K style, so every touched row is updated 4 times in batch order); checks
that both give the same bank (max abs diff < 1e-6) and prints the speed-up.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks._common import best_time, make_parser, report
from pirid_lite.method.memory import momentum_update_

FULL = dict(num_ids=3000, dim=2048, batch=256, instances=4)
SMALL = dict(num_ids=50, dim=16, batch=16, instances=4)


def reference_update_(bank: torch.Tensor, features: torch.Tensor, labels: torch.Tensor, momentum: float,
                      renormalize: bool = True) -> torch.Tensor:
    """The per-sample loop of SpCL / cluster-contrast memory banks (``for x, y in zip(inputs, targets):
    features[y] = m * features[y] + (1 - m) * x``), with Python-int labels; noise labels (< 0) skipped. As in
    ``momentum_update_``, every touched row is re-normalised once after the loop (those repos do it per sample).
    """
    mu = momentum
    for x, y in zip(features, labels.tolist()):
        if y >= 0:
            bank[y] = mu * bank[y] + (1 - mu) * x
    if renormalize:
        touched = labels[labels >= 0].unique()
        bank[touched] = F.normalize(bank[touched], dim=1)
    return bank


def main(small: bool = False, repeats: int = 30, threads: int | None = 1, momentum: float = 0.05) -> dict:
    if threads:
        torch.set_num_threads(threads)
    size = SMALL if small else FULL
    generator = torch.Generator().manual_seed(0)
    bank = F.normalize(torch.randn(size["num_ids"], size["dim"], generator=generator), dim=1)
    ids = torch.randperm(size["num_ids"], generator=generator)[: size["batch"] // size["instances"]]
    labels = ids.repeat_interleave(size["instances"])[torch.randperm(size["batch"], generator=generator)]
    features = torch.randn(size["batch"], size["dim"], generator=generator)
    ref_bank = reference_update_(bank.clone(), features, labels, momentum)
    fast_bank = momentum_update_(bank.clone(), features, labels, momentum)
    diff = float((ref_bank - fast_bank).abs().max())
    assert diff < 1e-6, f"momentum_update_ differs from the per-sample loop by {diff}"
    # timed in place on working copies: the bank drifts between calls, which does not change the work
    ref_s, _ = best_time(lambda: reference_update_(ref_bank, features, labels, momentum), repeats)
    fast_s, _ = best_time(lambda: momentum_update_(fast_bank, features, labels, momentum), repeats)
    return report("memory update (Eq. 1)", {
        **size, "torch_threads": torch.get_num_threads(), "reference_loop_s": ref_s, "momentum_update_s": fast_s,
        "speedup": ref_s / fast_s, "max_abs_diff": diff})


if __name__ == "__main__":
    parser = make_parser(__doc__)
    args = parser.parse_args()
    main(small=args.small, threads=args.threads)
