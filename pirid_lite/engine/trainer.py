"""The two-stage PIRID training procedure (paper §2.4, §3.1).

Stage 1 (epochs ``1..cfg.stage1_epochs``): L_intra only (Eq. 3). Stage 2 (the rest): at the start of every
epoch the IDs are grouped into prototypes (§2.3) and the model trains with L = L_intra + L_inter_ID +
L_inter_triplet (Eq. 7). One epoch is :func:`pirid_lite.engine.epoch.train_epoch`; this module is the run
around it: start (fresh, resumed, or from another variant's stage 1), save every epoch, evaluate, write the
run's files (:mod:`pirid_lite.engine.runfiles`). What each variant changes is in :mod:`pirid_lite.variants`.

Only the two diagnostic variants read the dataset's hidden ground truth for training. The ICS variants
read it solely to *log* prototype quality, which never feeds back into training.
"""
from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any, Callable

import torch

from .. import logkeys
from ..distributed import SINGLE_PROCESS, DistributedContext
from ..errors import NonFiniteLossError
from ..evaluation.evaluate import evaluate_model, extract_items
from ..method.losses import LOSS_TERMS
from ..utils import device_description, git_commit, repo_relative, resolve_device
from ..variants import policy
from .epoch import EpochContext, train_epoch
from .epoch_prototypes import fresh_centroids
from .resume import resume_from_checkpoint, start_from_stage1
from .runfiles import CHECKPOINT, RunFiles
from .training import rng_state, set_rng_state, uses_sync_batchnorm


