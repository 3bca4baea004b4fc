"""One run's folder: where its files are, and every read and write of them.

A run (``python -m pirid_lite train``, :class:`pirid_lite.engine.trainer.Trainer`) writes into its folder:

* ``config.json`` — the config and provenance, written when it starts;
* ``log.jsonl`` — one JSON line per finished epoch (keys: :mod:`pirid_lite.logkeys`);
* ``checkpoint.pt`` — everything to resume, rewritten atomically after every epoch (not committed to git);
* ``metrics.json`` — final R1/R5/R10/mAP with config and provenance; its presence means "finished";
* ``memory_final.pt`` — the final memory bank K and the final fresh per-ID centroids (what §2.3 clusters),
  stored as float16 (half the size; read back as float32);
* ``features_{initial,final}.npz`` — test-set features before and after training (Figure 3), on request;
* ``train_features_{stage1,final}.npz`` — the training images' features at the end of stage 1 and at the end,
  with the memory row of each image, on the same request (what an image-level grouping reads; notebook 3).

Every write is atomic (temporary file + rename), so a killed run never leaves half a file.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..config import PiridConfig
from ..method.model import load_weights
from ..errors import UserError, user_error_from
from ..utils import atomic_torch_save, atomic_write_bytes, atomic_write_json, atomic_write_text

CHECKPOINT = "checkpoint.pt"
STAGE1_CHECKPOINT = "stage1.pt"  # the checkpoint at the end of stage 1: other ICS variants of the seed start there
LOG = "log.jsonl"
METRICS = "metrics.json"
CONFIG = "config.json"
MEMORY_BANK = "memory_final.pt"
FEATURES = "features_{stage}.npz"
TRAIN_FEATURES = "train_features_{stage}.npz"
RESUMABLE_CHANGES = ("epochs", "device")  # config fields --resume may change (device: same run elsewhere)


def run_dir(results_root: str | Path, dataset: str, profile: str, variant: str, seed: int,
            tag: str | None = None) -> Path:
    """``<results_root>/runs/<dataset>/<profile>/<variant>[+<tag>]/seed<seed>``: where reproduce puts a run."""
    name = variant if not tag else f"{variant}+{tag}"
    return Path(results_root) / "runs" / dataset / profile / name / f"seed{seed}"


# --------------------------------------------------------------------------- checkpoints
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


def config_differences(saved: PiridConfig, current: PiridConfig, ignore=RESUMABLE_CHANGES) -> list[str]:
    """``"field: checkpoint X, now Y"`` for every field that differs, except those in ``ignore``."""
    old, new = saved.to_dict(), current.to_dict()
    return [f"{key}: checkpoint {old[key]!r}, now {new[key]!r}"
            for key in old if key not in ignore and old[key] != new.get(key)]


def load_model(checkpoint: str | Path, device: str | torch.device = "cpu"):
    """``(model, cfg)``: the network a checkpoint holds, on ``device``, in eval mode."""
    from ..method.model import build_model

    path = Path(checkpoint)
    state = read_checkpoint(path, map_location=device)
    cfg = checkpoint_config(state, path).replace(pretrained=None)  # the checkpoint holds every weight
    with user_error_from(ValueError, FileNotFoundError, prefix=f"{path}: "):
        model = build_model(cfg)
    load_weights(model, state["model"], path, cfg.arch)
    return model.to(device).eval(), cfg


# --------------------------------------------------------------------------- one run folder
class RunFiles:
    """The files of the run in folder ``path`` (see the module docstring)."""

    def __init__(self, path: str | Path, writable: bool = True) -> None:
        self.path = Path(path)
        self.writable = writable  # False on ranks > 0 of a distributed run: only rank 0 writes

    def _target(self, name: str) -> Path:
        if not self.writable:
            raise RuntimeError(f"{self.path / name}: this process may not write the run's files (only rank 0 does)")
        return self.path / name

    def __repr__(self) -> str:
        return f"RunFiles({str(self.path)!r})"

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def is_finished(self) -> bool:
        return (self.path / METRICS).is_file()

    def _require(self, name: str, why: str) -> Path:
        path = self.path / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist ({why})")
        return path

    # ------------------------------------------------------------------ writes
    def write_config(self, cfg: PiridConfig, provenance: dict[str, Any]) -> None:
        atomic_write_json(self._target(CONFIG), {"config": cfg.to_dict(), "provenance": provenance})

    def write_log(self, history: list[dict[str, Any]]) -> None:
        atomic_write_text(self._target(LOG), "".join(json.dumps(record) + "\n" for record in history))

    def write_checkpoint(self, state: dict[str, Any]) -> None:
        atomic_torch_save(state, self._target(CHECKPOINT))

    def write_stage1_checkpoint(self, state: dict[str, Any]) -> None:
        atomic_torch_save(state, self._target(STAGE1_CHECKPOINT))

    def write_metrics(self, result: dict[str, Any]) -> None:
        atomic_write_json(self._target(METRICS), result)

    def write_memory_bank(self, features: torch.Tensor, label_camera: torch.Tensor,
                          fresh_centroids: torch.Tensor | None = None) -> None:
        """K and the fresh centroids as float16, like the saved features: the file is read by notebooks and
        studies, never to resume (the checkpoint holds K in full precision), and the repository keeps some."""
        bank = {"features": features.detach().cpu().half(), "label_camera": label_camera.cpu()}
        if fresh_centroids is not None:
            bank["fresh_centroids"] = fresh_centroids.detach().cpu().half()
        atomic_torch_save(bank, self._target(MEMORY_BANK))

    def write_features(self, stage: str, features: torch.Tensor, pids: np.ndarray, camids: np.ndarray) -> None:
        """Test-set features (float16) with pids/camids, query rows first (Figure 3)."""
        buffer = io.BytesIO()
        np.savez_compressed(buffer, features=features.numpy().astype(np.float16), pids=pids, camids=camids)
        atomic_write_bytes(self._target(FEATURES.format(stage=stage)), buffer.getvalue())

    def write_train_features(self, stage: str, features: torch.Tensor, ids) -> None:
        """Training-image features (float16) with the memory row of each image, in training-set order."""
        buffer = io.BytesIO()
        np.savez_compressed(buffer, features=features.detach().cpu().numpy().astype(np.float16),
                            ids=np.asarray(torch.as_tensor(ids).cpu()))
        atomic_write_bytes(self._target(TRAIN_FEATURES.format(stage=stage)), buffer.getvalue())

    # ------------------------------------------------------------------ reads
    def train_features(self, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features (n, d) float32, memory row of each image (n,))`` saved with ``save_features``
        (``stage`` = "stage1" or "final")."""
        saved = np.load(self._require(TRAIN_FEATURES.format(stage=stage),
                                      "only runs trained with save_features=True (since issue 28) have it"))
        return torch.from_numpy(saved["features"].astype(np.float32)), torch.from_numpy(saved["ids"])

    def checkpoint(self, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        return read_checkpoint(self.path / CHECKPOINT, map_location)

    def load_model(self, device: str | torch.device = "cpu"):
        """``(model, cfg)`` from this run's checkpoint (its last finished epoch)."""
        return load_model(self.path / CHECKPOINT, device)

    def metrics(self) -> dict[str, Any]:
        """``metrics.json``: ``{"metrics", "provenance", "config", "wall_seconds", "final_epoch"}``."""
        return json.loads(self._require(METRICS, "the run has not finished").read_text())

    def config(self) -> PiridConfig:
        return PiridConfig.from_dict(json.loads(self._require(CONFIG, "not a run folder").read_text())["config"])

    def log(self) -> pd.DataFrame:
        """The per-epoch log as a DataFrame, one row per finished epoch."""
        text = self._require(LOG, "no per-epoch log; was the run started?").read_text()
        return pd.DataFrame([json.loads(line) for line in text.splitlines() if line.strip()])

    def features(self, stage: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(features, pids, camids)`` saved with ``save_features`` (``stage`` = "initial" or "final")."""
        saved = np.load(self._require(FEATURES.format(stage=stage), "only runs trained with save_features=True "
                                                                    "have it"))
        return saved["features"], saved["pids"], saved["camids"]

    def memory_bank(self) -> dict[str, torch.Tensor]:
        """``{"features": K (N, d), "label_camera": (N,)[, "fresh_centroids": (N, d)]}`` at the end, features as
        float32 (stored as float16)."""
        why = ("the run has not finished, or its memory bank is not kept: the repository keeps only the banks a "
               "notebook or study opens, see results/README.md")
        bank = torch.load(self._require(MEMORY_BANK, why), weights_only=True)
        return {key: value.float() if value.is_floating_point() else value for key, value in bank.items()}

    def fresh_centroids(self) -> torch.Tensor:
        """The final model's per-ID centroids (what ``prototype_source="fresh"`` clusters), as saved."""
        bank = self.memory_bank()
        if "fresh_centroids" not in bank:
            raise FileNotFoundError(f"{self.path / MEMORY_BANK} holds no fresh_centroids (written by runs of an "
                                    "older version; train the run again to get them)")
        return bank["fresh_centroids"]
