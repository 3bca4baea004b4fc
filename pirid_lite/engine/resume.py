"""What a run may start from besides nothing: its own checkpoint (``--resume``) or another variant's end of
stage 1 (``stage1.pt``). Each check refuses, naming the file, what differs and what to do instead."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import STAGE2_ONLY_FIELDS, PiridConfig
from ..distributed import DistributedContext
from ..errors import UserError
from ..variants import VariantPolicy
from .runfiles import CHECKPOINT, RESUMABLE_CHANGES, RunFiles, checkpoint_config, config_differences, read_checkpoint
from .training import TrainingState


def check_resumable(state: dict[str, Any], path: Path, cfg: PiridConfig, world_size: int) -> None:
    """``state`` (this run's checkpoint at ``path``) may be continued with ``cfg`` by ``world_size`` processes."""
    differences = config_differences(checkpoint_config(state, path), cfg)
    if differences:
        raise UserError(f"cannot resume from {path}: it was written with a different config "
                        f"({'; '.join(differences)}); only {' and '.join(RESUMABLE_CHANGES)} may change on "
                        f"resume — use the same settings or a new --out folder")
    if state.get("world_size", 1) != world_size:
        raise UserError(f"cannot resume from {path}: it was written by {state.get('world_size', 1)} process(es), "
                        f"this run has {world_size}; resume with the same --nproc_per_node")
    if int(state["epoch"]) + 1 > cfg.epochs:
        raise UserError(f"cannot resume from {path}: it already holds {int(state['epoch']) + 1} epochs, "
                        f"more than epochs={cfg.epochs}")


def read_stage1_donor(path: Path, cfg: PiridConfig, variant: VariantPolicy, world_size: int,
                      device) -> dict[str, Any]:
    """Another variant's ``stage1.pt`` at ``path``, checked to be this run's stage 1: the same seed and
    settings up to the stage-2-only fields (``config.STAGE2_ONLY_FIELDS``), one process."""
    if not variant.shares_stage1:
        raise UserError(f"stage1_from: variant {cfg.variant!r} has no stage 1 shared with other variants")
    if not path.is_file():
        raise UserError(f"stage1_from: {path} does not exist (an ICS run writes stage1.pt after stage 1)")
    state = read_checkpoint(path, device)
    differences = config_differences(checkpoint_config(state, path), cfg,
                                     ignore=("variant", "device", *STAGE2_ONLY_FIELDS))
    if differences or int(state["epoch"]) + 1 != cfg.stage1_epochs or world_size != 1:
        raise UserError(f"stage1_from: {path} is not this run's stage 1 (it holds {int(state['epoch']) + 1} "
                        f"epochs, stage 1 has {cfg.stage1_epochs}; differences: "
                        f"{'; '.join(differences) or 'none'}; one process only)")
    return state


def restore(training: TrainingState, state: dict[str, Any], path: Path) -> tuple[list[dict[str, Any]], int]:
    """Load a checked checkpoint ``state`` into ``training``; returns its history and the epochs it holds."""
    training.load_state_dict(state, path)
    return list(state["history"]), int(state["epoch"]) + 1


def resume_from_checkpoint(files: RunFiles, training: TrainingState, cfg: PiridConfig,
                           ctx: DistributedContext) -> tuple[list[dict[str, Any]], int]:
    """``--resume``: this run's own checkpoint, checked, restored."""
    path = files.file(CHECKPOINT)
    state = files.checkpoint(map_location=training.device)
    check_resumable(state, path, cfg, ctx.world_size)
    return restore(training, state, path)


def start_from_stage1(path: Path, training: TrainingState, cfg: PiridConfig, variant: VariantPolicy,
                      ctx: DistributedContext) -> tuple[list[dict[str, Any]], int]:
    """``stage1_from``: another variant's end of stage 1, checked, restored. Stage 1 (L_intra only) is the same
    for every variant with intra-camera IDs (``VariantPolicy.shares_stage1``), so the run starts its stage 2
    there exactly as if it had trained stage 1 itself (tests/test_trainer.py checks the bit identity)."""
    return restore(training, read_stage1_donor(path, cfg, variant, ctx.world_size, training.device), path)
