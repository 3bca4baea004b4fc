"""One epoch of §2.4, and the context it runs in.

:class:`EpochContext` holds what every epoch needs — config, data, the variant's policy and label space,
the device, this process's place in a launch, the training state (network, Adam, schedule, memory K) and
the decoded training images — built once per run by :meth:`EpochContext.build`. :func:`train_epoch` is the
epoch itself, as §2.4 reads: in stage 2 form the prototypes (§2.3), run the steps, and return what to log.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from .. import logkeys
from ..config import PiridConfig
from ..distributed import SINGLE_PROCESS, DistributedContext
from ..evaluation.diagnostics import cross_camera_nn_accuracy
from ..method.association import largest_prototype, same_camera_prototypes
from ..method.memory import IntraCameraMemory, PrototypeMemory
from ..method.prototypes import Prototypes, prototype_quality
from ..method.reliability import group_count, trusted_assignment
from ..variants import LabelSpace, VariantPolicy, policy
from .epoch_prototypes import prototypes_for_epoch, sharded_train_features
from .training import Stage2, TrainingState, epoch_loader, load_train_images, run_steps


@dataclass
class EpochContext:
    cfg: PiridConfig
    dataset: Any
    variant: VariantPolicy
    labels: LabelSpace
    device: torch.device
    state: TrainingState
    train_images: torch.Tensor | None     # the decoded training set of the in-memory pipeline, or None
    image_labels: torch.Tensor            # memory row of every training image, on the device
    ctx: DistributedContext = SINGLE_PROCESS
    progress: bool = True

    @classmethod
    def build(cls, cfg: PiridConfig, dataset, device: torch.device, ctx: DistributedContext = SINGLE_PROCESS,
              progress: bool = True) -> "EpochContext":
        """Seed, build model/optimiser/schedule; K[j] ← per-ID mean of the initial features (docs/DESIGN.md §2)."""
        variant = policy(cfg.variant)
        labels = variant.label_space_of(dataset)
        state = TrainingState.build(cfg, labels, device, ctx)
        image_labels = torch.as_tensor(labels.image_labels, device=device)
        run = cls(cfg, dataset, variant, labels, device, state, load_train_images(cfg, dataset, device),
                  image_labels, ctx, progress)
        run.memory.initialize(run.train_features(), image_labels)
        return run

    @property
    def model(self) -> torch.nn.Module:
        return self.state.model

    @property
    def memory(self) -> IntraCameraMemory:
        return self.state.memory

    def stage_of(self, epoch: int) -> int:
        return 2 if self.variant.has_stage2 and epoch >= self.cfg.stage1_epochs else 1

    def train_features(self) -> torch.Tensor:
        """Eval-mode f(x) of every training image, in order (sharded over the ranks of a launch)."""
        return sharded_train_features(self.model, self.dataset, self.cfg, self.device, self.ctx, self.train_images)


def train_epoch(run: EpochContext, epoch: int, on_nonfinite: Callable[[dict[str, float]], Exception]
                ) -> dict[str, Any]:
    """§2.4, one epoch (0-based ``epoch``): its log record (:mod:`pirid_lite.logkeys`)."""
    stage = run.stage_of(epoch)
    record = {logkeys.EPOCH: epoch + 1, logkeys.STAGE: stage, logkeys.LR: run.state.optimizer.param_groups[0]["lr"]}
    stage2 = form_stage2(run, epoch, record) if stage == 2 else None
    loader, record[logkeys.SAMPLED_BY] = epoch_loader(run, epoch, stage2)
    started = time.perf_counter()
    record.update(run_steps(run, loader, stage2, on_nonfinite,
                            desc=f"epoch {epoch + 1}/{run.cfg.epochs} (stage {record[logkeys.STAGE]})"))
    record[logkeys.STEPS_SECONDS] = round(time.perf_counter() - started, 3)
    if run.ctx.world_size > 1:  # all ranks must hold the same state: check it every epoch, log the hashes
        run.state.sync_buffers()
        record[logkeys.RANK_DIGESTS] = run.ctx.check_identical(
            [*run.model.state_dict().values(), run.memory.features,
             *([stage2.assignment, stage2.memory.features] if stage2 is not None else [])])
    return record


def form_stage2(run: EpochContext, epoch: int, record: dict[str, Any]) -> Stage2 | None:
    """§2.3 for this epoch, what it shows logged in ``record``; None if no prototype was formed."""
    prototypes = prototypes_for_epoch(run, timings=record)
    if run.ctx.is_main:
        record.update(prototype_log(prototypes, run))
    if prototypes.num_prototypes == 0:
        warnings.warn(f"epoch {epoch + 1}: the grouping ({run.cfg.association}) formed no prototype; this epoch "
                      f"falls back to L_intra only")
        record[logkeys.STAGE], record[logkeys.FALLBACK_INTRA_ONLY] = 1, True
        return None
    cfg = run.cfg
    stage2 = Stage2(prototypes.assignment.to(run.device),
                    PrototypeMemory(prototypes.centroids.to(run.device), cfg.memory_momentum, cfg.temperature,
                                    cfg.memory_renormalize), prototypes.reliable)
    if run.ctx.is_main and cfg.stage2_sampling != "intra-id":
        record.update(sampling_log(stage2, run))
    return stage2


def sampling_log(stage2: Stage2, run: EpochContext) -> dict[str, Any]:
    """What a stage-2 epoch that samples by prototype logs: the share of training images drawn by prototype and
    the share of prototypes trusted (truth-free), and — against the hidden truth, logged only — the pairwise
    precision of the prototypes the batches were drawn by (the merges the triplet term takes as positives)."""
    assignment = stage2.assignment.cpu().numpy()
    reliable = None if stage2.reliable is None else stage2.reliable.cpu().numpy()
    used = trusted_assignment(assignment, reliable)  # the prototypes the batches are drawn by
    trusted_share = 1.0 if reliable is None else float(np.mean(reliable))   # every prototype, unless tested
    record = {logkeys.PROTOTYPE_SAMPLED_SHARE: float(np.mean(used[run.labels.image_labels] >= 0)),
              logkeys.RELIABLE_SHARE: trusted_share if group_count(assignment) else float("nan")}
    if not run.variant.label_space.reads_truth:
        truth = run.dataset.hidden_truth.reveal_per_label(reason="sampling diagnostics (log only)")
        record[logkeys.SAMPLING_PRECISION] = prototype_quality(used, truth)[logkeys.PAIRWISE_PRECISION]
    return record


def prototype_log(prototypes: Prototypes, run: EpochContext) -> dict[str, Any]:
    """What a stage-2 epoch logs about its prototypes: the truth-free signals (prototypes holding two IDs of
    one camera, the largest prototype, the adaptive threshold; :mod:`pirid_lite.method.association`) and,
    against the hidden truth (never trained on), their quality (:func:`pirid_lite.method.prototypes.prototype_quality`)
    and K's cross-camera NN accuracy. The ``supervised`` rows are true identities already, so only their
    count and noise are logged."""
    if run.variant.label_space.reads_truth:
        return {logkeys.NUM_PROTOTYPES: prototypes.num_prototypes, logkeys.NOISE_SHARE: prototypes.noise_share}
    truth = run.dataset.hidden_truth.reveal_per_label(reason="prototype diagnostics (log only)")
    # how often K's nearest other-camera row is the same person: what clustering could build on
    nn_accuracy = cross_camera_nn_accuracy(run.memory.features.detach().cpu(), run.labels.id_group, truth)
    assignment = prototypes.assignment.cpu()
    return {logkeys.SAME_CAMERA_PROTOTYPES: same_camera_prototypes(assignment, run.labels.id_group),
            logkeys.LARGEST_PROTOTYPE: largest_prototype(assignment),
            **({} if prototypes.threshold is None else {logkeys.ASSOCIATION_THRESHOLD: prototypes.threshold}),
            **prototype_quality(assignment, truth), logkeys.MEMORY_NN_ACCURACY: nn_accuracy}
