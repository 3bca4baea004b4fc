"""Shared helpers of the benchmarks: best-of timing and a uniform printout."""
from __future__ import annotations

import argparse
import time
from typing import Any, Callable

import torch


def best_time(fn: Callable[[], Any], repeats: int = 3) -> tuple[float, Any]:
    """Smallest wall time of ``repeats`` calls (the machine is shared: the minimum is the least noisy)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, out


def report(title: str, result: dict[str, Any]) -> dict[str, Any]:
    print(f"== {title}")
    for key, value in result.items():
        print(f"{key:>32}: {value:.4g}" if isinstance(value, float) else f"{key:>32}: {value}")
    return result


def make_parser(description: str | None) -> argparse.ArgumentParser:
    """The options every benchmark script shares (``--small``, ``--threads``); scripts add their own."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true", help="tiny configuration (CI smoke test)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; 0 = torch default)")
    return p
