"""The two-stage PIRID training procedure (paper §2.4, §3.1).

Stage 1 (epochs ``1..cfg.stage1_epochs``): L_intra only (Eq. 3). Stage 2 (the rest): at the start of
every epoch the ID centroids in the intra-camera memory K are clustered into prototypes (§2.3), and the
model trains with L = L_intra + L_inter_ID + L_inter_triplet (Eq. 7). Variants (DESIGN.md §2):

* ``pirid``              the full method;
* ``pirid-1``            L_intra for all epochs (Table 2);
* ``pirid-2``            no L_inter_triplet (Table 2);
* ``oracle-prototypes``  ground-truth cross-camera grouping of the IDs instead of DBSCAN (diagnostic);
* ``supervised``         true cross-camera identities as IDs, one softmax over all of them and each
                         identity its own prototype — the fully supervised upper bound (diagnostic).

Only the two diagnostics read the dataset's hidden ground truth for training. The ICS variants read it
solely to *log* prototype purity, which never feeds back into training.
"""
from __future__ import annotations

import io
import json
import math
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from . import data as data_lib
from .config import PiridConfig
from .diagnostics import cross_camera_nn_accuracy
from .errors import NonFiniteLossError, UserError, user_error_from
from .evaluate import evaluate_model, extract_features
from .losses import batch_hard_triplet_loss, inter_id_loss, intra_camera_loss, total_loss
from .memory import IntraCameraMemory, PrototypeMemory, id_centroids
from .model import build_model
from .prototypes import Prototypes, form_prototypes, prototype_quality, prototypes_from_groups
from .tensor_pipeline import TensorTrainLoader
from .utils import (atomic_torch_save, atomic_write_bytes, atomic_write_json, atomic_write_text,
                    device_description, git_commit, repo_relative, resolve_device, seed_everything)

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
METRICS = "metrics.json"
CONFIG = "config.json"
MEMORY_BANK = "memory_final.pt"
FEATURES = "features_{stage}.npz"
LOSS_TERMS = ("L_intra", "L_inter_ID", "L_inter_triplet")  # the first three entries of a step's loss vector
RESUMABLE_CHANGES = ("epochs", "device")  # config fields --resume may change (device: same run elsewhere)


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The state saved in a run's ``checkpoint.pt``; :class:`UserError` if ``path`` is missing or not one."""
    path = Path(path)
    expected = f"expected a {CHECKPOINT} written by `python -m pirid_lite train`"
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist ({expected})")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:  # whatever unpickling fails with, the file is not a checkpoint
        reason = " ".join(str(error).split())[:200]
        raise UserError(f"{path} is not a pirid_lite checkpoint: torch.load failed with {type(error).__name__}"
                        f" ({reason}); {expected}") from error
    missing = [key for key in ("epoch", "config", "model") if not isinstance(state, dict) or key not in state]
    if missing:
        found = sorted(map(str, state))[:6] if isinstance(state, dict) else type(state).__name__
        raise UserError(f"{path} is not a pirid_lite run checkpoint: it has no {missing} entries (found {found});"
                        f" {expected}")
    return state


def checkpoint_config(state: dict[str, Any], path: str | Path) -> PiridConfig:
    """The PiridConfig a checkpoint was written with (missing fields take today's defaults)."""
    try:
        return PiridConfig.from_dict(state["config"])
    except UserError as error:
        raise UserError(f"{path}: its config does not load ({error})") from error


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], path: str | Path, arch: str) -> None:
    """``model.load_state_dict(weights)``, a :class:`UserError` naming the file if they do not fit."""
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:  # torch lists every missing/unexpected/resized key, over many lines
        detail = " ".join(str(error).split())
        raise UserError(f"{path}: its weights do not fit a {arch} model (not a checkpoint of this arch; "
                        f"{detail[:240]}{'…' if len(detail) > 240 else ''})") from error


