"""The trainer's images/s against the bare backbone's, per CPU setting, in one process.

``python -m benchmarks.bench_trainer [--small] [--threads N]`` — for each setting (today's NCHW trainer,
channels_last, the in-memory input pipeline — what the ``cpu`` profile runs now — and frozen first blocks):

* **bare**: forward + backward + Adam step of the same ``ReIDNet`` on one random batch, repeated;
* **trainer stage 1 / stage 2**: a real ``Trainer`` on the synthetic ``small`` benchmark (``cpu`` profile),
  its epoch (``Trainer.train_epoch``; stage 2 also forms the prototypes: fresh-centroid pass, grouping),
  best of 2 epochs after a warm-up one; images/s = images trained / epoch wall time.

Ratios are taken within one run (the machine is shared): trainer / bare of the same setting, and every
setting / today's trainer.
"""
from __future__ import annotations

import tempfile
import time

import torch

from benchmarks._common import make_parser, report
from pirid_lite import datasets
from pirid_lite.config import get_config
from pirid_lite.method.model import build_model
from pirid_lite.engine.trainer import Trainer

SETTINGS = {  # name -> PiridConfig overrides; "today" = the cpu profile before its fast path
    "today (NCHW, DataLoader)": dict(channels_last=False, input_pipeline="dataloader"),
    "channels_last": dict(channels_last=True, input_pipeline="dataloader"),
    "channels_last + tensor pipeline (the cpu profile now)": dict(channels_last=True, input_pipeline="tensor"),
    "channels_last + tensor + 7 frozen": dict(channels_last=True, input_pipeline="tensor", frozen_blocks=7),
}


def bare_images_per_second(cfg, iters: int) -> float:
    torch.manual_seed(0)
    model = build_model(cfg).train()
    images = torch.randn(cfg.batch_size, 3, cfg.height, cfg.width)
    if cfg.channels_last:
        model, images = model.to(memory_format=torch.channels_last), images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)

    def step():
        g, f = model(images)
        optimizer.zero_grad(set_to_none=True)
        (g.mean() + f.mean()).backward()
        optimizer.step()

    step()
    best = float("inf")
    for _ in range(3):  # best of 3 rounds: the machine is shared
        start = time.perf_counter()
        for _ in range(iters):
            step()
        best = min(best, time.perf_counter() - start)
    return iters * cfg.batch_size / best


def trainer_images_per_second(cfg, dataset, repeats: int = 2) -> tuple[float, float]:
    """(stage-1, stage-2) images/s of the trainer's own epoch (``Trainer.train_epoch``; best of ``repeats``
    epochs each, after one warm-up epoch). A stage-2 epoch includes forming the prototypes (fresh-centroid
    pass, grouping, diagnostics). Checkpoint writes are left out (a fixed cost per epoch)."""
    from pirid_lite.engine.training import batches_per_epoch

    images = batches_per_epoch(cfg, len(dataset.train)) * cfg.batch_size
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(cfg.replace(eval_every=0), dataset, out, progress=False, log=lambda _: None)

        def epoch(stage: int) -> float:
            started = time.perf_counter()
            trainer.train_epoch(0 if stage == 1 else cfg.stage1_epochs)
            return images / (time.perf_counter() - started)

        epoch(1)
        return max(epoch(1) for _ in range(repeats)), max(epoch(2) for _ in range(repeats))


def main(small: bool = False, threads: int | None = 1, iters: int | None = None) -> dict:
    if threads:
        torch.set_num_threads(threads)
    dataset = datasets.load("tiny" if small else "small", verbose=False)
    base = dict(device="cpu")
    if small:
        base.update(iters_per_epoch=2)
    result: dict = {"torch_threads": torch.get_num_threads(), "dataset": dataset.name}
    today = None
    for name, overrides in SETTINGS.items():
        cfg = get_config("test" if small else "cpu", **base, **overrides)
        if small and cfg.frozen_blocks:
            cfg = cfg.replace(frozen_blocks=2)
        bare = bare_images_per_second(cfg, iters or (1 if small else 8))
        stage1, stage2 = trainer_images_per_second(cfg, dataset, repeats=1 if small else 2)  # smoke: runs, not rates
        today = today or stage1
        result.update({f"{name}: bare img/s": bare, f"{name}: trainer stage 1 img/s": stage1,
                       f"{name}: trainer stage 2 img/s": stage2, f"{name}: stage 1 / bare": stage1 / bare,
                       f"{name}: stage 1 / today": stage1 / today})
    return report(f"trainer throughput ({dataset.name}, {torch.get_num_threads()} threads)", result)


if __name__ == "__main__":
    parser = make_parser(__doc__)
    parser.add_argument("--iters", type=int, default=None, help="timed bare steps per setting")
    args = parser.parse_args()
    main(small=args.small, threads=args.threads, iters=args.iters)
