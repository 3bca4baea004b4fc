"""What several sections share: a section's record and time cap, the run's settings, synthetic data, a capped fit."""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import torch

from .pirid import REPO_ROOT, Trainer, datasets, default_root, generate

SKIPPED = "skipped: time cap"


class TimeCap(Exception):
    """A section's soft time cap was reached inside a long piece of work (e.g. between two epochs)."""


class HardTimeout(Exception):
    """A section overran its cap by its whole grace period (SIGALRM)."""


class Section:
    """One section's record: ``result`` (what it measured), ``skipped`` items, checks, its deadline."""

    def __init__(self, key: str, cap: float) -> None:
        self.key, self.cap = key, float(cap)
        self.started = time.perf_counter()
        self.deadline = self.started + self.cap
        self.result: dict[str, Any] = {}
        self.skipped: list[str] = []
        self.checks: list[dict[str, Any]] = []

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def item(self, name: str, fn: Callable[[], Any], min_seconds: float = 0.0) -> Any:
        """``fn()`` when at least ``min_seconds`` of the cap are left, else record ``name: skipped: time cap``."""
        if self.left() <= min_seconds:
            self.skipped.append(f"{name}: {SKIPPED}")
            return None
        return fn()

    def over(self) -> bool:
        return self.left() <= 0

    def raise_if_over(self, where: str) -> None:
        if self.over():
            raise TimeCap(where)

    def check(self, name: str, passed: bool, **details: Any) -> dict[str, Any]:
        entry = {"name": name, "pass": bool(passed), **details}
        self.checks.append(entry)
        return entry


@contextlib.contextmanager
def hard_limit(seconds: float):
    """SIGALRM after ``seconds`` raises HardTimeout in the main thread (a backstop; no-op elsewhere)."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def on_alarm(signum, frame):
        raise HardTimeout(f"overran the section's cap by its grace period ({seconds:.0f} s in all)")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(1.0, seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Check:
    """The run's settings and shared state (device, sizes, scratch folder, numbers a later section reads)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.smoke = args.smoke
        self.device = torch.device("cpu" if args.smoke else "cuda")
        self.cuda = self.device.type == "cuda"
        self.scratch = Path(tempfile.mkdtemp(prefix="gpu_check_"))
        self.wheel_dirs = [Path(p) for p in (args.wheels or [])] + [REPO_ROOT / ".whl"]
        self.workers = max(1, min(16, os.cpu_count() or 1))
        self.shared: dict[str, Any] = {}

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float | None:
        return round(torch.cuda.max_memory_allocated() / 2**30, 3) if self.cuda else None


def synthetic(preset: str, run: Check, root: Path | None = None):
    """A synthetic preset, generated first with one process per core when absent (same bytes either way)."""
    folder = root or default_root(preset, 0)
    if not (folder / "manifest.json").exists():
        started = time.perf_counter()
        generate(preset, folder, seed=0, progress=False, workers=run.workers)
        run.shared.setdefault("generated", {})[preset] = round(time.perf_counter() - started, 1)
    return datasets.load(preset, root=root, verbose=False)


class Fit(NamedTuple):
    """A training run of ``fit_within_cap``; ``result`` is None when the section's cap stopped it."""

    result: dict[str, Any] | None   # Trainer.fit's result
    trainer: Trainer                 # released when the cap stopped the run
    lines: list[str]                 # the log lines
    history: list[dict[str, Any]]    # one record per finished epoch
    seconds: float                   # wall time of the whole fit, setup included


def fit_within_cap(run: Check, sec: Section, cfg, dataset, name: str, what: str) -> Fit:
    """Trainer.fit (peak memory counted from its start) with a log that stops the run between epochs once the
    section's cap is spent; a stopped run is recorded as ``{what} stopped after epoch N: skipped: time cap``."""
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        print(f"    {line}", flush=True)
        if line.startswith("epoch"):
            sec.raise_if_over(f"after {line.split('stage')[0].strip()}")

    run.reset_peak()
    started = time.perf_counter()
    trainer = Trainer(cfg, dataset, run.scratch / name, progress=False, log=log)
    result = None
    try:
        result = trainer.fit()
    except TimeCap as cap:  # what was trained until then stays readable
        trainer.release()
        sec.skipped.append(f"{what} stopped {cap}: {SKIPPED}")
    return Fit(result, trainer, lines, list(trainer.history), time.perf_counter() - started)
