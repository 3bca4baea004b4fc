"""Section c, throughput of the paper profile (ResNet-50, 256x128, batch 32): the bare backbone's fwd+bwd+Adam
step (fp32, bf16, fp16; NCHW and channels_last) against the trainer's stage-1 and stage-2 epochs, images/s and
peak memory, and the share of a step spent waiting for data."""
from __future__ import annotations

import os
import time
import warnings
from typing import Any

import torch

from .pirid import (PrototypeMemory, Stage2, Trainer, build_model, epoch_batches, epoch_context, epoch_prototypes,
                    epoch_steps, get_config)
from .shared import SKIPPED, Check, Section, TimeCap, synthetic

def _bare_rate(run: Check, cfg, amp: torch.dtype | None, channels_last: bool, iters: int, warmup: int) -> dict:
    """fwd + bwd + Adam step of the bare ReIDNet on one fixed batch: images/s and peak memory."""
    dev = run.device
    run.reset_peak()
    torch.manual_seed(0)
    model = build_model(cfg).to(dev).train()
    images = torch.randn(cfg.batch_size, 3, cfg.height, cfg.width, device=dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16 and run.cuda)

    def step():
        with torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
            g, f = model(images)
        loss = g.float().mean() + f.float().mean()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(warmup):
        step()
    run.sync()
    started = time.perf_counter()
    for _ in range(iters):
        step()
    run.sync()
    seconds = time.perf_counter() - started
    return {"img_s": round(iters * cfg.batch_size / seconds, 1), "ms_per_step": round(1000 * seconds / iters, 2),
            "peak_gib": run.peak_gib(), "iters": iters}


def _trainer_rates(run: Check, sec: Section, cfg, dataset, iters: int) -> dict:
    """The trainer's own epoch code on ``dataset``: stage-1 and stage-2 epochs (run_epoch, no per-step sync),
    the prototype step, and a synchronised loop that splits each step into data wait and compute."""
    run.reset_peak()
    started = time.perf_counter()
    trainer = Trainer(cfg, dataset, run.scratch / f"trainer-{len(os.listdir(run.scratch))}", progress=False,
                      log=lambda _: None)
    trainer.setup()  # model, Adam, memory K; the decoded set for the tensor pipeline
    try:
        return _timed_epochs(run, sec, cfg, trainer, epoch_context(trainer), iters,
                             {"setup_s": round(time.perf_counter() - started, 2)})
    finally:
        trainer.release()


def _timed_epochs(run: Check, sec: Section, cfg, trainer, run_, iters: int, out: dict) -> dict:
    dev = run.device

    def epoch(index: int, stage2=None) -> float:
        loader = epoch_batches(run_, index, stage2)
        run.sync()
        t0 = time.perf_counter()
        epoch_steps(run_, loader, stage2)
        run.sync()
        return len(loader) * cfg.batch_size / (time.perf_counter() - t0)

    epoch(0)  # warm-up (cuDNN heuristics, allocator, loader start)
    sec.raise_if_over("trainer warm-up epoch")
    out["stage1_img_s"] = round(epoch(1), 1)
    run.sync()
    t0 = time.perf_counter()
    protos = epoch_prototypes(run_)
    stage2 = None
    if protos.num_prototypes:
        stage2 = Stage2(protos.assignment.to(dev), PrototypeMemory(protos.centroids.to(dev), cfg.memory_momentum,
                                                                   cfg.temperature, cfg.memory_renormalize))
    run.sync()
    out["prototype_step_s"] = round(time.perf_counter() - t0, 3)
    out["prototypes"] = protos.num_prototypes
    sec.raise_if_over("trainer stage 2")
    rate2 = epoch(2, stage2)
    out["stage2_img_s"] = round(rate2, 1)
    step_s = cfg.batch_size / rate2
    out["stage2_epoch_incl_prototypes_img_s"] = round(iters * cfg.batch_size / (iters * step_s + out["prototype_step_s"]), 1)
    # data wait vs step, synchronised after each
    loader = epoch_batches(run_, 3, None)
    wait = compute = 0.0
    it = iter(loader)
    while True:
        t0 = time.perf_counter()
        try:
            images, _, _, index = next(it)
        except StopIteration:
            break
        images = images.to(dev, non_blocking=True)
        run.sync()
        t1 = time.perf_counter()
        run_.state.step(images, run_.image_labels[index.to(dev)], None, run_.variant)
        run.sync()
        t2 = time.perf_counter()
        wait, compute = wait + (t1 - t0), compute + (t2 - t1)
    out["data_wait_share"] = round(wait / max(wait + compute, 1e-9), 4)
    out["synced_step_ms"] = round(1000 * compute / max(1, len(loader)), 2)
    out["peak_gib"] = run.peak_gib()
    out["iters_per_epoch"] = iters
    return out


