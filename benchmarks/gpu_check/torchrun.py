"""Section f, ``torchrun --nproc_per_node=1`` (NCCL on CUDA, gloo on the CPU) against the plain run."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

from .pirid import REPO_ROOT, RunFiles
from .shared import SKIPPED, Check, Section, synthetic

def _train_command(run: Check) -> list[str]:
    if run.smoke:
        return ["--dataset", "tiny", "--profile", "test", "--device", "cpu", "--no-progress", "--set", "epochs=2",
                "--set", "stage1_epochs=1", "--set", "iters_per_epoch=2", "--set", "lr_milestones=2"]
    return ["--dataset", "small", "--profile", "paper", "--device", "cuda", "--no-progress", "--set", "pretrained=none",
            "--set", "epochs=2", "--set", "stage1_epochs=1", "--set", "iters_per_epoch=5"]


def section_torchrun(run: Check, sec: Section) -> None:
    synthetic("tiny" if run.smoke else "small", run)  # generated once, before two processes read it
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "PIRID_DIST_TIMEOUT": "60", "PYTHONUNBUFFERED": "1"}
    args = _train_command(run)
    outs = {"plain": run.scratch / "run-plain", "torchrun": run.scratch / "run-torchrun"}
    commands = {"plain": [sys.executable, "-m", "pirid_lite", "train", *args, "--out", str(outs["plain"])],
                "torchrun": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", "--standalone",
                             "-m", "pirid_lite", "train", *args, "--out", str(outs["torchrun"])]}
    sec.result["commands"] = {k: " ".join(["python" if c == sys.executable else c for c in v])
                              for k, v in commands.items()}
    procs, logs, rcs, started = {}, {}, {}, time.perf_counter()
    try:
        for key, command in commands.items():  # side by side: they are independent runs
            logs[key] = open(run.scratch / f"{key}.log", "w")
            procs[key] = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=logs[key],
                                          stderr=subprocess.STDOUT, start_new_session=True)
        for key, proc in procs.items():
            try:
                rcs[key] = proc.wait(timeout=max(1.0, sec.left()))
            except subprocess.TimeoutExpired:
                rcs[key] = None
                sec.skipped.append(f"{key} run: {SKIPPED} (killed)")
    finally:  # also on a hard timeout: no training process outlives the section
        for proc in procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for handle in logs.values():
            handle.close()
    sec.result["seconds"] = round(time.perf_counter() - started, 1)
    sec.result["returncodes"] = rcs
    for key in procs:
        if rcs[key] != 0:
            sec.result[f"{key}_output_tail"] = (run.scratch / f"{key}.log").read_text()[-1500:]
    if any(rc != 0 for rc in rcs.values()):
        sec.check("both runs finished", False)
        return
    plain, launched = RunFiles(outs["plain"]), RunFiles(outs["torchrun"])
    pm, lm = plain.metrics(), launched.metrics()
    prov = lm["provenance"]
    expected_backend = "gloo" if run.smoke else "nccl"
    sec.result.update(backend=prov["backend"], world_size=prov["world_size"], plain_metrics=pm["metrics"],
                      torchrun_metrics=lm["metrics"], plain_wall_seconds=pm["wall_seconds"],
                      torchrun_wall_seconds=lm["wall_seconds"])
    metric_diff = max(abs(pm["metrics"][k] - lm["metrics"][k]) for k in pm["metrics"])
    losses = [[rec[k] for k in sorted(rec) if k.startswith("loss_")] for rec in plain.log().to_dict("records")]
    losses_t = [[rec[k] for k in sorted(rec) if k.startswith("loss_")] for rec in launched.log().to_dict("records")]
    loss_rel = max((abs(a - b) / max(abs(a), 1e-6) for ra, rb in zip(losses, losses_t) for a, b in zip(ra, rb)), default=0.0)
    bank_diff = float((plain.memory_bank()["features"] - launched.memory_bank()["features"]).abs().max())
    bit_identical = pm["metrics"] == lm["metrics"] and losses == losses_t and bank_diff == 0.0
    sec.result.update(bit_identical=bit_identical, metrics_max_abs_diff=metric_diff, loss_max_rel_diff=loss_rel,
                      memory_bank_max_abs_diff=bank_diff)
    sec.result["note"] = ("On the CPU (gloo) one process under torchrun is bit-identical to the plain run "
                          "(tests/test_distributed.py). On CUDA bit identity is not promised (atomics, cuDNN "
                          "algorithm choice), so agreement is within the tolerances of the checks.")
    sec.check(f"backend {expected_backend}, world size 1", prov["backend"] == expected_backend and prov["world_size"] == 1)
    sec.check("same epochs in both logs", len(losses) == len(losses_t) == int(pm["config"]["epochs"]))
    if run.smoke:
        sec.check("bit-identical to the plain run (CPU, gloo)", bit_identical)
    else:
        sec.check("per-epoch losses agree (relative difference <= 1e-2)", loss_rel <= 1e-2, value=loss_rel)
        sec.check("R1/R5/R10/mAP agree within 2 points", metric_diff <= 2.0, value=metric_diff)
