"""The synthetic benchmark generator: determinism, layout, sizes, atomic writes."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections import defaultdict
from pathlib import Path

import pytest

from pirid_lite import datasets
from pirid_lite.datasets import synthetic

MARKET_NAME = re.compile(r"^(-1|\d{4})_c(\d)s1_(\d{6})_01\.jpg$")


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*.jpg")):
        h.update(path.relative_to(folder).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    return synthetic.generate("tiny", tmp_path_factory.mktemp("syn") / "tiny", seed=0, progress=False)


def test_same_seed_same_bytes_other_seed_other_bytes(tiny_root, tmp_path):
    again = synthetic.generate("tiny", tmp_path / "again", seed=0, progress=False)
    other = synthetic.generate("tiny", tmp_path / "other", seed=1, progress=False)
    assert _digest(again) == _digest(tiny_root)
    assert _digest(other) != _digest(tiny_root)


def test_layout_and_names_follow_market1501(tiny_root):
    counts = synthetic.expected_counts("tiny")
    for split, key in (("bounding_box_train", "train"), ("query", "query"), ("bounding_box_test", "gallery")):
        names = [p.name for p in (tiny_root / split).iterdir()]
        assert len(names) == counts[key]
        assert all(MARKET_NAME.match(n) for n in names), names[:3]


def _pid_cams(folder: Path) -> dict[int, set[int]]:
    seen = defaultdict(set)
    for path in folder.iterdir():
        pid, cam = MARKET_NAME.match(path.name).group(1, 2)
        seen[int(pid)].add(int(cam))
    return seen


def test_identities_cameras_queries_distractors_junk(tiny_root):
    train, query, gallery = (_pid_cams(tiny_root / s) for s in ("bounding_box_train", "query", "bounding_box_test"))
    assert all(len(cams) >= 2 for cams in train.values())          # every training identity crosses cameras
    assert not set(train) & (set(query) | set(gallery))             # test identities are disjoint
    query_files = [MARKET_NAME.match(p.name).group(1, 2) for p in (tiny_root / "query").iterdir()]
    assert len(query_files) == len(set(query_files))               # one query per (identity, camera)
    assert 0 in gallery and -1 in gallery                            # distractors and junk in the gallery
    assert set(query) <= set(gallery) | {0}


def test_loader_reads_the_generated_folder(tiny_root):
    dataset = datasets.load("tiny", root=tiny_root, verbose=False)
    assert len(dataset.train) == synthetic.expected_counts("tiny")["train"]
    assert all(item.pid != -1 for item in dataset.gallery)          # junk dropped at load time
    assert any(item.pid == 0 for item in dataset.gallery)


def test_market_preset_has_market1501_counts_by_construction():
    files = synthetic.plan(synthetic.PRESETS["market"], seed=0)
    train = {pid for pid, _, _ in files["bounding_box_train"]}
    assert (len(files["bounding_box_train"]), len(files["query"]), len(files["bounding_box_test"])) == (12936, 3368, 19732)
    assert len(train) == 751 and len({pid for pid, _, _ in files["query"]}) == 750
    assert sum(pid == -1 for pid, _, _ in files["bounding_box_test"]) == 19732 - 15913


def test_failed_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")
    monkeypatch.setattr(synthetic, "render", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        synthetic.generate("tiny", tmp_path / "out", seed=0, progress=False, workers=1)
    assert list(tmp_path.iterdir()) == []


def test_changed_spec_regenerates(tmp_path, monkeypatch):
    folder = synthetic.ensure_generated("tiny", root=tmp_path / "t", progress=False)
    stamp = (folder / "manifest.json").stat().st_mtime_ns
    assert synthetic.ensure_generated("tiny", root=folder, progress=False) == folder
    assert (folder / "manifest.json").stat().st_mtime_ns == stamp   # reused
    harder = dataclasses.replace(synthetic.PRESETS["tiny"], camera_shift=2.0)
    monkeypatch.setitem(synthetic.PRESETS, "tiny", harder)
    synthetic.ensure_generated("tiny", root=folder, progress=False)
    assert json.loads((folder / "manifest.json").read_text())["spec"]["camera_shift"] == 2.0