def config_differences(saved: PiridConfig, current: PiridConfig, ignore=RESUMABLE_CHANGES) -> list[str]:
    """``"field: checkpoint X, now Y"`` for every field that differs, except those in ``ignore``."""
    old, new = saved.to_dict(), current.to_dict()
    return [f"{key}: checkpoint {old[key]!r}, now {new[key]!r}"
            for key in old if key not in ignore and old[key] != new.get(key)]


def _first_nonfinite(kept: torch.Tensor, terms: torch.Tensor) -> torch.Tensor:
    """``kept`` until a step has a non-finite loss term, then that step's terms; no host sync."""
    return torch.where(torch.isfinite(kept).all() & ~torch.isfinite(terms).all(), terms, kept)


def lr_factor(epoch: int, cfg: PiridConfig) -> float:
    """Learning-rate multiplier of 0-based ``epoch`` (§3.1): linear warm-up, then ÷10 at each milestone."""
    if epoch < cfg.warmup_epochs:
        return cfg.warmup_start_factor + (1.0 - cfg.warmup_start_factor) * epoch / cfg.warmup_epochs
    return cfg.lr_gamma ** sum(epoch >= milestone for milestone in cfg.lr_milestones)


@dataclass
class LabelSpace:
    """What the memory bank's rows mean for a variant.

    ``image_labels[i]`` is the memory row of training image i, ``id_group[j]`` the softmax group of row j
    (its camera for ICS variants, one group for ``supervised``).
    """

    image_labels: np.ndarray
    id_group: np.ndarray

    @property
    def num_ids(self) -> int:
        return len(self.id_group)


def build_label_space(cfg: PiridConfig, dataset) -> LabelSpace:
    if cfg.variant == "supervised":
        true_ids = dataset.hidden_truth.reveal_per_image(reason="supervised upper bound (diagnostic variant)")
        _, labels = np.unique(true_ids, return_inverse=True)
        return LabelSpace(labels.astype(np.int64), np.zeros(labels.max() + 1, dtype=np.int64))
    labels = np.array([item.label for item in dataset.train], dtype=np.int64)
    return LabelSpace(labels, np.asarray(dataset.ics.label_camera, dtype=np.int64))


