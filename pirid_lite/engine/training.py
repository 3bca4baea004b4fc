"""The machinery of one optimisation step and one epoch of §2.4, separate from the run around it.

:class:`TrainingState` holds what a step changes — the network, Adam, the §3.1 schedule, the AMP scaler
and the intra-camera memory K — and can save and restore itself. :meth:`TrainingState.step` is one step:
forward (autocast on CUDA), the loss recipe built from the config (:func:`pirid_lite.method.losses.build_loss_recipe`),
backward, Adam, then Eq. 1 on K (and on K' in stage 2). :func:`epoch_loader` plans an epoch's batches and
:func:`run_steps` runs them without a host sync per step; both read the run's
:class:`pirid_lite.engine.epoch.EpochContext`.
"""
from __future__ import annotations

import math
import random
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from ..datasets import pipeline as data_lib
from .. import logkeys
from ..config import PiridConfig
from ..distributed import SINGLE_PROCESS, DistributedContext
from ..errors import user_error_from
from ..method.losses import LossTerm, StepInputs, build_loss_recipe, loss_terms, total_loss
from ..method.memory import IntraCameraMemory, PrototypeMemory
from ..method.reliability import sampling_labels
from ..method.model import build_model, load_weights
from ..datasets.tensor_pipeline import TensorTrainLoader
from ..utils import seed_everything
from ..variants import LabelSpace, VariantPolicy

if TYPE_CHECKING:
    from .epoch import EpochContext


def lr_factor(epoch: int, cfg: PiridConfig) -> float:
    """Learning-rate multiplier of 0-based ``epoch`` (§3.1): linear warm-up, then ÷10 at each milestone."""
    if epoch < cfg.warmup_epochs:
        return cfg.warmup_start_factor + (1.0 - cfg.warmup_start_factor) * epoch / cfg.warmup_epochs
    return cfg.lr_gamma ** sum(epoch >= milestone for milestone in cfg.lr_milestones)