def section_throughput(run: Check, sec: Section) -> None:
    profile = "test" if run.smoke else "paper"
    extra = dict(num_ids_per_batch=4, num_instances=2) if run.smoke else {}
    cfg = get_config(profile, pretrained=None, device=str(run.device), **extra)
    sec.result["setting"] = f"{profile} profile: {cfg.arch} {cfg.height}x{cfg.width}, batch {cfg.batch_size}, random init"
    iters, warmup = (2, 1) if run.smoke else (30, 5)
    bare: dict[str, Any] = {}
    sec.result["bare"] = bare
    settings = [("fp32", None, False), ("fp32 + channels_last", None, True), ("bf16", torch.bfloat16, False),
                ("bf16 + channels_last", torch.bfloat16, True), ("fp16", torch.float16, False),
                ("fp16 + channels_last", torch.float16, True)]
    if run.smoke:  # CPU: fp16 autocast with a GradScaler is a CUDA path; keep the toy run short
        settings = [s for s in settings if s[1] != torch.float16 and s[0] != "bf16"]
        sec.skipped.append("bare fp16: CUDA only (not part of the CPU smoke run)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. CPU autocast notes
        for name, amp, cl in settings:
            bare[name] = sec.item(f"bare {name}", lambda amp=amp, cl=cl: _bare_rate(run, cfg, amp, cl, iters, warmup),
                                  min_seconds=5 if not run.smoke else 0)
    best = max((v["img_s"] for v in bare.values() if v), default=None)
    run.shared["bare_best_img_s"] = best

    dataset = synthetic("tiny" if run.smoke else "small", run)
    t_iters = 2 if run.smoke else 30
    base = dict(pretrained=None, device=str(run.device), iters_per_epoch=t_iters, epochs=4, stage1_epochs=1, **extra)
    trainer_settings = {"paper profile (AMP bf16, channels_last, tensor pipeline)": dict(input_pipeline="auto"),
                        "AMP off (fp32, channels_last, tensor pipeline)": dict(amp=False),
                        "DataLoader pipeline (AMP bf16, channels_last, 4 workers)": dict(input_pipeline="dataloader")}
    if run.smoke:
        trainer_settings = {"test profile (DataLoader, NCHW)": dict(),
                            "channels_last + tensor pipeline": dict(channels_last=True, input_pipeline="tensor")}
    trainer: dict[str, Any] = {}
    sec.result["trainer"] = trainer
    sec.result["trainer_dataset"] = dataset.name
    for name, overrides in trainer_settings.items():
        tcfg = get_config(profile, **{**base, **overrides})

        def one(tcfg=tcfg):
            try:
                return _trainer_rates(run, sec, tcfg, dataset, t_iters)
            except TimeCap as cap:
                sec.skipped.append(f"trainer {name} after {cap}: {SKIPPED}")
                return None
        trainer[name] = sec.item(f"trainer {name}", one, min_seconds=10 if not run.smoke else 0)
    first = next(iter(trainer.values()), None)
    if first and best:
        sec.result["trainer_stage1_over_best_bare"] = round(first["stage1_img_s"] / best, 3)
    if first:
        run.shared["paper_step_s"] = cfg.batch_size / first["stage2_img_s"]
    sec.check("every measured rate is positive",
              all(v["img_s"] > 0 for v in bare.values() if v) and all(v["stage1_img_s"] > 0 for v in trainer.values() if v))