class Trainer:
    """Runs one PIRID training (any variant) and writes its files under ``out_dir`` (:mod:`pirid_lite.engine.runfiles`).
    ``save_features`` also writes the test features before and after training (Figure 3) and the training
    images' features at the end of stage 1 and at the end; ``log`` receives
    one line per epoch; ``ctx`` is this process's place in a ``torchrun`` launch (only rank 0 writes)."""

    def __init__(self, cfg, dataset, out_dir: str | Path, *, progress: bool = True, save_features: bool = False,
                 log: Callable[[str], None] = print, ctx: DistributedContext = SINGLE_PROCESS,
                 device: torch.device | None = None) -> None:
        self.cfg, self.dataset, self.ctx = cfg, dataset, ctx
        self.files = RunFiles(out_dir, writable=ctx.is_main)
        self.progress, self.save_features = progress and ctx.is_main, save_features
        self.log = log if ctx.is_main else (lambda _: None)
        self.variant = policy(cfg.variant)
        self.device = device or resolve_device(cfg.device)  # once per run; everything below receives it
        self.run: EpochContext | None = None
        self.history: list[dict[str, Any]] = []
        self.saved_epoch: int | None = None  # epochs held by the checkpoint on disk, once this run wrote/read it

    def setup(self) -> EpochContext:
        """The run's epoch context, built (seeded) once: the network, Adam, the schedule and K."""
        if self.run is None:
            self.run = EpochContext.build(self.cfg, self.dataset, self.device, self.ctx, self.progress)
        return self.run

    @property
    def model(self) -> torch.nn.Module:
        return self.setup().model

    @property
    def memory(self):
        return self.setup().memory

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """One epoch of §2.4 (0-based), with an evaluation when ``cfg.eval_every`` asks: its log record."""
        record = train_epoch(self.setup(), epoch,
                             lambda bad: NonFiniteLossError(nonfinite_message(epoch, bad, self.checkpoint_note())))
        if self.cfg.eval_every and (epoch + 1) % self.cfg.eval_every == 0 and epoch + 1 < self.cfg.epochs:
            record.update(self.evaluate())
        return record

    def fit(self, resume: bool = False, stop_after_epoch: int | None = None,
            stage1_from: str | Path | None = None) -> dict[str, Any]:
        """Train (or continue with ``resume``), evaluate, write the run's files and return the final record.
        ``stop_after_epoch`` ends the call after that many epochs, as if the run were killed there (the
        checkpoint is complete); ``stage1_from`` starts stage 2 from another variant's ``stage1.pt``
        (:func:`pirid_lite.engine.resume.start_from_stage1`)."""
        self.files.path.mkdir(parents=True, exist_ok=True)
        self.setup()
        record = provenance(self)
        self.log("PIRID run: " + " ".join(f"{k}={record[k]}" for k in ("variant", "profile", "dataset", "seed", "device",
                                                                      "imagenet_weights")))
        start_epoch = self._start(resume, stage1_from, record)
        # wall time already spent before a resume counts too
        started = time.perf_counter() - (self.history[-1][logkeys.SECONDS] if self.history else 0.0)
        try:
            if self._train_epochs(start_epoch, started, stop_after_epoch):
                return {"stopped_after_epoch": self.saved_epoch}
            metrics = self.evaluate()
        except KeyboardInterrupt:  # Ctrl-C: every checkpoint write is atomic, so the last one is whole
            self.log(f"interrupted: {self.checkpoint_note()}; fit(resume=True) continues from it")
            raise
        return self._finish(metrics, record, started)

    def _start(self, resume: bool, stage1_from: str | Path | None, record: dict[str, Any]) -> int:
        """The first epoch to train: after this run's checkpoint, after a donor's stage 1, or 0."""
        if resume and self.files.file(CHECKPOINT).exists():
            self.history, self.saved_epoch = resume_from_checkpoint(self.files, self.run.state, self.cfg, self.ctx)
            if self.ctx.is_main:
                self.files.write_log(self.history)
            self.log(f"resumed from {self.files.file(CHECKPOINT)} after epoch {self.saved_epoch}")
            return self.saved_epoch
        self.history, start_epoch = [], 0
        if self.save_features:  # the untrained network, before a shared stage 1 replaces it
            write_test_features(self, "initial")
        if stage1_from is not None:
            self.history, start_epoch = start_from_stage1(Path(stage1_from), self.run.state, self.cfg, self.variant,
                                                          self.ctx)
            record["stage1_from"] = repo_relative(stage1_from)
            self.log(f"stage 1 taken from {stage1_from}")
        if self.ctx.is_main:
            self.files.write_config(self.cfg, record)
            self.files.write_log(self.history)
        return start_epoch

    def _train_epochs(self, start_epoch: int, started: float, stop_after_epoch: int | None) -> bool:
        """Epochs ``start_epoch..cfg.epochs-1``, each saved (checkpoint, log) when complete; True when
        ``stop_after_epoch`` ended the loop early."""
        for epoch in range(start_epoch, self.cfg.epochs):
            record = self.train_epoch(epoch)
            record[logkeys.SECONDS] = round(time.perf_counter() - started, 2)
            self.history.append(record)
            self._save(epoch)
            if self.save_features and epoch + 1 == self.cfg.stage1_epochs:  # the network that stage 2 starts from
                write_train_features(self, "stage1", self.run.train_features())
            self.log(format_epoch(record))
            if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch and epoch + 1 < self.cfg.epochs:
                return True
        return False

    def _save(self, epoch: int) -> None:
        """The schedule steps; the checkpoint and log of ``epoch`` are written whole before any rank goes on."""
        state = self.run.state
        state.scheduler.step()
        saved = state.state_dict()  # a collective with several processes: every rank calls it
        if self.ctx.is_main:
            checkpoint = {"epoch": epoch, "config": self.cfg.to_dict(), **saved, "history": self.history}
            self.files.write_checkpoint(checkpoint)
            self.saved_epoch = epoch + 1  # whole on disk now, whatever happens before the barrier
            if self.variant.shares_stage1 and epoch + 1 == self.cfg.stage1_epochs:
                self.files.write_stage1_checkpoint(checkpoint)
            self.files.write_log(self.history)
        self.ctx.barrier()
        self.saved_epoch = epoch + 1

    def _finish(self, metrics: dict[str, float], record: dict[str, Any], started: float) -> dict[str, Any]:
        """The end-of-run files: memory bank (with the final fresh centroids), features, metrics."""
        train_features = self.run.train_features()
        centroids = fresh_centroids(train_features, self.run.labels)
        if self.save_features:
            write_test_features(self, "final")
            write_train_features(self, "final", train_features)
        result = {"metrics": metrics, "provenance": record, "config": self.cfg.to_dict(),
                  "wall_seconds": round(time.perf_counter() - started, 2),
                  "final_epoch": self.history[-1] if self.history else None}
        if self.ctx.is_main:
            self.files.write_memory_bank(self.memory.features, self.memory.label_camera, centroids)
            self.files.write_metrics(result)
        self.ctx.barrier()
        self.log("final: " + "  ".join(f"{k}={v:.2f}" for k, v in metrics.items()))
        return result

    def checkpoint_note(self) -> str:
        """What a stopped run leaves on disk, for its messages."""
        if self.saved_epoch is None:
            return f"no checkpoint of this run was written yet in {self.files.path}"
        return f"{self.files.file(CHECKPOINT)} holds epoch {self.saved_epoch} (complete)"

    def release(self) -> None:
        """Drop the training state (and its DDP wrapper) while the process group still exists."""
        self.run = None
        gc.collect()

    def evaluate(self) -> dict[str, float]:
        """R1/R5/R10/mAP on the test split (sharded over the ranks of a distributed run)."""
        return evaluate_model(self.model, self.dataset, self.cfg, self.device, self.ctx)