class Stage2(NamedTuple):
    """A stage-2 epoch's prototypes on the training device: S' per memory row and the memory K'."""

    assignment: torch.Tensor       # (N,) prototype of each memory row, −1 = noise
    memory: PrototypeMemory
    reliable: torch.Tensor | None = None  # (Y,) bool: the prototypes stage2_sampling="reliable-prototype" trusts


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class TrainingState:
    cfg: PiridConfig
    device: torch.device
    model: torch.nn.Module
    train_model: torch.nn.Module          # the model, or its torch.compile wrapper (cfg.compile)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    memory: IntraCameraMemory
    recipe: tuple[LossTerm, ...]          # Eq. 7's terms with their weights and settings (from cfg)
    ctx: DistributedContext = SINGLE_PROCESS

    @classmethod
    def build(cls, cfg: PiridConfig, labels: LabelSpace, device: torch.device,
              ctx: DistributedContext = SINGLE_PROCESS) -> "TrainingState":
        """Seed, then the §2.2 network, Adam with the §3.1 schedule and an empty memory K (not initialised).
        Under torchrun the network is wrapped in DDP (and SyncBatchNorm, see pirid_lite.distributed)."""
        seed_everything(cfg.seed)
        with user_error_from(ValueError, FileNotFoundError):  # unsupported arch, bad `pretrained` file
            model = build_model(cfg).to(device)
        if uses_sync_batchnorm(cfg, device, ctx):
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if uses_channels_last(cfg, device):
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                     weight_decay=cfg.weight_decay)
        use_amp, amp_dtype = amp_settings(cfg, device)
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
        memory = IntraCameraMemory(torch.as_tensor(labels.id_group), model.feature_dim,
                                   momentum=cfg.memory_momentum, temperature=cfg.temperature,
                                   renormalize=cfg.memory_renormalize).to(device)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(e, cfg))
        train_model = torch.compile(model) if cfg.compile else model
        if ctx.active:
            train_model = torch.nn.parallel.DistributedDataParallel(
                train_model, device_ids=[device.index] if device.type == "cuda" else None)
            if ctx.world_size > 1:  # same weights everywhere, but each rank augments its share its own way
                torch.manual_seed(data_lib.augmentation_seed(cfg.seed, ctx.rank))
        return cls(cfg, device, model, train_model, optimizer, scheduler, scaler, memory, build_loss_recipe(cfg), ctx)

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs; with several processes also every rank's RNG state (a collective)."""
        state = {"model": self.model.state_dict(), "memory": self.memory.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "scaler": self.scaler.state_dict(), "rng": rng_state()}
        if self.ctx.world_size > 1:
            state["world_size"], state["rng_per_rank"] = self.ctx.world_size, self.ctx.gather_objects(state["rng"])
        return state

    def load_state_dict(self, state: dict[str, Any], path) -> None:
        load_weights(self.model, state["model"], path, self.cfg.arch)
        self.memory.load_state_dict(state["memory"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng_per_rank"][self.ctx.rank] if "rng_per_rank" in state else state["rng"])

    def sync_buffers(self) -> None:
        """Rank 0's BatchNorm running statistics on every rank (each rank updated its own in the last step)."""
        if self.ctx.world_size > 1:
            for buffer in self.model.buffers():
                torch.distributed.broadcast(buffer, src=0)

    # ------------------------------------------------------------------ one step
    def step(self, images: torch.Tensor, labels: torch.Tensor, stage2: Stage2 | None,
             variant: VariantPolicy) -> torch.Tensor:
        """One optimisation step on a batch whose images have memory rows ``labels``; returns the recipe's
        terms (0 where unused), L and the number of images Eq. 2 ranks right, without a host sync."""
        images = images.to(self.device, non_blocking=True)
        if uses_channels_last(self.cfg, self.device):
            images = images.contiguous(memory_format=torch.channels_last)
        groups = self.memory.label_camera[labels]  # softmax group of each image (its camera for ICS)
        use_amp, amp_dtype = amp_settings(self.cfg, self.device)
        with torch.autocast(self.device.type, dtype=amp_dtype, enabled=use_amp):
            g, f = self.train_model(images)
        g, f = g.float(), f.float()
        log_probs = self.memory.log_probs(f, groups)
        image_prototypes = stage2.assignment[labels] if stage2 is not None else None
        inputs = StepInputs(g, f, log_probs, labels, groups, image_prototypes,
                            stage2.memory if stage2 is not None else None)
        terms = loss_terms(self.recipe, inputs, 2 if stage2 is not None else 1, variant.uses)
        loss = total_loss(*terms.values(), weights=[term.weight for term in self.recipe])
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        # Eq. 1 with the whole global batch, in rank order, on every rank: K and K' stay identical everywhere
        f_all, labels_all = self.ctx.gather(f.detach()), self.ctx.gather(labels)
        self.memory.update(f_all, labels_all)
        if stage2 is not None:
            stage2.memory.update(f_all, self.ctx.gather(image_prototypes))
        zero = torch.zeros((), device=self.device)
        correct = (log_probs.detach().argmax(dim=1) == labels).sum()
        return torch.stack([*(zero if t is None else t.detach() for t in terms.values()), loss.detach(),
                            correct.to(loss.dtype)])


def uses_channels_last(cfg: PiridConfig, device: torch.device) -> bool:
    """NHWC activations: ``cfg.channels_last``, or on CUDA only when it is None."""
    return device.type == "cuda" if cfg.channels_last is None else cfg.channels_last


def uses_sync_batchnorm(cfg: PiridConfig, device: torch.device, ctx: DistributedContext) -> bool:
    """SyncBatchNorm for several CUDA processes when ``cfg.sync_batchnorm`` (torch has it on GPUs only)."""
    return cfg.sync_batchnorm and ctx.world_size > 1 and device.type == "cuda"


def amp_settings(cfg: PiridConfig, device: torch.device) -> tuple[bool, torch.dtype]:
    """``(enabled, dtype)`` of autocast: CUDA only, bf16 where supported, else fp16 (with a GradScaler)."""
    use_amp = cfg.amp and device.type == "cuda"
    return use_amp, torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16


# --------------------------------------------------------------------------- one epoch
def load_train_images(cfg: PiridConfig, dataset, device: torch.device) -> torch.Tensor | None:
    """The decoded training set on ``device`` for the in-memory pipeline, or None for the DataLoader."""
    if cfg.input_pipeline == "tensor" or (cfg.input_pipeline == "auto" and device.type == "cuda"):
        return data_lib.load_image_tensor(dataset.train, cfg.height, cfg.width).to(device)
    return None


def stage2_sampling_labels(cfg: PiridConfig, labels: LabelSpace, stage2: Stage2 | None) -> np.ndarray | None:
    """Per training image, what stage 2's P-K sampler groups by (``cfg.stage2_sampling``): its prototype
    (``"prototype"``; noise IDs' images are not drawn), its prototype where that one is reliable and else its
    intra-camera ID (``"reliable-prototype"``, :func:`pirid_lite.method.reliability.sampling_labels`), or
    None for ``"intra-id"`` (as in stage 1)."""
    if stage2 is None or cfg.stage2_sampling == "intra-id":
        return None
    assignment = stage2.assignment.cpu().numpy()
    if cfg.stage2_sampling == "prototype":
        return assignment[labels.image_labels]
    reliable = None if stage2.reliable is None else stage2.reliable.cpu().numpy()
    return sampling_labels(assignment, reliable, labels.image_labels)


def epoch_loader(run: "EpochContext", epoch: int, stage2: Stage2 | None):
    """The epoch's batches of P IDs × K images — by memory row, or in stage 2 optionally by prototype
    (``cfg.stage2_sampling``, :func:`stage2_sampling_labels`) — and what it samples by (``"intra-id"``,
    ``"prototype"`` or ``"reliable-prototype"``). With several processes, this rank's disjoint part of every
    batch of the same plan."""
    cfg, dataset, labels = run.cfg, run.dataset, run.labels
    sample_by, sampled_by = labels.image_labels, "intra-id"
    by_prototype = stage2_sampling_labels(cfg, labels, stage2)
    if by_prototype is not None:
        found = len(np.unique(by_prototype[by_prototype >= 0]))
        if found >= cfg.num_ids_per_batch:
            sample_by, sampled_by = by_prototype, cfg.stage2_sampling
        else:  # a P-K batch needs P distinct prototypes; the grouping may merge nearly everything
            warnings.warn(f"epoch {epoch + 1}: only {found} sampling groups for P={cfg.num_ids_per_batch} "
                          "per batch; this epoch samples by intra-camera ID instead")
    seed = cfg.seed * 100_003 + epoch
    share = dict(rank=run.ctx.rank, world_size=run.ctx.world_size)
    num_batches = batches_per_epoch(cfg, len(dataset.train))
    if run.train_images is not None:
        return TensorTrainLoader(run.train_images, dataset.train, sample_by, cfg, seed, num_batches, **share), sampled_by
    return data_lib.make_train_loader(dataset.train, sample_by, cfg, seed=seed, epoch_batches=num_batches,
                                      **share), sampled_by


def batches_per_epoch(cfg: PiridConfig, num_train_images: int) -> int:
    """Steps of one epoch: ``cfg.iters_per_epoch``, or one pass over the training images in batches of P·K."""
    return cfg.iters_per_epoch or max(1, num_train_images // cfg.batch_size)


def _first_nonfinite(kept: torch.Tensor, terms: torch.Tensor) -> torch.Tensor:
    """``kept`` until a step has a non-finite loss term, then that step's terms; no host sync."""
    return torch.where(torch.isfinite(kept).all() & ~torch.isfinite(terms).all(), terms, kept)


def run_steps(run: "EpochContext", loader, stage2: Stage2 | None,
              on_nonfinite: Callable[[dict[str, float]], Exception], desc: str = "") -> dict[str, float]:
    """The steps of one epoch; returns the mean of every loss term (``loss_<name>``), ``loss_total`` and
    ``intra_accuracy``. A non-finite loss raises ``on_nonfinite(terms of the first bad step)``."""
    state, recipe = run.state, run.state.recipe
    num_terms = len(recipe)
    state.model.train()
    sums = torch.zeros(num_terms + 2, device=state.device)   # terms..., L, Eq. 2 correct
    first_bad = torch.zeros(num_terms, device=state.device)  # terms of the first step with a non-finite one
    seen = 0
    for images, _, _, index in tqdm(loader, desc=desc, leave=False, disable=not run.progress):
        step = state.step(images, run.image_labels[index.to(state.device, non_blocking=True)], stage2, run.variant)
        sums += step.detach()
        first_bad = _first_nonfinite(first_bad, step[:num_terms])
        seen += len(index)
    if state.ctx.world_size > 1:  # one sync per epoch: every rank sees every rank's sums, so all stop together
        sums, seen = state.ctx.sum(sums), seen * state.ctx.world_size
        sums[:num_terms + 1] /= state.ctx.world_size  # loss terms: mean over ranks; Eq. 2 hits: summed
        per_rank = state.ctx.gather(first_bad.unsqueeze(0))  # (ranks, terms): the first rank with a bad step
        first_bad = per_rank[int((~torch.isfinite(per_rank).all(1)).float().argmax())]
    if not torch.isfinite(sums[:num_terms + 1]).all():  # a non-finite step leaves its sum non-finite: one check
        raise on_nonfinite({term.paper: value for term, value in zip(recipe, first_bad.tolist())
                            if not math.isfinite(value)})
    means = (sums / max(1, len(loader))).tolist()
    record = {logkeys.loss_key(term.name): mean for term, mean in zip(recipe, means)}
    record[logkeys.LOSS_TOTAL] = means[num_terms]
    record[logkeys.INTRA_ACCURACY] = sums[num_terms + 1].item() / max(1, seen)
    return record