class Trainer:
    """Runs one PIRID training (any variant) and writes its files under ``out_dir``.

    Files: ``config.json`` (config + provenance), ``log.jsonl`` (one JSON line per epoch),
    ``checkpoint.pt`` (atomic, every epoch; ``fit(resume=True)`` continues from it) and
    ``metrics.json`` (final R1/R5/R10/mAP with provenance).
    """

    def __init__(self, cfg: PiridConfig, dataset, out_dir: str | Path, *, progress: bool = True,
                 save_features: bool = False, log: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.dataset = dataset
        self.out_dir = Path(out_dir)
        self.progress = progress
        self.save_features = save_features  # also write test-set features before/after training (t-SNE)
        self.log = log
        self.device = resolve_device(cfg.device)
        self.use_amp = cfg.amp and self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if self.use_amp and torch.cuda.is_bf16_supported() else torch.float16
        self.labels = build_label_space(cfg, dataset)
        self.history: list[dict[str, Any]] = []
        self.saved_epoch: int | None = None  # epochs held by the checkpoint on disk, once this run wrote/read it

    # ------------------------------------------------------------------ set-up
    def _build(self) -> None:
        seed_everything(self.cfg.seed)
        with user_error_from(ValueError, FileNotFoundError):  # unsupported arch, bad `pretrained` file
            self.model = build_model(self.cfg).to(self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.memory = IntraCameraMemory(torch.as_tensor(self.labels.id_group), self.model.feature_dim,
                                        momentum=self.cfg.memory_momentum, temperature=self.cfg.temperature,
                                        renormalize=self.cfg.memory_renormalize).to(self.device)
        self.image_labels = torch.as_tensor(self.labels.image_labels, device=self.device)
        self.train_images = None
        if self.cfg.input_pipeline == "tensor" or (self.cfg.input_pipeline == "auto" and self.device.type == "cuda"):
            self.train_images = data_lib.load_image_tensor(self.dataset.train, self.cfg.height,
                                                           self.cfg.width).to(self.device)
        self.train_model = torch.compile(self.model) if self.cfg.compile else self.model

    def _train_features(self) -> torch.Tensor:
        """Eval-mode, L2-normalised f(x) of every training image, in dataset order (one batched pass)."""
        loader = data_lib.make_test_loader(self.dataset.train, self.cfg)
        features, _, _ = extract_features(self.model, loader, self.device, amp=self.cfg.amp)
        return features.to(self.device)

    def _initialise_memory(self) -> None:
        """K ← per-ID mean of the initial model's normalised features (DESIGN.md §2, Eq. 1 row)."""
        self.memory.initialize(self._train_features(), self.image_labels)

    def _clustering_input(self) -> torch.Tensor:
        """What §2.3 clusters: K's rows (``prototype_source="memory"``, the paper's words) or the per-ID means
        of freshly extracted eval-mode features (``"fresh"``, the cluster-contrast / SpCL reading)."""
        if self.cfg.prototype_source == "fresh":
            return id_centroids(self._train_features(), self.image_labels, self.labels.num_ids)
        return self.memory.features.detach()

    def _describe(self) -> dict[str, Any]:
        return {
            "variant": self.cfg.variant, "profile": self.cfg.profile, "seed": self.cfg.seed,
            "dataset": getattr(self.dataset, "name", "?"),
            "dataset_root": repo_relative(getattr(self.dataset, "root", "")),  # no machine path in run records
            "device": device_description(self.device), "git_commit": git_commit(),
            "torch": torch.__version__, "imagenet_weights": self.model.imagenet_weights,
            "weights_source": getattr(self.model, "weights_source", "unknown"),
            "num_train_images": len(self.dataset.train), "num_memory_ids": self.labels.num_ids,
        }

    # ------------------------------------------------------------------ prototypes
    def _form_prototypes(self) -> Prototypes:
        """§2.3: re-cluster the ID centroids into prototypes (DBSCAN) — or the oracle/identity grouping."""
        bank = self._clustering_input()
        if self.cfg.variant == "supervised":  # every true identity is its own prototype
            return prototypes_from_groups(bank, torch.arange(self.labels.num_ids, device=bank.device),
                                          keep_singletons=True)
        if self.cfg.variant == "oracle-prototypes":
            truth = self.dataset.hidden_truth.reveal_per_label(reason="oracle-prototypes diagnostic variant")
            return prototypes_from_groups(bank, torch.as_tensor(truth, device=bank.device))
        return form_prototypes(bank, torch.as_tensor(self.labels.id_group, device=bank.device),
                               eps=self.cfg.dbscan_eps, min_samples=self.cfg.dbscan_min_samples,
                               metric=self.cfg.cluster_metric, cannot_link=self.cfg.cannot_link,
                               k1=self.cfg.jaccard_k1, k2=self.cfg.jaccard_k2)

    def _prototype_diagnostics(self, prototypes: Prototypes) -> dict[str, Any]:
        """Purity etc. against the hidden truth — logged only, never used for training."""
        if self.cfg.variant == "supervised":
            return {"num_prototypes": prototypes.num_prototypes, "noise_share": prototypes.noise_share}
        truth = self.dataset.hidden_truth.reveal_per_label(reason="prototype diagnostics (log only)")
        # how often K's nearest other-camera row is the same person: what clustering could build on
        nn_accuracy = cross_camera_nn_accuracy(self.memory.features.detach().cpu(), self.labels.id_group, truth)
        return {**prototype_quality(prototypes.assignment.cpu(), truth), "memory_nn_accuracy": nn_accuracy}

    # ------------------------------------------------------------------ one epoch
    def _epoch_loader(self, epoch: int, proto_labels: torch.Tensor | None):
        """Batches of P IDs × K images: by memory ID, or in stage 2 optionally by prototype (cross-camera).
        Returns the loader and what it samples by (``"intra-id"`` or ``"prototype"``)."""
        sample_by, sampled_by = self.labels.image_labels, "intra-id"
        if proto_labels is not None and self.cfg.stage2_sampling == "prototype":
            by_prototype = proto_labels[self.image_labels].cpu().numpy()
            found = len(np.unique(by_prototype[by_prototype >= 0]))
            if found >= self.cfg.num_ids_per_batch:
                sample_by, sampled_by = by_prototype, "prototype"
            else:  # a P-K batch needs P distinct prototypes; DBSCAN may merge nearly everything
                warnings.warn(f"epoch {epoch + 1}: only {found} prototypes for P={self.cfg.num_ids_per_batch} "
                              "prototypes per batch; this epoch samples by intra-camera ID instead")
        num_batches = self.cfg.iters_per_epoch or max(1, len(self.dataset.train) // self.cfg.batch_size)
        seed = self.cfg.seed * 100_003 + epoch
        if self.train_images is not None:
            loader = TensorTrainLoader(self.train_images, self.dataset.train, sample_by, self.cfg, seed, num_batches)
        else:
            loader = data_lib.make_train_loader(self.dataset.train, sample_by, self.cfg,
                                                seed=seed, epoch_batches=num_batches)
        return loader, sampled_by

    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        stage = 1 if epoch < self.cfg.stage1_epochs or not self.cfg.uses_inter_losses else 2
        record: dict[str, Any] = {"epoch": epoch + 1, "stage": stage, "lr": self.optimizer.param_groups[0]["lr"]}
        proto_labels = proto_memory = None
        if stage == 2:
            prototypes = self._form_prototypes()
            record.update(self._prototype_diagnostics(prototypes))
            if prototypes.num_prototypes == 0:
                warnings.warn(f"epoch {epoch + 1}: DBSCAN found no prototype (eps={self.cfg.dbscan_eps}, "
                              f"metric={self.cfg.cluster_metric}); this epoch falls back to L_intra only")
                stage = record["stage"] = 1
                record["fallback_intra_only"] = True
            else:
                proto_labels = prototypes.assignment.to(self.device)
                proto_memory = PrototypeMemory(prototypes.centroids.to(self.device), self.cfg.memory_momentum,
                                               self.cfg.temperature, self.cfg.memory_renormalize)

        self.model.train()
        sums = torch.zeros(5, device=self.device)  # intra, inter_id, triplet, total, intra-correct
        first_bad = torch.zeros(3, device=self.device)  # loss terms of the first step with a non-finite one
        seen = 0
        loader, record["sampled_by"] = self._epoch_loader(epoch, proto_labels)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{self.cfg.epochs} (stage {stage})", leave=False,
                   disable=not self.progress)
        for images, _, camids, index in bar:
            step = self._train_step(images, camids, index, proto_labels, proto_memory)
            sums += step.detach()
            first_bad = _first_nonfinite(first_bad, step[:3])
            seen += len(index)
        if not torch.isfinite(sums[:4]).all():  # a non-finite step leaves its sum non-finite: one check
            raise NonFiniteLossError(self._nonfinite_message(epoch, first_bad))
        means = (sums / max(1, len(loader))).tolist()
        record.update(loss_intra=means[0], loss_inter_id=means[1], loss_triplet=means[2], loss_total=means[3],
                      intra_accuracy=sums[4].item() / max(1, seen))
        return record

    def _train_step(self, images, camids, index, proto_labels, proto_memory) -> torch.Tensor:
        """One optimisation step; returns [L_intra, L_inter_ID, L_triplet, L, #correct] without a host sync."""
        images = images.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        camids = camids.to(self.device, non_blocking=True)
        labels = self.image_labels[index.to(self.device, non_blocking=True)]
        groups = self.memory.label_camera[labels]  # softmax group of each image (its camera for ICS)
        zero = torch.zeros((), device=self.device)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            g, f = self.train_model(images)
        g, f = g.float(), f.float()
        log_probs = self.memory.log_probs(f, groups)
        l_intra = intra_camera_loss(log_probs, labels, groups)
        l_inter = l_triplet = zero
        if proto_memory is not None:
            image_protos = proto_labels[labels]
            l_inter = inter_id_loss(proto_memory.logits(f), image_protos)
            if self.cfg.uses_triplet:
                l_triplet = batch_hard_triplet_loss(g, image_protos, self.cfg.triplet_margin)
        loss = total_loss(l_intra, l_inter if proto_memory is not None else None,
                          l_triplet if proto_memory is not None and self.cfg.uses_triplet else None)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.memory.update(f.detach(), labels)
        if proto_memory is not None:
            proto_memory.update(f.detach(), image_protos)
        correct = (log_probs.detach().argmax(dim=1) == labels).sum()
        return torch.stack([l_intra.detach(), l_inter.detach(), l_triplet.detach(), loss.detach(),
                            correct.to(loss.dtype)])

    # ------------------------------------------------------------------ persistence
    def _save_checkpoint(self, epoch: int) -> None:
        atomic_torch_save({
            "epoch": epoch, "config": self.cfg.to_dict(), "model": self.model.state_dict(),
            "memory": self.memory.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
            "history": self.history,
        }, self.out_dir / CHECKPOINT)

    def _load_checkpoint(self) -> int:
        path = self.out_dir / CHECKPOINT
        state = read_checkpoint(path, map_location=self.device)
        differences = config_differences(checkpoint_config(state, path), self.cfg)
        if differences:
            raise UserError(f"cannot resume from {path}: it was written with a different config "
                            f"({'; '.join(differences)}); only {' and '.join(RESUMABLE_CHANGES)} may change on "
                            f"resume — use the same settings or a new --out folder")
        if int(state["epoch"]) + 1 > self.cfg.epochs:
            raise UserError(f"cannot resume from {path}: it already holds {int(state['epoch']) + 1} epochs, "
                            f"more than epochs={self.cfg.epochs}")
        load_weights(self.model, state["model"], path, self.cfg.arch)
        self.memory.load_state_dict(state["memory"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"].cpu())
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        if state["rng"]["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.history = list(state["history"])
        self._rewrite_log()
        self.saved_epoch = int(state["epoch"]) + 1
        return self.saved_epoch

    def _rewrite_log(self) -> None:
        atomic_write_text(self.out_dir / LOG, "".join(json.dumps(r) + "\n" for r in self.history))

    # ------------------------------------------------------------------ public
    def setup(self) -> None:
        """Seed, build model/optimiser/schedule, and initialise the memory K from the initial model."""
        self._build()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda e: lr_factor(e, self.cfg))
        self._initialise_memory()

    def fit(self, resume: bool = False, stop_after_epoch: int | None = None) -> dict[str, Any]:
        """Train (or continue with ``resume``), evaluate, write the run's files and return the final record.

        ``stop_after_epoch`` ends the call after that many epochs, as if the run were killed there
        (the checkpoint is complete; used to test that resuming reproduces an uninterrupted run).
        """
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.setup()
        provenance = self._describe()
        self.log(f"PIRID run: variant={self.cfg.variant} profile={self.cfg.profile} dataset={provenance['dataset']} "
                 f"seed={self.cfg.seed} device={provenance['device']} imagenet_weights={provenance['imagenet_weights']}")
        start_epoch = 0
        if resume and (self.out_dir / CHECKPOINT).exists():
            start_epoch = self._load_checkpoint()
            self.log(f"resumed from {self.out_dir / CHECKPOINT} after epoch {start_epoch}")
        else:
            atomic_write_json(self.out_dir / CONFIG, {"config": self.cfg.to_dict(), "provenance": provenance})
            self.history = []
            self._rewrite_log()
            if self.save_features:
                self._write_test_features("initial")
        # wall time already spent before a resume counts too
        started = time.perf_counter() - (self.history[-1]["seconds"] if self.history else 0.0)
        try:
            stopped = self._train_epochs(start_epoch, started, stop_after_epoch)
            if stopped:
                return {"stopped_after_epoch": stopped}
            metrics = self.evaluate()
        except KeyboardInterrupt:  # Ctrl-C: every checkpoint write is atomic, so the last one is whole
            self.log(f"interrupted: {self._checkpoint_note()}; fit(resume=True) continues from it")
            raise
        atomic_torch_save({"features": self.memory.features.cpu(), "label_camera": self.memory.label_camera.cpu()},
                          self.out_dir / MEMORY_BANK)
        if self.save_features:
            self._write_test_features("final")
        result = {"metrics": metrics, "provenance": provenance, "config": self.cfg.to_dict(),
                  "wall_seconds": round(time.perf_counter() - started, 2),
                  "final_epoch": self.history[-1] if self.history else None}
        atomic_write_json(self.out_dir / METRICS, result)
        self.log("final: " + "  ".join(f"{k}={v:.2f}" for k, v in metrics.items()))
        return result

    def _train_epochs(self, start_epoch: int, started: float, stop_after_epoch: int | None) -> int | None:
        """Epochs ``start_epoch..cfg.epochs-1``, each saved (checkpoint, log) when it is complete; returns
        the epoch count when ``stop_after_epoch`` ended the loop early, else None."""
        for epoch in range(start_epoch, self.cfg.epochs):
            record = self._train_epoch(epoch)
            if self.cfg.eval_every and (epoch + 1) % self.cfg.eval_every == 0 and epoch + 1 < self.cfg.epochs:
                record.update(self.evaluate())
            record["seconds"] = round(time.perf_counter() - started, 2)
            self.history.append(record)
            self.scheduler.step()
            self._save_checkpoint(epoch)
            self.saved_epoch = epoch + 1
            self._rewrite_log()
            self.log(_format_epoch(record))
            if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch and epoch + 1 < self.cfg.epochs:
                return epoch + 1
        return None

    def _checkpoint_note(self) -> str:
        """What a stopped run leaves on disk, for its messages."""
        if self.saved_epoch is None:
            return f"no checkpoint of this run was written yet in {self.out_dir}"
        return f"{self.out_dir / CHECKPOINT} holds epoch {self.saved_epoch} (complete)"

    def _nonfinite_message(self, epoch: int, first_bad: torch.Tensor) -> str:
        """Which loss term went non-finite in which epoch, and what was kept."""
        terms = [f"{name} = {value}" for name, value in zip(LOSS_TERMS, first_bad.tolist())
                 if not math.isfinite(value)]
        return (f"epoch {epoch + 1}: the loss became non-finite ({', '.join(terms) or 'their sum L'}); the run "
                f"stopped without saving this epoch, {self._checkpoint_note()} (try a lower --set lr=...)")

    def _write_test_features(self, stage: str) -> None:
        """L2-normalised f(x) of query+gallery (float16) with pids/camids, for Figure 3 (t-SNE)."""
        items = list(self.dataset.query) + list(self.dataset.gallery)
        loader = data_lib.make_test_loader(items, self.cfg)
        features, pids, camids = extract_features(self.model, loader, self.device, amp=self.cfg.amp)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, features=features.numpy().astype(np.float16), pids=pids, camids=camids)
        atomic_write_bytes(self.out_dir / FEATURES.format(stage=stage), buffer.getvalue())

    def evaluate(self) -> dict[str, float]:
        return evaluate_model(self.model, self.dataset, self.cfg, self.device)


def _format_epoch(record: dict[str, Any]) -> str:
    keys = ("loss_intra", "loss_inter_id", "loss_triplet", "intra_accuracy", "num_prototypes", "noise_share",
            "purity", "mAP")
    parts = [f"{k}={record[k]:.3f}" if isinstance(record[k], float) else f"{k}={record[k]}"
             for k in keys if k in record]
    return f"epoch {record['epoch']:>3} stage {record['stage']}  " + "  ".join(parts)