def nonfinite_message(epoch: int, bad_terms: dict[str, float], checkpoint_note: str) -> str:
    """Which loss term went non-finite in which epoch, and what was kept."""
    terms = ", ".join(f"{name} = {value}" for name, value in bad_terms.items()) or "their sum L"
    return (f"epoch {epoch + 1}: the loss became non-finite ({terms}); the run stopped without saving this "
            f"epoch, {checkpoint_note} (try a lower --set lr=...)")


def evaluate_untrained(trainer: Trainer) -> dict[str, float]:
    """R1/R5/R10/mAP before training (the floor); the random state is kept, so ``trainer.fit`` trains as
    without it."""
    trainer.setup()  # seeded first: the state kept is the one fit() starts from
    saved = rng_state()
    try:
        return trainer.evaluate()
    finally:
        set_rng_state(saved)


def write_test_features(trainer: Trainer, stage: str) -> None:
    """L2-normalised f(x) of query+gallery with pids/camids, for Figure 3 (t-SNE)."""
    items = list(trainer.dataset.query) + list(trainer.dataset.gallery)
    features = extract_items(trainer.model, items, trainer.cfg.replace(eval_flip=False), trainer.device, trainer.ctx)
    if trainer.ctx.is_main:
        trainer.files.write_features(stage, *features)


def write_train_features(trainer: Trainer, stage: str, features: torch.Tensor) -> None:
    """The training images' features with their labels (notebook 03's groupings on the same images)."""
    if trainer.ctx.is_main:
        trainer.files.write_train_features(stage, features, trainer.run.image_labels)


def provenance(trainer: Trainer) -> dict[str, Any]:
    """Where a run's numbers come from, for its config.json and metrics.json."""
    model, dataset, ctx = trainer.model, trainer.dataset, trainer.ctx
    return {
        "variant": trainer.cfg.variant, "profile": trainer.cfg.profile, "seed": trainer.cfg.seed,
        "dataset": getattr(dataset, "name", "?"),
        "dataset_root": repo_relative(getattr(dataset, "root", "")),  # no machine path in run records
        "device": device_description(trainer.device), "git_commit": git_commit(),
        "torch": torch.__version__, "imagenet_weights": model.imagenet_weights,
        "weights_source": getattr(model, "weights_source", "unknown"),
        "num_train_images": len(dataset.train), "num_memory_ids": trainer.run.labels.num_ids,
        **ctx.describe(), "sync_batchnorm": uses_sync_batchnorm(trainer.cfg, trainer.device, ctx),
    }


def format_epoch(record: dict[str, Any]) -> str:
    """One line per epoch for the console: the loss terms, Eq. 2 accuracy, prototype stats and mAP."""
    keys = (*map(logkeys.loss_key, LOSS_TERMS), logkeys.INTRA_ACCURACY, logkeys.NUM_PROTOTYPES,
            logkeys.NOISE_SHARE, logkeys.PURITY, "mAP")
    parts = [f"{k}={record[k]:.3f}" if isinstance(record[k], float) else f"{k}={record[k]}"
             for k in keys if k in record]
    return f"epoch {record[logkeys.EPOCH]:>3} stage {record[logkeys.STAGE]}  " + "  ".join(parts)
