"""The two-stage PIRID training procedure (paper §2.4, §3.1).

Stage 1 (epochs ``1..cfg.stage1_epochs``): L_intra only (Eq. 3). Stage 2 (the rest): at the start of every
epoch the IDs are grouped into prototypes (§2.3, :func:`pirid_lite.epoch_prototypes.prototypes_for_epoch`)
and the model trains with L = L_intra + L_inter_ID + L_inter_triplet (Eq. 7). What each variant changes
(label space, losses, grouping) is in :mod:`pirid_lite.variants`; the step itself in
:mod:`pirid_lite.training`; the run's files in :mod:`pirid_lite.runfiles`.

Only the two diagnostic variants read the dataset's hidden ground truth for training. The ICS variants
read it solely to *log* prototype quality, which never feeds back into training.
"""
from __future__ import annotations

import gc
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from . import logkeys
from .config import STAGE2_ONLY_FIELDS, PiridConfig
from .diagnostics import prototype_diagnostics
from .distributed import SINGLE_PROCESS, DistributedContext
from .epoch_prototypes import fresh_centroids, prototypes_for_epoch, sharded_train_features
from .errors import NonFiniteLossError, UserError
from .evaluate import evaluate_model, extract_items
from .memory import PrototypeMemory
from .runfiles import (CHECKPOINT, RESUMABLE_CHANGES, RunFiles, checkpoint_config, config_differences,
                       read_checkpoint)
from .training import Stage2, TrainingState, epoch_loader, load_train_images, run_epoch, uses_sync_batchnorm
from .utils import device_description, git_commit, repo_relative, resolve_device
from .variants import build_label_space, policy


