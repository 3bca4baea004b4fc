"""One runner for batches of training runs: ``reproduce`` (Tables 1–2) and ``calibrate`` (the benchmark).

An :class:`Experiment` is a config plus the folder its run goes to. :func:`run_experiments` trains the ones
whose ``metrics.json`` does not exist yet (so an interrupted batch continues where it stopped), optionally
only a shard of them (``"i/n"``: every n-th from the i-th, for n processes side by side), and prints one
line per finished run: run i of n, its mAP, its time and the time left. Runs of several datasets go in one
batch when each experiment names its ``dataset`` and the runner is given the datasets by name.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..config import PiridConfig
from ..errors import UserError
from ..engine.runfiles import RunFiles


@dataclass(frozen=True)
class Experiment:
    cfg: PiridConfig
    out: Path
    save_features: bool = False
    tag: str = ""
    stage1_from: Path | None = None  # another run's stage1.pt to start from, used when it exists (Trainer.fit)
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    dataset: str = ""  # the dataset's name when a batch spans several (run_experiments is given them by name)

    @property
    def label(self) -> str:
        run = f"{self.cfg.variant}{'+' + self.tag if self.tag else ''} seed {self.cfg.seed}"
        return f"{self.dataset} {run}" if self.dataset else run


def parse_shard(shard: str | None) -> tuple[int, int]:
    """``"i/n"`` → ``(i, n)`` with 0 ≤ i < n; None → ``(0, 1)``."""
    if not shard:
        return 0, 1
    try:
        index, count = (int(part) for part in shard.split("/"))
    except ValueError:
        raise UserError(f"--shard {shard!r}: expected I/N such as 0/2") from None
    if not 0 <= index < count:
        raise UserError(f"--shard {shard!r}: need 0 <= I < N")
    return index, count


def select_shard(experiments: Sequence[Experiment], shard: str | None) -> list[Experiment]:
    index, count = parse_shard(shard)
    return list(experiments)[index::count]


def run_experiments(experiments: Sequence[Experiment], dataset, *, force: bool = False,
                    print_line: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Train every experiment not finished yet (all with ``force``) on ``dataset`` (or, given a mapping of
    datasets by name, on its experiment's ``dataset``); returns the timings of the runs trained here. The
    time left is the mean time of the runs so far times the runs still to do."""
    from ..engine.trainer import Trainer

    todo = [e for e in experiments if force or not RunFiles(e.out).is_finished]
    done_before = len(experiments) - len(todo)
    if done_before:
        print_line(f"{done_before} of {len(experiments)} runs already finished (reused; --force re-runs them)")
    timings: list[dict[str, Any]] = []
    for i, exp in enumerate(todo, start=1):
        started = time.perf_counter()
        shared = exp.stage1_from if exp.stage1_from is not None and exp.stage1_from.is_file() else None
        data = dataset[exp.dataset] if isinstance(dataset, Mapping) else dataset
        # an interrupted run continues from its last finished epoch (its checkpoint), unless forced afresh
        result = Trainer(exp.cfg, data, exp.out, progress=False, save_features=exp.save_features,
                         log=lambda _: None).fit(resume=not force, stage1_from=shared)
        seconds = time.perf_counter() - started
        timings.append({"run": str(exp.out), "seconds": round(seconds, 1)})
        left = sum(t["seconds"] for t in timings) / i * (len(todo) - i)
        print_line(f"run {i} of {len(todo)}: {exp.label}  mAP {result['metrics']['mAP']:.1f}  "
                   f"({seconds / 60:.1f} min; about {left / 60:.0f} min left)")
    return timings
