"""Everything the GPU check takes from pirid_lite, in one block (public names only; update here if modules move).

The package's layout since commit d04b2d6 (subpackages method/, engine/, evaluation/, an epoch context)
first, the flat layout before it second, so this check also runs on an older checkout. The three helpers say
how each layout builds an epoch's loader, runs its steps and forms its prototypes; their ``run`` is
``epoch_context(trainer)``: the trainer's epoch context (``trainer.run``), or in the flat layout the trainer
itself, which holds cfg, dataset, labels, state, train_images, image_labels and variant under those names.
"""
from __future__ import annotations

from pirid_lite import datasets
from pirid_lite.config import get_config
from pirid_lite.datasets.synthetic import default_root, generate
from pirid_lite.utils import REPO_ROOT, atomic_write_json, atomic_write_text, git_commit
try:
    from pirid_lite.engine.epoch_prototypes import prototypes_for_epoch
    from pirid_lite.engine.runfiles import RunFiles
    from pirid_lite.engine.trainer import Trainer
    from pirid_lite.engine.training import Stage2, epoch_loader, run_steps
    from pirid_lite.evaluation.evaluate import cosine_distmat, evaluate_rank, retrieval_metrics
    from pirid_lite.method.jaccard import jaccard_distance
    from pirid_lite.method.losses import batch_hard_triplet_loss, inter_id_loss, intra_camera_loss, total_loss
    from pirid_lite.method.memory import IntraCameraMemory, PrototypeMemory
    from pirid_lite.method.model import build_model
    from pirid_lite.method.prototypes import form_prototypes
    LAYOUT = "subpackages"

    def epoch_batches(run, epoch, stage2):
        return epoch_loader(run, epoch, stage2)[0]

    def epoch_steps(run, loader, stage2):
        return run_steps(run, loader, stage2, RuntimeError)

    def epoch_prototypes(run):
        return prototypes_for_epoch(run)
except ImportError:
    from pirid_lite.epoch_prototypes import prototypes_for_epoch
    from pirid_lite.evaluate import cosine_distmat, evaluate_rank, retrieval_metrics
    from pirid_lite.jaccard import jaccard_distance
    from pirid_lite.losses import batch_hard_triplet_loss, inter_id_loss, intra_camera_loss, total_loss
    from pirid_lite.memory import IntraCameraMemory, PrototypeMemory
    from pirid_lite.model import build_model
    from pirid_lite.prototypes import form_prototypes
    from pirid_lite.runfiles import RunFiles
    from pirid_lite.trainer import Trainer
    from pirid_lite.training import Stage2, epoch_loader, run_epoch
    LAYOUT = "flat"

    def epoch_batches(run, epoch, stage2):
        return epoch_loader(run.cfg, run.dataset, run.labels, epoch, stage2, run.train_images)[0]

    def epoch_steps(run, loader, stage2):
        return run_epoch(run.state, loader, run.image_labels, stage2, run.variant, RuntimeError, progress=False)

    def epoch_prototypes(run):
        return prototypes_for_epoch(run.model, run.dataset, run.memory, run.cfg, run.labels, run.device,
                                    images=run.train_images)


def epoch_context(trainer):
    """What ``Trainer.setup`` built (call it first): the epoch context, or the flat layout's trainer."""
    run = getattr(trainer, "run", None)
    return trainer if run is None else run


__all__ = ["LAYOUT", "REPO_ROOT", "IntraCameraMemory", "PrototypeMemory", "RunFiles", "Stage2", "Trainer",
           "atomic_write_json", "atomic_write_text", "batch_hard_triplet_loss", "build_model", "cosine_distmat",
           "datasets", "default_root", "epoch_batches", "epoch_context", "epoch_prototypes", "epoch_steps",
           "evaluate_rank", "form_prototypes", "generate", "get_config", "git_commit", "inter_id_loss",
           "intra_camera_loss", "jaccard_distance", "retrieval_metrics", "total_loss"]