class Trainer:
    """Runs one PIRID training (any variant) and writes its files under ``out_dir`` (:mod:`pirid_lite.runfiles`).

    ``fit(resume=True)`` continues from the checkpoint; ``save_features`` also writes the test features
    before and after training (Figure 3); ``log`` receives one line per epoch. ``ctx``: this process's
    place in a ``torchrun`` launch (:mod:`pirid_lite.distributed`); only rank 0 writes files and logs.
    """

    def __init__(self, cfg: PiridConfig, dataset, out_dir: str | Path, *, progress: bool = True,
                 save_features: bool = False, log: Callable[[str], None] = print,
                 ctx: DistributedContext = SINGLE_PROCESS) -> None:
        self.cfg, self.dataset, self.ctx = cfg, dataset, ctx
        self.files = RunFiles(out_dir, writable=ctx.is_main)
        self.progress, self.save_features = progress and ctx.is_main, save_features
        self.log = log if ctx.is_main else (lambda _: None)

        self.variant = policy(cfg.variant)
        self.device = resolve_device(cfg.device)
        self.labels = build_label_space(cfg.variant, dataset)
        self.history: list[dict[str, Any]] = []
        self.saved_epoch: int | None = None  # epochs held by the checkpoint on disk, once this run wrote/read it

    def setup(self) -> None:
        """Seed, build model/optimiser/schedule; K[j] ← per-ID mean of the initial features (docs/DESIGN.md §2)."""
        self.state = TrainingState.build(self.cfg, self.labels, self.device, self.ctx)
        self.model, self.memory = self.state.model, self.state.memory
        self.image_labels = torch.as_tensor(self.labels.image_labels, device=self.device)
        self.train_images = load_train_images(self.cfg, self.dataset, self.device)
        self.extract = sharded_train_features(self.ctx, self.train_images)
        self.memory.initialize(self.extract(self.model, self.dataset, self.cfg, self.device), self.image_labels)

    def provenance(self) -> dict[str, Any]:
        return {
            "variant": self.cfg.variant, "profile": self.cfg.profile, "seed": self.cfg.seed,
            "dataset": getattr(self.dataset, "name", "?"),
            "dataset_root": repo_relative(getattr(self.dataset, "root", "")),  # no machine path in run records
            "device": device_description(self.device), "git_commit": git_commit(),
            "torch": torch.__version__, "imagenet_weights": self.model.imagenet_weights,
            "weights_source": getattr(self.model, "weights_source", "unknown"),
            "num_train_images": len(self.dataset.train), "num_memory_ids": self.labels.num_ids,
            **self.ctx.describe(), "sync_batchnorm": uses_sync_batchnorm(self.cfg, self.device, self.ctx),
        }

    # ------------------------------------------------------------------ one epoch (§2.4)
    def stage_of(self, epoch: int) -> int:
        return 2 if self.variant.has_stage2 and epoch >= self.cfg.stage1_epochs else 1

    def _form_stage2(self, epoch: int, record: dict[str, Any]) -> Stage2 | None:
        """§2.3 for this epoch, its diagnostics logged in ``record``; None if DBSCAN found no prototype."""
        prototypes = prototypes_for_epoch(self.model, self.dataset, self.memory, self.cfg, self.labels, self.device,
                                          self.ctx, self.train_images)
        if self.ctx.is_main:
            record.update(prototype_diagnostics(prototypes, self.memory.features, self.labels, self.dataset,
                                                self.cfg.variant))
        if prototypes.num_prototypes == 0:
            warnings.warn(f"epoch {epoch + 1}: DBSCAN found no prototype (eps={self.cfg.dbscan_eps}, "
                          f"metric={self.cfg.cluster_metric}); this epoch falls back to L_intra only")
            record[logkeys.STAGE], record[logkeys.FALLBACK_INTRA_ONLY] = 1, True
            return None
        cfg = self.cfg
        return Stage2(prototypes.assignment.to(self.device),
                      PrototypeMemory(prototypes.centroids.to(self.device), cfg.memory_momentum, cfg.temperature,
                                      cfg.memory_renormalize))

    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        stage = self.stage_of(epoch)
        record = {logkeys.EPOCH: epoch + 1, logkeys.STAGE: stage,
                  logkeys.LR: self.state.optimizer.param_groups[0]["lr"]}
        stage2 = self._form_stage2(epoch, record) if stage == 2 else None
        loader, record[logkeys.SAMPLED_BY] = epoch_loader(self.cfg, self.dataset, self.labels, epoch, stage2,
                                                          self.train_images, self.ctx)
        record.update(run_epoch(self.state, loader, self.image_labels, stage2, self.variant,
                                lambda bad: NonFiniteLossError(self._nonfinite_message(epoch, bad)),
                                desc=f"epoch {epoch + 1}/{self.cfg.epochs} (stage {record[logkeys.STAGE]})",
                                progress=self.progress))
        if self.ctx.world_size > 1:  # all ranks must hold the same state: check it every epoch, log the hashes
            self.state.sync_buffers()
            record[logkeys.RANK_DIGESTS] = self.ctx.check_identical(
                [*self.model.state_dict().values(), self.memory.features,
                 *([stage2.assignment, stage2.memory.features] if stage2 is not None else [])])
        return record

    # ------------------------------------------------------------------ the run
    def fit(self, resume: bool = False, stop_after_epoch: int | None = None,
            stage1_from: str | Path | None = None) -> dict[str, Any]:
        """Train (or continue with ``resume``), evaluate, write the run's files and return the final record.

        ``stop_after_epoch`` ends the call after that many epochs, as if the run were killed there
        (the checkpoint is complete; used to test that resuming reproduces an uninterrupted run).
        ``stage1_from``: another variant's ``stage1.pt`` of the same seed and settings (stage-2 settings,
        ``config.STAGE2_ONLY_FIELDS``, may differ). Stage 1 (L_intra only)
        is the same for every variant with intra-camera IDs and a stage 2 (``VariantPolicy.shares_stage1``),
        so this run starts its stage 2 there, exactly as if it had trained stage 1 itself
        (tests/test_trainer.py checks the bit identity).
        """
        self.files.path.mkdir(parents=True, exist_ok=True)
        self.setup()
        provenance = self.provenance()
        self.log(f"PIRID run: variant={self.cfg.variant} profile={self.cfg.profile} dataset={provenance['dataset']} "
                 f"seed={self.cfg.seed} device={provenance['device']} imagenet_weights={provenance['imagenet_weights']}")
        start_epoch = 0
        if resume and self.files.file(CHECKPOINT).exists():
            start_epoch = self._load_checkpoint()
            self.log(f"resumed from {self.files.file(CHECKPOINT)} after epoch {start_epoch}")
        else:
            self.history = []
            if self.save_features:  # the untrained network, before a shared stage 1 replaces it
                self._write_test_features("initial")
            if stage1_from is not None:
                start_epoch = self._load_stage1(Path(stage1_from))
                provenance["stage1_from"] = repo_relative(stage1_from)
                self.log(f"stage 1 taken from {stage1_from}")
            if self.ctx.is_main:
                self.files.write_config(self.cfg, provenance)
                self.files.write_log(self.history)
        # wall time already spent before a resume counts too
        started = time.perf_counter() - (self.history[-1][logkeys.SECONDS] if self.history else 0.0)
        try:
            if self._train_epochs(start_epoch, started, stop_after_epoch):
                return {"stopped_after_epoch": self.saved_epoch}
            metrics = self.evaluate()
        except KeyboardInterrupt:  # Ctrl-C: every checkpoint write is atomic, so the last one is whole
            self.log(f"interrupted: {self.checkpoint_note()}; fit(resume=True) continues from it")
            raise
        return self._finish(metrics, provenance, started)

    def _train_epochs(self, start_epoch: int, started: float, stop_after_epoch: int | None) -> bool:
        """Epochs ``start_epoch..cfg.epochs-1``, each saved (checkpoint, log) when complete; True when
        ``stop_after_epoch`` ended the loop early."""
        for epoch in range(start_epoch, self.cfg.epochs):
            record = self._train_epoch(epoch)
            if self.cfg.eval_every and (epoch + 1) % self.cfg.eval_every == 0 and epoch + 1 < self.cfg.epochs:
                record.update(self.evaluate())
            record[logkeys.SECONDS] = round(time.perf_counter() - started, 2)
            self.history.append(record)
            self.state.scheduler.step()
            state = self.state.state_dict()  # a collective with several processes: every rank calls it
            if self.ctx.is_main:
                checkpoint = {"epoch": epoch, "config": self.cfg.to_dict(), **state, "history": self.history}
                self.files.write_checkpoint(checkpoint)
                self.saved_epoch = epoch + 1  # whole on disk now, whatever happens before the barrier
                if self.variant.shares_stage1 and epoch + 1 == self.cfg.stage1_epochs:
                    self.files.write_stage1_checkpoint(checkpoint)
                self.files.write_log(self.history)
            self.ctx.barrier()  # a checkpoint is whole on disk before any rank goes on
            self.saved_epoch = epoch + 1
            self.log(format_epoch(record))
            if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch and epoch + 1 < self.cfg.epochs:
                return True
        return False

    def _finish(self, metrics: dict[str, float], provenance: dict[str, Any], started: float) -> dict[str, Any]:
        """The end-of-run files: memory bank (with the final fresh centroids), features, metrics."""
        centroids = fresh_centroids(self.extract(self.model, self.dataset, self.cfg, self.device), self.labels)
        if self.save_features:
            self._write_test_features("final")
        result = {"metrics": metrics, "provenance": provenance, "config": self.cfg.to_dict(),
                  "wall_seconds": round(time.perf_counter() - started, 2),
                  "final_epoch": self.history[-1] if self.history else None}
        if self.ctx.is_main:
            self.files.write_memory_bank(self.memory.features, self.memory.label_camera, centroids)
            self.files.write_metrics(result)
        self.ctx.barrier()
        self.log("final: " + "  ".join(f"{k}={v:.2f}" for k, v in metrics.items()))
        return result

    def _load_checkpoint(self) -> int:
        path = self.files.file(CHECKPOINT)
        state = self.files.checkpoint(map_location=self.device)
        differences = config_differences(checkpoint_config(state, path), self.cfg)
        if differences:
            raise UserError(f"cannot resume from {path}: it was written with a different config "
                            f"({'; '.join(differences)}); only {' and '.join(RESUMABLE_CHANGES)} may change on "
                            f"resume — use the same settings or a new --out folder")
        if state.get("world_size", 1) != self.ctx.world_size:
            raise UserError(f"cannot resume from {path}: it was written by {state.get('world_size', 1)} process(es), "
                            f"this run has {self.ctx.world_size}; resume with the same --nproc_per_node")
        if int(state["epoch"]) + 1 > self.cfg.epochs:
            raise UserError(f"cannot resume from {path}: it already holds {int(state['epoch']) + 1} epochs, "
                            f"more than epochs={self.cfg.epochs}")
        self.saved_epoch = self._restore(state, path)
        if self.ctx.is_main:
            self.files.write_log(self.history)
        return self.saved_epoch

    def _load_stage1(self, path: Path) -> int:
        """Start from another variant's end-of-stage-1 checkpoint (see :meth:`fit`); returns its epochs."""
        if not self.variant.shares_stage1:
            raise UserError(f"stage1_from: variant {self.cfg.variant!r} has no stage 1 shared with other variants")
        if not path.is_file():
            raise UserError(f"stage1_from: {path} does not exist (an ICS run writes stage1.pt after stage 1)")
        state = read_checkpoint(path, self.device)
        differences = config_differences(checkpoint_config(state, path), self.cfg,
                                         ignore=("variant", "device", *STAGE2_ONLY_FIELDS))
        if differences or int(state["epoch"]) + 1 != self.cfg.stage1_epochs or self.ctx.world_size != 1:
            raise UserError(f"stage1_from: {path} is not this run's stage 1 (it holds {int(state['epoch']) + 1} "
                            f"epochs, stage 1 has {self.cfg.stage1_epochs}; differences: "
                            f"{'; '.join(differences) or 'none'}; one process only)")
        return self._restore(state, path)

    def _restore(self, state: dict[str, Any], path: Path) -> int:
        """Training state and history from a checked checkpoint ``state``; returns the epochs it holds."""
        self.state.load_state_dict(state, path)
        self.history = list(state["history"])
        return int(state["epoch"]) + 1

    def checkpoint_note(self) -> str:
        """What a stopped run leaves on disk, for its messages."""
        if self.saved_epoch is None:
            return f"no checkpoint of this run was written yet in {self.files.path}"
        return f"{self.files.file(CHECKPOINT)} holds epoch {self.saved_epoch} (complete)"

    def _nonfinite_message(self, epoch: int, bad_terms: dict[str, float]) -> str:
        """Which loss term went non-finite in which epoch, and what was kept."""
        terms = ", ".join(f"{name} = {value}" for name, value in bad_terms.items()) or "their sum L"
        return (f"epoch {epoch + 1}: the loss became non-finite ({terms}); the run stopped without saving this "
                f"epoch, {self.checkpoint_note()} (try a lower --set lr=...)")

    def _write_test_features(self, stage: str) -> None:
        """L2-normalised f(x) of query+gallery with pids/camids, for Figure 3 (t-SNE)."""
        items = list(self.dataset.query) + list(self.dataset.gallery)
        features = extract_items(self.model, items, self.cfg.replace(eval_flip=False), self.device, self.ctx)
        if self.ctx.is_main:
            self.files.write_features(stage, *features)

    def release(self) -> None:
        """Drop the training state (and its DDP wrapper) while the process group still exists."""
        self.__dict__.pop("state", None), gc.collect()

    def evaluate(self) -> dict[str, float]:
        """R1/R5/R10/mAP on the test split (sharded over the ranks of a distributed run)."""
        return evaluate_model(self.model, self.dataset, self.cfg, self.device, self.ctx)


def format_epoch(record: dict[str, Any]) -> str:
    """One line per epoch for the console: the loss terms, Eq. 2 accuracy, prototype stats and mAP."""
    from .losses import LOSS_TERMS
    keys = (*map(logkeys.loss_key, LOSS_TERMS), logkeys.INTRA_ACCURACY, logkeys.NUM_PROTOTYPES,
            logkeys.NOISE_SHARE, logkeys.PURITY, "mAP")
    parts = [f"{k}={record[k]:.3f}" if isinstance(record[k], float) else f"{k}={record[k]}"
             for k in keys if k in record]
    return f"epoch {record[logkeys.EPOCH]:>3} stage {record[logkeys.STAGE]}  " + "  ".join(parts)
