"""Shared fixtures: small fake dataset trees (tiny 8×4 JPEGs) in the published layouts.

Each writer returns a :class:`FakeTree` holding what it wrote, so tests compare the loader's output with
numbers computed here from the written spec, not with hard-coded results.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

# The files that take longest (pytest --durations), started first: `make test` runs two xdist workers with
# --dist loadfile, and a long file dealt last would leave one core idle while the other finishes it.
LONGEST_FIRST = ("tests/test_distributed.py", "benchmarks/test_gpu_check.py", "benchmarks/test_benchmarks_smoke.py",
                 "tests/test_trainer.py", "tests/test_notebook_outputs.py", "tests/test_cli_errors.py",
                 "tests/test_reproduce_datasets.py")


def pytest_collection_modifyitems(config, items):
    """Items of the LONGEST_FIRST files first, in that order; the rest as collected (the sort is stable)."""
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


# (true pid, camera 1-based, number of images); pid -1 = junk, 0 = distractor
TRAIN_SPEC = [(2, 1, 3), (2, 2, 2), (7, 1, 1), (7, 3, 4), (9, 2, 2), (15, 1, 2), (15, 2, 1), (15, 3, 3),
              (21, 3, 2), (30, 2, 5)]
QUERY_SPEC = [(3, 1, 1), (3, 2, 1), (4, 2, 1), (4, 3, 1), (5, 1, 1)]
GALLERY_SPEC = [(3, 2, 2), (3, 3, 1), (4, 1, 2), (5, 2, 1), (5, 3, 2), (0, 1, 2), (0, 3, 1), (-1, 2, 3)]


def random_ids(seed: int, n: int, dim: int, num_cameras: int):
    """``(dist, cameras)``: the Euclidean distances of ``n`` random points in ``dim`` dimensions and a random camera
    per point — the ID centroids of the groupings' tests against their naive references."""
    import numpy as np

    rng = np.random.default_rng(seed)
    points = rng.normal(size=(n, dim))
    return np.linalg.norm(points[:, None] - points[None], axis=2), rng.integers(0, num_cameras, size=n)


def write_jpeg(path: Path, seed: int = 0) -> None:
    """A tiny 8×4 (h×w) JPEG whose colour depends on ``seed``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 8), ((37 * seed) % 256, (91 * seed) % 256, (53 * seed + 80) % 256)).save(path, "JPEG")


@dataclass
class FakeTree:
    root: Path
    records: dict[str, list[tuple[str, int, int]]] = field(default_factory=dict)  # split -> (path, pid, cam1)
    bad_names: dict[str, int] = field(default_factory=dict)                       # split -> unparseable images

    def kept(self, split: str) -> list[tuple[str, int, int]]:
        """Records a correct loader keeps: junk dropped, distractors only in the gallery."""
        drop = {-1} if split == "gallery" else {-1, 0}
        return [r for r in self.records[split] if r[1] not in drop]


def _market_name(pid: int, cam: int, index: int) -> str:
    return f"{pid:04d}_c{cam}s1_{index:06d}_01.jpg" if pid >= 0 else f"-1_c{cam}s1_{index:06d}_01.jpg"


def _duke_name(pid: int, cam: int, index: int) -> str:
    return f"{pid:04d}_c{cam}_f{index:07d}.jpg" if pid >= 0 else f"-1_c{cam}_f{index:07d}.jpg"


def write_market_tree(root: Path, style: str = "market", bad_name: bool = True) -> FakeTree:
    """Market-1501 (``style="market"``) or DukeMTMC-reID (``"duke"``) layout with junk, distractors,
    Thumbs.db/.DS_Store and (optionally) one badly named image per split."""
    naming = _market_name if style == "market" else _duke_name
    folders = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
    tree = FakeTree(root)
    counter = 0
    for split, spec in (("train", TRAIN_SPEC), ("query", QUERY_SPEC), ("gallery", GALLERY_SPEC)):
        folder = root / folders[split]
        folder.mkdir(parents=True)
        tree.records[split] = []
        for pid, cam, count in spec:
            for _ in range(count):
                counter += 1
                name = naming(pid, cam, counter)
                write_jpeg(folder / name, counter)
                tree.records[split].append((name, pid, cam))
        (folder / "Thumbs.db").write_bytes(b"\x00not an image")
        (folder / ".DS_Store").write_bytes(b"\x00")
        tree.bad_names[split] = int(bad_name)
        if bad_name:
            write_jpeg(folder / "person_two_cam_one.jpg", 1)
    return tree


def write_msmt_tree(root: Path, version: str = "V1", bad_name: bool = True,
                    extra_train: list[tuple[int, int, int]] = ()) -> FakeTree:
    """MSMT17 layout: images in ``<pid>/`` subfolders of train/test (V1) or mask_*_v2 (V2), list files
    ``path pid`` (MSMT pids start at 0 and pid 0 is a real person); train+val lists form the train split.
    ``extra_train`` adds (pid, camera, images) to the train list (a tree big enough to train on)."""
    train_dir, test_dir = ("train", "test") if version == "V1" else ("mask_train_v2", "mask_test_v2")
    msmt_train = [(0, 1, 2), (0, 14, 1), (3, 2, 2), (3, 15, 2), (5, 7, 3), *extra_train]
    msmt_val = [(6, 1, 2), (6, 2, 1)]
    msmt_query = [(0, 3, 1), (1, 4, 1), (-1, 4, 1)]
    msmt_gallery = [(0, 5, 2), (1, 3, 1), (2, 9, 2)]
    tree = FakeTree(root)
    counter = 0
    lists = {}
    for list_name, folder, spec in (("list_train.txt", train_dir, msmt_train), ("list_val.txt", train_dir, msmt_val),
                                    ("list_query.txt", test_dir, msmt_query),
                                    ("list_gallery.txt", test_dir, msmt_gallery)):
        lines = []
        for pid, cam, count in spec:
            for _ in range(count):
                counter += 1
                rel = f"{max(pid, 0):04d}/{max(pid, 0):04d}_{counter:03d}_{cam:02d}_0303morning_{counter:04d}_0.jpg"
                write_jpeg(root / folder / rel, counter)
                lines.append(f"{rel} {pid}")
        lists[list_name] = lines
    if bad_name:
        write_jpeg(root / train_dir / "0003" / "badly_named.jpg", 3)
        lists["list_train.txt"].append("0003/badly_named.jpg 3")
    (root / train_dir / "Thumbs.db").write_bytes(b"\x00")
    for list_name, lines in lists.items():
        (root / list_name).write_text("\n".join(lines) + "\n")
    # MSMT pids are shifted by +1 on load (pid 0 is reserved for distractors package-wide)
    shift = lambda spec: [("", pid + 1 if pid >= 0 else pid, cam) for pid, cam, n in spec for _ in range(n)]
    tree.records = {"train": shift(msmt_train + msmt_val), "query": shift(msmt_query),
                    "gallery": shift(msmt_gallery)}
    tree.bad_names = {"train": int(bad_name), "query": 0, "gallery": 0}
    return tree


@pytest.fixture
def market_tree(tmp_path: Path) -> FakeTree:
    return write_market_tree(tmp_path / "Market-1501-v15.09.15", "market")


@pytest.fixture
def duke_tree(tmp_path: Path) -> FakeTree:
    return write_market_tree(tmp_path / "DukeMTMC-reID", "duke")


@pytest.fixture(params=["V1", "V2"])
def msmt_tree(tmp_path: Path, request) -> FakeTree:
    return write_msmt_tree(tmp_path / f"MSMT17_{request.param}", request.param)
