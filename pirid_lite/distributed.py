"""Several processes for one training run, launched by ``torchrun`` (NCCL on CUDA, gloo on CPU).

``torchrun --nproc_per_node=N -m pirid_lite train …`` runs N ranks of one run. What they share, and how:

* **Batches.** The global batch stays §3.1's P × K = 32: every step all ranks draw the same seeded P-K plan
  and rank r takes its P/N identities (so N must divide P). Adam's lr is unchanged, and a run on N ranks
  trains on what one process trains on. Each rank computes the losses on its share, and DDP averages the
  gradients.
* **BatchNorm.** With N > 1 on CUDA the network's BatchNorm layers become ``SyncBatchNorm``
  (``cfg.sync_batchnorm``, default on), so their statistics are those of the global batch, as on one GPU.
  torch implements SyncBatchNorm on GPUs only: on CPU (gloo) each rank normalises over its own share.
* **Memory banks (Eq. 1).** Each step's features and labels are all-gathered in rank order and every rank
  applies the same update, so K and K' stay bit-identical everywhere.
* **Prototypes (§2.3).** The feature extraction is sharded and gathered; DBSCAN runs on rank 0 and its
  prototypes are broadcast.
* **Evaluation.** Sharded extraction, gathered; the metrics are computed on rank 0 and broadcast.
* **Files.** Only rank 0 writes; every rank reads the checkpoint on ``--resume``, whose world size must match.

What to expect when N changes: identical global batches, lr and schedule; not bit-identical results, since
losses are averaged per rank, the triplet's hardest pairs are mined within a rank's share and (on CPU) the
BN statistics are per rank. A single process (plain ``python -m pirid_lite train``) never initialises any
of this, and ``torchrun --nproc_per_node=1`` gives bit-identical results to it.
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import signal
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist

TIMEOUT_ENV = "PIRID_DIST_TIMEOUT"   # seconds a rank waits for the others in a collective (default below)
DEFAULT_TIMEOUT_S = 120


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: ``rank`` of ``world_size``; ``backend`` None for a plain single process."""

    rank: int = 0
    world_size: int = 1
    backend: str | None = None
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        return {"world_size": self.world_size, "backend": self.backend}

    # ------------------------------------------------------------------ collectives (identity when inactive)
    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenation over ranks, in rank order, of equally shaped ``tensor``s."""
        if not self.active or self.world_size == 1:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    def gather_uneven(self, tensor: torch.Tensor) -> torch.Tensor:
        """Like :meth:`gather` for shards whose first dimension differs (padded, then trimmed)."""
        if not self.active or self.world_size == 1:
            return tensor
        sizes = self.gather(torch.tensor([len(tensor)], device=tensor.device)).tolist()
        padded = torch.zeros((max(sizes), *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
        padded[:len(tensor)] = tensor
        gathered = self.gather(padded).view(self.world_size, max(sizes), *tensor.shape[1:])
        return torch.cat([gathered[r, :n] for r, n in enumerate(sizes)])

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (any picklable object)."""
        if not self.active or self.world_size == 1:
            return obj
        holder = [obj if self.is_main else None]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def gather_objects(self, obj: Any) -> list[Any]:
        if not self.active or self.world_size == 1:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.active and self.world_size > 1:
            tensor = tensor.clone()
            dist.all_reduce(tensor)
        return tensor

    def barrier(self) -> None:
        if self.active and self.world_size > 1:
            dist.barrier()

    def check_identical(self, tensors: list[torch.Tensor]) -> list[str]:
        """Every rank's hash of ``tensors``; raises if they differ (the ranks' states diverged: a bug)."""
        digest = hashlib.sha256(b"".join(t.detach().cpu().contiguous().numpy().tobytes() for t in tensors))
        digests = self.gather_objects(digest.hexdigest()[:16])
        if len(set(digests)) != 1:
            raise RuntimeError(f"the ranks' training states diverged (digests {digests}); a bug in the "
                               "distributed code, please report it")
        return digests

    def shard(self, count: int) -> slice:
        """This rank's contiguous part of ``count`` items (sizes differ by at most one)."""
        per, extra = divmod(count, self.world_size)
        start = self.rank * per + min(self.rank, extra)
        return slice(start, start + per + (self.rank < extra))


SINGLE_PROCESS = DistributedContext()


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ and "WORLD_SIZE" in os.environ


def init_from_env(device: str = "auto") -> DistributedContext:
    """The process group ``torchrun`` described in the environment (NCCL for CUDA, gloo for CPU), or
    :data:`SINGLE_PROCESS` outside torchrun. Idempotent."""
    if not launched_by_torchrun():
        return SINGLE_PROCESS
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    wants_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    backend = "nccl" if wants_cuda else "gloo"
    if not dist.is_initialized():
        if wants_cuda:
            torch.cuda.set_device(local_rank)
        timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
        dist.init_process_group(backend, timeout=timeout)
    return DistributedContext(rank, world_size, backend, local_rank)


def device_for(ctx: DistributedContext, device: str) -> str:
    """Each rank's device: ``cuda:<local rank>`` when the run is on CUDA, else as given."""
    if ctx.active and ctx.backend == "nccl" and device in ("auto", "cuda"):
        return f"cuda:{ctx.local_rank}"
    return device


def shutdown(ctx: DistributedContext) -> None:
    if ctx.active and dist.is_initialized():
        dist.destroy_process_group()


_PEER_FAILURE_SIGNS = ("Connection closed by peer", "Connection reset by peer", "timed out", "Timed out")


def _chained(error: BaseException, kind: type) -> BaseException | None:
    """The first exception of type ``kind`` in ``error``'s chain of causes and contexts, if any."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, kind):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


class RankStopped(Exception):
    """torchrun (or the user) sent SIGTERM: another rank failed, or the run is being stopped."""


class CollectiveFailed(Exception):
    """A collective failed or timed out: another rank died or stopped answering."""


@contextlib.contextmanager
def stop_on_sigterm(ctx: DistributedContext) -> Iterator[None]:
    """Under torchrun: SIGTERM (what torchrun sends the other ranks when one fails) raises
    :class:`RankStopped`, and a failed collective raises :class:`CollectiveFailed`, each with one line
    for the user; the checkpoint on disk stays whole (writes are atomic)."""
    if not ctx.active:
        yield
        return

    def on_sigterm(signum, frame):
        raise RankStopped("stopped by SIGTERM: another rank failed (or the run was stopped)")

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    except RankStopped:
        raise
    except Exception as error:
        stopped = _chained(error, RankStopped)
        if stopped is not None:  # SIGTERM inside a write (e.g. torch.save) whose cleanup raised in turn
            raise RankStopped(str(stopped)) from error
        if not isinstance(error, RuntimeError):
            raise
        # gloo reports a dead peer as a plain RuntimeError
        if not isinstance(error, dist.DistError) and not any(sign in str(error) for sign in _PEER_FAILURE_SIGNS):
            raise
        reason = " ".join(str(error).split())[:160]
        raise CollectiveFailed(f"lost contact with the other ranks within {os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)} s "
                               f"({type(error).__name__}: {reason})") from error
    finally:
        signal.signal(signal.SIGTERM, previous)
