"""Section e, the ``paper`` profile on the synthetic ``market`` preset (Market-1501 scale): a few epochs over both
stages, the prototype step at that scale, the 50-epoch time extrapolated."""
from __future__ import annotations

import math
import time
from typing import Any

from .pirid import epoch_context, epoch_prototypes, get_config
from .shared import Check, Section, fit_within_cap, synthetic

SCHEDULE = (50, 5)       # the paper profile's epochs and, of them, stage-1 epochs: what the estimate is for
SMOKE_SCHEDULE = (4, 1)  # the same for the smoke run's toy version


def extrapolate(r: dict[str, Any], epochs: int, stage1_epochs: int) -> dict[str, Any]:
    """The time of a whole run of ``epochs`` (``stage1_epochs`` of them stage 1) from what the section measured
    and shows (``r``): its setup, epoch and evaluation seconds, scaled from the iterations it ran per epoch to a
    full pass; a stage-2 epoch is the prototype step (timed alone) and the fastest stage-2 epoch's steps."""
    per_epoch = r["epoch_seconds"]
    scale = r["full_iters_per_epoch"] / r["iters_per_epoch"]
    proto_s = r.get("prototype_step_seconds", 0.0)
    stage1 = per_epoch[0] * scale
    stage2_epochs = per_epoch[1:] or per_epoch
    stage2 = proto_s + (min(stage2_epochs) - proto_s) * scale
    estimate = r["setup_seconds"] + stage1_epochs * stage1 + (epochs - stage1_epochs) * stage2 + \
        r["eval_and_final_files_seconds"]
    return {"epochs": epochs, "stage1_epoch_s": round(stage1, 1), "stage2_epoch_s": round(stage2, 1),
            "total_minutes": round(estimate / 60, 1),
            "how": f"setup + {stage1_epochs} stage-1 epochs + {epochs - stage1_epochs} stage-2 epochs (each: the "
                   "prototype step + the measured steps scaled to a full pass) + evaluation; checkpoint writes "
                   "included"}


def section_paper_market(run: Check, sec: Section) -> None:
    r = sec.result
    if run.smoke:
        dataset = synthetic("tiny", run, root=run.scratch / "tiny-parallel")   # exercises the parallel generator
        cfg = get_config("test", device="cpu", epochs=3, stage1_epochs=1, iters_per_epoch=2)
        full_iters, schedule = cfg.iters_per_epoch, SMOKE_SCHEDULE
    else:
        dataset = synthetic("market", run)
        full_iters, schedule = max(1, len(dataset.train) // 32), SCHEDULE
        step_s = run.shared.get("paper_step_s", 0.05)
        budget = 0.4 * (sec.left() - 40)           # decoding, extraction and evaluation take the rest
        iters = int(min(full_iters, max(10, budget / (3 * step_s))))
        cfg = get_config("paper", pretrained=None, device=str(run.device), epochs=3, stage1_epochs=1,
                         iters_per_epoch=None if iters >= full_iters else iters)
        if iters < full_iters:
            r["iterations_capped"] = f"{iters} of {full_iters} iterations per epoch (to fit the section's cap)"
    r.update(dataset=dataset.name, train_images=len(dataset.train), query=len(dataset.query),
             gallery=len(dataset.gallery), generation_seconds=run.shared.get("generated", {}).get(
                 "tiny" if run.smoke else "market"), generator_workers=run.workers)
    iters = cfg.iters_per_epoch or full_iters
    fit = fit_within_cap(run, sec, cfg, dataset, "paper-market", "paper-profile run")
    seconds = [rec["seconds"] for rec in fit.history]
    per_epoch = [round(b - a, 2) for a, b in zip([0.0] + seconds[:-1], seconds)]
    result = fit.result
    if result is None:
        r.update(iters_per_epoch=iters, full_iters_per_epoch=full_iters, peak_gib=run.peak_gib(),
                 epoch_seconds=per_epoch, log_tail=fit.lines[-3:])
        return
    r.update(epochs=cfg.epochs, stage1_epochs=cfg.stage1_epochs, iters_per_epoch=iters, full_iters_per_epoch=full_iters,
             epoch_seconds=per_epoch, setup_seconds=round(fit.seconds - result["wall_seconds"], 1),
             eval_and_final_files_seconds=round(result["wall_seconds"] - seconds[-1], 1),
             metrics=result["metrics"], peak_gib=run.peak_gib(), memory_ids=result["provenance"].get("num_memory_ids"),
             prototypes_per_epoch=[rec.get("num_prototypes") for rec in fit.history], log_tail=fit.lines[-4:])
    # the prototype step alone at this scale (fresh-centroid pass over the training set, Jaccard, DBSCAN)
    run.sync()
    t0 = time.perf_counter()
    protos = sec.item("prototype step timing", lambda: epoch_prototypes(epoch_context(fit.trainer)))
    run.sync()
    if protos is not None:
        r["prototype_step_seconds"] = round(time.perf_counter() - t0, 2)
        r["prototypes_now"] = protos.num_prototypes
    fit.trainer.release()
    r["extrapolated"] = extrapolate(r, *schedule)
    sec.check("the run finished with finite metrics", all(math.isfinite(v) for v in result["metrics"].values()))
