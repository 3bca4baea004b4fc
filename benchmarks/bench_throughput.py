"""Training throughput (images/s) of one PIRID stage-2 step vs the device's plain fwd+bwd limit.

``python -m benchmarks.bench_throughput [--small]`` — synthetic batches (no data loading): the full step
(forward, Eq. 2 memory log-probs, Eq. 3 + Eq. 4 + Eq. 5 losses, backward, Adam step, Eq. 1 updates of both
memories) against a bare forward+backward+step of the same network on the same tensors. ``cpu`` profile
(ResNet-18, 64×32, batch 32) on CPU; ``paper`` profile (ResNet-50, 256×128, AMP) on CUDA when available.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from benchmarks._common import make_parser, report
from pirid_lite.config import get_config
from pirid_lite.method.losses import batch_hard_triplet_loss, inter_id_loss, intra_camera_loss, total_loss
from pirid_lite.method.memory import IntraCameraMemory, PrototypeMemory
from pirid_lite.method.model import build_model


def _setup(cfg, device: torch.device, num_ids: int = 600, num_cameras: int = 6, num_prototypes: int = 200):
    torch.manual_seed(0)
    model = build_model(cfg).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    label_camera = torch.arange(num_ids) % num_cameras
    memory = IntraCameraMemory(label_camera, model.feature_dim, cfg.memory_momentum, cfg.temperature).to(device)
    memory.features.copy_(F.normalize(torch.randn(num_ids, model.feature_dim), dim=1))
    protos = PrototypeMemory(F.normalize(torch.randn(num_prototypes, model.feature_dim), dim=1).to(device),
                             cfg.memory_momentum, cfg.temperature).to(device)
    labels = torch.arange(cfg.num_ids_per_batch).repeat_interleave(cfg.num_instances).to(device)
    batch = dict(images=torch.randn(cfg.batch_size, 3, cfg.height, cfg.width, device=device), labels=labels,
                 camids=label_camera.to(device)[labels], proto_labels=labels % num_prototypes)
    return model, optimizer, memory, protos, batch


def _autocast(cfg, device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda")


def full_step(cfg, device, model, optimizer, memory, protos, batch) -> None:
    with _autocast(cfg, device):
        g, f = model(batch["images"])
    g, f = g.float(), f.float()
    loss = total_loss(intra_camera_loss(memory.log_probs(f, batch["camids"]), batch["labels"], batch["camids"]),
                      inter_id_loss(protos.logits(f), batch["proto_labels"]),
                      batch_hard_triplet_loss(g, batch["proto_labels"], cfg.triplet_margin))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    memory.update(f.detach(), batch["labels"])
    protos.update(f.detach(), batch["proto_labels"])


def bare_step(cfg, device, model, optimizer, memory, protos, batch) -> None:
    with _autocast(cfg, device):
        g, f = model(batch["images"])
    optimizer.zero_grad(set_to_none=True)
    (g.float().mean() + f.float().mean()).backward()
    optimizer.step()


def images_per_second(step, cfg, device, parts, iters: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        step(cfg, device, *parts)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        step(cfg, device, *parts)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return iters * cfg.batch_size / (time.perf_counter() - start)


def measure(profile: str, device: torch.device, iters: int, **overrides) -> dict:
    cfg = get_config(profile, pretrained=None, **overrides)
    parts = _setup(cfg, device)
    bare = images_per_second(bare_step, cfg, device, parts, iters)
    full = images_per_second(full_step, cfg, device, parts, iters)
    return {f"{profile}_{device.type}_arch": f"{cfg.arch} {cfg.height}x{cfg.width} batch {cfg.batch_size}",
            f"{profile}_{device.type}_fwd_bwd_img_s": bare, f"{profile}_{device.type}_full_step_img_s": full,
            f"{profile}_{device.type}_full_over_limit": full / bare}


def main(small: bool = False, threads: int | None = 1, iters: int | None = None) -> dict:
    if threads:
        torch.set_num_threads(threads)
    result = {"torch_threads": torch.get_num_threads()}
    if small:
        result.update(measure("test", torch.device("cpu"), iters or 1, num_ids_per_batch=4, num_instances=2))
    else:
        result.update(measure("cpu", torch.device("cpu"), iters or 10))
        if torch.cuda.is_available():
            result.update(measure("paper", torch.device("cuda"), iters or 30))
    return report("training throughput", result)


if __name__ == "__main__":
    parser = make_parser(__doc__)
    parser.add_argument("--iters", type=int, default=None, help="timed iterations per loop")
    args = parser.parse_args()
    main(small=args.small, threads=args.threads, iters=args.iters)
