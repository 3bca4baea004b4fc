"""What the repository tracks stays light and portable: a clone (and the 64 MiB the GPU machine carries) holds
the numbers, logs and the few arrays a notebook opens, not every run's arrays; run records name no machine's
folders; the archive's table still equals the archived runs."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import torch

from pirid_lite.engine.runfiles import RunFiles, run_dir
from pirid_lite.experiments import results
from pirid_lite.utils import REPO_ROOT

MIB = 1024 * 1024
TREE_LIMIT, FILE_LIMIT = 30 * MIB, 5 * MIB


def _tracked(*patterns: str) -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-z", *patterns], cwd=REPO_ROOT, capture_output=True, check=True)
    return [REPO_ROOT / name for name in listed.stdout.decode().split("\0") if name and (REPO_ROOT / name).is_file()]


def test_the_tracked_tree_is_light():
    sizes = {path: path.stat().st_size for path in _tracked()}
    assert sum(sizes.values()) <= TREE_LIMIT, f"the tracked tree holds {sum(sizes.values()) / MIB:.1f} MiB"
    heavy = {path.relative_to(REPO_ROOT).as_posix(): round(size / MIB, 1) for path, size in sizes.items()
             if size > FILE_LIMIT}
    assert not heavy, f"tracked files over 5 MiB: {heavy}"


def _strings(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value


def test_run_records_name_no_machine_folder():
    """Every path a tracked run file records (stage-1 donor, dataset root) is relative to the repository."""
    absolute = {path.relative_to(REPO_ROOT).as_posix(): text
                for path in _tracked("results/**/config.json", "results/**/metrics.json")
                for text in _strings(json.loads(path.read_text())) if text.startswith(("/", "~"))}
    assert not absolute, f"absolute paths in run files: {dict(list(absolute.items())[:5])}"


def test_the_arrays_the_notebooks_open_are_tracked_and_load():
    """Notebook 03 opens pirid-1's memory bank (float16 on disk, float32 when read), 05 and 06 the saved test
    features of pirid-1 and pirid (seed 0 of Table 2's runs)."""
    run = {variant: RunFiles(run_dir(REPO_ROOT / "results", "synthetic-small", "cpu", variant, seed=0))
           for variant in ("pirid-1", "pirid")}
    bank = run["pirid-1"].memory_bank()
    assert bank["features"].dtype == torch.float32 and bank["fresh_centroids"].shape == bank["features"].shape
    assert len(bank["label_camera"]) == len(bank["features"])
    for variant, stage in (("pirid", "initial"), ("pirid-1", "final"), ("pirid", "final")):
        features, pids, camids = run[variant].features(stage)
        assert features.dtype == np.float16 and len(features) == len(pids) == len(camids)
    tracked = {p.relative_to(REPO_ROOT).as_posix() for p in _tracked("results")}
    assert (run["pirid-1"].file("memory_final.pt").relative_to(REPO_ROOT).as_posix()) in tracked


def test_the_archive_table_equals_the_archived_runs():
    table = results.archive_table(REPO_ROOT / results.ARCHIVE_ROOT).to_markdown(index=False)
    assert table in (REPO_ROOT / results.ARCHIVE_ROOT / "README.md").read_text()


def test_a_memory_bank_is_stored_as_float16_and_read_as_float32(tmp_path):
    features, centroids = torch.randn(5, 8), torch.randn(5, 8)
    RunFiles(tmp_path).write_memory_bank(features, torch.arange(5), centroids)
    stored = torch.load(tmp_path / "memory_final.pt", weights_only=True)
    assert stored["features"].dtype == torch.float16 and stored["label_camera"].dtype == torch.int64
    read = RunFiles(tmp_path).memory_bank()
    assert read["features"].dtype == torch.float32
    torch.testing.assert_close(read["features"], features, atol=1e-2, rtol=1e-3)
    torch.testing.assert_close(read["fresh_centroids"], centroids.half().float(), atol=0, rtol=0)
