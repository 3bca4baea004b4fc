"""Training images/s of one run over 1 and 2 processes (``torchrun``, gloo, 1 thread each), and the scaling
efficiency rate(N) / (N × rate(1)).

``python -m benchmarks.bench_distributed [--small]`` — each launch trains 2 epochs (stage 1, then stage 2
with its sharded extraction and DBSCAN on rank 0) of the ``cpu`` profile on the synthetic ``small``
benchmark; images/s = global images per epoch / the epoch's wall time from the run's log. The global batch
is 32 at every N (each rank trains 32 / N of it).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks._common import make_parser, report
from pirid_lite.engine.runfiles import RunFiles
from pirid_lite.utils import REPO_ROOT


def launch(nproc: int, out: Path, small: bool) -> list[float]:
    """Per-epoch wall seconds of a run over ``nproc`` processes."""
    settings = (["--dataset", "tiny", "--profile", "test", "--set", "iters_per_epoch=2"] if small else
                ["--dataset", "small", "--profile", "cpu", "--set", "iters_per_epoch=24"])
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone",
               "-m", "pirid_lite", "train", *settings, "--device", "cpu", "--no-progress", "--out", str(out),
               "--set", "epochs=2", "--set", "stage1_epochs=1", "--set", "warmup_epochs=1", "--set", "lr_milestones="]
    done = subprocess.run(command, cwd=REPO_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=900)
    if done.returncode:
        raise RuntimeError(f"torchrun --nproc_per_node={nproc} failed:\n{done.stderr[-3000:]}")
    seconds = RunFiles(out).log()["seconds"].tolist()
    return [seconds[0], seconds[1] - seconds[0]]


def main(small: bool = False, threads: int | None = 1) -> dict:
    images = 2 * 32 if small else 24 * 32
    result: dict = {"threads_per_process": 1}
    rates = {}
    with tempfile.TemporaryDirectory() as root:
        for nproc in (1, 2):
            stage1, stage2 = launch(nproc, Path(root) / f"n{nproc}", small)
            rates[nproc] = images / stage1
            result[f"{nproc} process(es): stage 1 img/s"] = images / stage1
            result[f"{nproc} process(es): stage 2 img/s"] = images / stage2
    result["scaling efficiency, stage 1 (2 vs 1)"] = rates[2] / (2 * rates[1])
    return report("distributed training throughput (gloo, CPU)", result)


if __name__ == "__main__":
    args = make_parser(__doc__).parse_args()
    main(small=args.small)
