"""One training run over several processes (torchrun, gloo on CPU): the ranks agree bit for bit after every
epoch, one process under torchrun equals the plain run, a stopped 2-rank run resumes exactly, only rank 0
writes, and a killed rank ends the run with one clear line and a checkpoint that resumes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pirid_lite.distributed import DistributedContext
from pirid_lite.engine.runfiles import CHECKPOINT, LOG, MEMORY_BANK, METRICS, STAGE1_CHECKPOINT, RunFiles
from pirid_lite.utils import REPO_ROOT

pytestmark = pytest.mark.slow

SETTINGS = ["--dataset", "tiny", "--profile", "test", "--device", "cpu", "--no-progress",
            "--set", "epochs=3", "--set", "iters_per_epoch=2", "--set", "lr_milestones=2", "--set", "dbscan_eps=0.6"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PIRID_DIST_TIMEOUT": "30"}


def torchrun(nproc: int, out: Path, *extra: str, timeout: float = 240) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone",
               "-m", "pirid_lite", "train", *SETTINGS, "--out", str(out), *extra]
    return subprocess.run(command, cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


def plain(out: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pirid_lite", "train", *SETTINGS, "--out", str(out), *extra]
    return subprocess.run(command, cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=240)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def same_run(a: Path, b: Path) -> None:
    """Bit-identical final metrics, memory bank K and per-epoch losses."""
    assert RunFiles(a).metrics()["metrics"] == RunFiles(b).metrics()["metrics"]
    bank_a, bank_b = RunFiles(a).memory_bank(), RunFiles(b).memory_bank()
    assert torch.equal(bank_a["features"], bank_b["features"])
    assert torch.equal(bank_a["fresh_centroids"], bank_b["fresh_centroids"])
    losses = [{k: v for k, v in r.items() if k.startswith("loss_")} for r in map(json.loads, open(a / LOG))]
    assert losses == [{k: v for k, v in r.items() if k.startswith("loss_")} for r in map(json.loads, open(b / LOG))]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("two_ranks") / "run"
    done = torchrun(2, out)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def test_two_ranks_hold_identical_weights_memory_and_prototypes_after_every_epoch(two_ranks):
    log = RunFiles(two_ranks).log()
    assert len(log) == 3 and (log["stage"] == 2).any()
    for digests in log["rank_digests"]:
        assert len(digests) == 2 and digests[0] == digests[1]
    provenance = RunFiles(two_ranks).metrics()["provenance"]
    assert (provenance["world_size"], provenance["backend"], provenance["sync_batchnorm"]) == (2, "gloo", False)


def test_only_rank_zero_writes(two_ranks, tmp_path):
    """Ranks > 0 hold a read-only RunFiles (a write raises), and the 2-rank run above finished: so no rank
    but 0 wrote. The folder holds exactly the run's files."""
    with pytest.raises(RuntimeError, match="only rank 0"):
        RunFiles(tmp_path, writable=False).write_log([])
    assert sorted(p.name for p in two_ranks.iterdir()) == sorted([CHECKPOINT, STAGE1_CHECKPOINT, "config.json", LOG,
                                                                  MEMORY_BANK, METRICS])


def test_one_process_under_torchrun_equals_the_plain_run(tmp_path):
    launched, single = torchrun(1, tmp_path / "torchrun"), plain(tmp_path / "plain")
    assert launched.returncode == 0 and single.returncode == 0, launched.stderr[-2000:] + single.stderr[-2000:]
    same_run(tmp_path / "torchrun", tmp_path / "plain")
    assert RunFiles(tmp_path / "torchrun").metrics()["provenance"]["backend"] == "gloo"
    assert RunFiles(tmp_path / "plain").metrics()["provenance"]["backend"] is None


def _rank_pid(parent: int, rank: int) -> int | None:
    """The pid of the torchrun worker with RANK=rank under ``parent`` (Linux /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[1]) == parent and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


def _checkpoint_stamp(path: Path) -> tuple[int, int] | None:
    """(inode, mtime) of a checkpoint: every write replaces the file (atomic rename), so a new one changes it."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def test_a_stopped_then_killed_two_rank_run_resumes_to_equal_an_uninterrupted_run(two_ranks, tmp_path):
    """One run through both interruptions (one launch fewer than a test each): stopped cleanly after epoch 1
    (--stop-after-epoch), refused by a single process, resumed and killed (rank 1, SIGKILL) after its next
    checkpoint, then resumed to the end: bit-identical to the uninterrupted 2-rank run, so both the stopped
    and the killed run's checkpoints resume exactly (into stage 2 and within it)."""
    out = tmp_path / "run"
    stopped = torchrun(2, out, "--stop-after-epoch", "1")
    assert stopped.returncode == 0 and not (out / METRICS).exists(), stopped.stderr[-2000:]
    assert len(RunFiles(out).log()) == 1
    refused = plain(out, "--resume")  # one process may not resume a 2-process checkpoint
    assert refused.returncode == 2 and error_lines(refused.stderr) == [
        f"error: cannot resume from {out / CHECKPOINT}: it was written by 2 process(es), this run has 1; "
        "resume with the same --nproc_per_node"]

    stamp = _checkpoint_stamp(out / CHECKPOINT)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", "-m",
               "pirid_lite", "train", *SETTINGS, "--set", "epochs=30", "--out", str(out), "--resume"]
    launcher = subprocess.Popen(command, cwd=REPO_ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    deadline = time.monotonic() + 180
    while _checkpoint_stamp(out / CHECKPOINT) == stamp and time.monotonic() < deadline and launcher.poll() is None:
        time.sleep(0.2)
    victim = _rank_pid(launcher.pid, 1)
    assert victim is not None and _checkpoint_stamp(out / CHECKPOINT) != stamp  # it trained epoch 2 at least
    os.kill(victim, signal.SIGKILL)
    # the surviving rank must give up on its own (PIRID_DIST_TIMEOUT=30 s), not hang: communicate's timeout
    # is only the hang guard, generous enough for a busy machine
    _, stderr = launcher.communicate(timeout=240)
    assert launcher.returncode != 0
    lines = error_lines(stderr)
    assert len(lines) == 1 and lines[0].startswith("error: rank 0 of 2: ") and "resume with --resume" in lines[0]
    assert not (out / METRICS).exists() and not list(out.glob(".*.tmp"))

    resumed = torchrun(2, out, "--resume")  # SETTINGS: epochs=3 again (epochs may change on resume)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert len(RunFiles(out).log()) == 3
    same_run(out, two_ranks)


def test_shards_cover_every_item_once():
    for count in (0, 5, 6, 7):
        parts = [DistributedContext(rank, 3, "gloo").shard(count) for rank in range(3)]
        assert sum((list(range(count))[p] for p in parts), []) == list(range(count))
