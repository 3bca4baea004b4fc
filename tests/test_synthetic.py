"""The synthetic multi-camera benchmark (docs/DESIGN.md §4): determinism, Market-1501 layout and naming, split
structure (ICS-relevant: every train identity in >= 2 cameras, disjoint test identities, one query per
(identity, camera), distractors and junk), preset sizes, and atomic / manifest-checked generation."""
from __future__ import annotations

import json
import re
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pirid_lite.datasets import synthetic

# Market-1501 file names, written independently of the generator: 0002_c1s1_000451_03.jpg, -1_c1s1_000401_01.jpg
MARKET_NAME = re.compile(r"^(?P<pid>-1|\d{4})_c(?P<cam>[1-9])s\d_\d{6}_\d{2}\.jpg$")
SPLITS = ("bounding_box_train", "query", "bounding_box_test")


def _parse(folder: Path) -> list[tuple[int, int, str]]:
    """(pid, camera 1-based, name) of every file of a split folder; fails on any name Market would not have."""
    out = []
    for path in sorted(folder.iterdir()):
        match = MARKET_NAME.match(path.name)
        assert match, f"{path.name} is not a Market-1501 file name"
        out.append((int(match["pid"]), int(match["cam"]), path.name))
    return out


def _bytes_of(root: Path) -> dict[str, bytes]:
    return {f"{split}/{p.name}": p.read_bytes() for split in SPLITS for p in sorted((root / split).iterdir())}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return synthetic.generate("tiny", tmp_path_factory.mktemp("syn") / "tiny-seed0", seed=0, progress=False)


@pytest.fixture(scope="module")
def tiny_files(tiny) -> dict[str, list[tuple[int, int, str]]]:
    return {split: _parse(tiny / split) for split in SPLITS}


# ------------------------------------------------------------------------------------------ determinism
def test_same_seed_gives_identical_bytes_even_with_two_processes(tiny, tmp_path):
    again = synthetic.generate("tiny", tmp_path / "again", seed=0, progress=False, workers=2)
    assert _bytes_of(again) == _bytes_of(tiny)


def test_different_seed_gives_different_images(tiny, tmp_path):
    other = _bytes_of(synthetic.generate("tiny", tmp_path / "seed1", seed=1, progress=False))
    first = _bytes_of(tiny)
    shared = set(first) & set(other)
    assert all(first[name] != other[name] for name in shared)
    assert set(first) != set(other) or shared  # the plans may coincide, the pixels may not


# ------------------------------------------------------------------------------------------ layout and naming
def test_layout_names_and_image_size_follow_market1501(tiny, tiny_files):
    assert {p.name for p in tiny.iterdir() if p.is_dir()} == set(SPLITS)
    for split in SPLITS:
        assert tiny_files[split], f"{split} is empty"
        for _, _, name in tiny_files[split][:: max(1, len(tiny_files[split]) // 10)]:
            with Image.open(tiny / split / name) as img:
                assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (64, 128))  # PIL size is (W, H)


def test_counts_match_expected_counts_and_spec(tiny_files):
    spec = synthetic.PRESETS["tiny"]
    expected = synthetic.expected_counts("tiny")
    assert (len(tiny_files["bounding_box_train"]), len(tiny_files["query"]),
            len(tiny_files["bounding_box_test"])) == (expected["train"], expected["query"], expected["gallery"])
    train_pids = {pid for pid, _, _ in tiny_files["bounding_box_train"]}
    query_pids = {pid for pid, _, _ in tiny_files["query"]}
    cams = {cam for split in SPLITS for _, cam, _ in tiny_files[split]}
    assert (len(train_pids), len(query_pids), cams) == (spec.num_train_ids, spec.num_test_ids,
                                                        set(range(1, spec.num_cameras + 1)))
    gallery_pids = [pid for pid, _, _ in tiny_files["bounding_box_test"]]
    assert (gallery_pids.count(0), gallery_pids.count(-1)) == (spec.num_distractors, spec.num_junk)


# ------------------------------------------------------------------------------------------ split structure
def _cameras_per_pid(entries) -> dict[int, list[int]]:
    cams = defaultdict(list)
    for pid, cam, _ in entries:
        cams[pid].append(cam)
    return cams


def test_every_train_identity_is_seen_by_two_or_more_cameras(tiny_files):
    spec = synthetic.PRESETS["tiny"]
    lo, hi = spec.images_per_camera
    for pid, cams in _cameras_per_pid(tiny_files["bounding_box_train"]).items():
        assert pid > 0
        assert spec.cameras_per_id[0] <= len(set(cams)) <= spec.cameras_per_id[1], pid
        assert all(lo <= cams.count(c) <= hi for c in set(cams)), pid


def test_test_identities_are_disjoint_from_train(tiny_files):
    train = {pid for pid, _, _ in tiny_files["bounding_box_train"]}
    test = {pid for pid, _, _ in tiny_files["query"] + tiny_files["bounding_box_test"] if pid > 0}
    assert train and test and not train & test


def test_one_query_per_test_identity_and_camera_with_gallery_images_beside_it(tiny_files):
    queries = [(pid, cam) for pid, cam, _ in tiny_files["query"]]
    assert len(queries) == len(set(queries))
    assert all(pid > 0 for pid, _ in queries)
    gallery = {(pid, cam) for pid, cam, _ in tiny_files["bounding_box_test"] if pid > 0}
    assert set(queries) == gallery       # a query for every (identity, camera) the gallery has, and no other
    for pid, cams in _cameras_per_pid(tiny_files["query"]).items():
        assert len(cams) >= 2, f"test identity {pid} is seen by one camera only: no cross-camera match"


def test_distractors_and_junk_are_in_the_gallery_only(tiny_files):
    gallery_pids = {pid for pid, _, _ in tiny_files["bounding_box_test"]}
    assert {0, -1} <= gallery_pids
    others = {pid for split in ("bounding_box_train", "query") for pid, _, _ in tiny_files[split]}
    assert not others & {0, -1}


# ------------------------------------------------------------------------------------------ preset sizes
def test_market_preset_has_market1501_counts_without_generating():
    spec = synthetic.PRESETS["market"]
    assert synthetic.expected_counts("market") == {"train": 12936, "query": 3368, "gallery": 19732}
    files = synthetic.plan(spec, 0)
    train_ids = {pid for pid, _, _ in files["bounding_box_train"]}
    test_ids = {pid for pid, _, _ in files["query"]}
    gallery = [pid for pid, _, _ in files["bounding_box_test"]]
    assert (len(train_ids), len(test_ids), spec.num_cameras) == (751, 750, 6)
    assert (gallery.count(0), gallery.count(-1)) == (2793, 3819)
    assert len(gallery) - gallery.count(-1) == 15913          # Market's gallery after junk removal


@pytest.mark.parametrize("preset, size", [("small", (64, 128)), ("market", (128, 256))])  # PIL (W, H)
def test_files_have_their_presets_image_size(preset, size, tmp_path):
    spec = synthetic.PRESETS[preset]
    who, cam = synthetic.identity(1, 0, spec), synthetic.camera(0, 0, spec)
    path = tmp_path / "one.jpg"
    path.write_bytes(synthetic.render(who, cam, spec, np.random.default_rng(0)))
    with Image.open(path) as img:
        assert (img.format, img.size) == ("JPEG", size)


@pytest.mark.parametrize("preset", ["tiny", "small", "market"])
def test_preset_plan_respects_its_spec_ranges(preset):
    spec = synthetic.PRESETS[preset]
    files = synthetic.plan(spec, 0)
    per_pair = defaultdict(int)
    for pid, cam, _ in files["bounding_box_train"]:
        per_pair[pid, cam] += 1
    cams = _cameras_per_pid([(pid, cam, "") for pid, cam in per_pair])
    assert len(cams) == spec.num_train_ids
    assert all(spec.cameras_per_id[0] <= len(c) <= min(spec.cameras_per_id[1], spec.num_cameras)
               for c in cams.values())
    assert min(per_pair.values()) >= spec.images_per_camera[0]
    if spec.train_images is None:   # exact-total presets may stretch the upper end to hit Market's counts
        assert max(per_pair.values()) <= spec.images_per_camera[1]


def test_unknown_preset_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown synthetic preset 'huge'.*tiny"):
        synthetic.ensure_generated("huge", root=tmp_path / "x")


# ------------------------------------------------------------------------------------------ atomic generation
def test_failed_generation_leaves_no_folder_behind(tmp_path, monkeypatch):
    calls = {"n": 0}
    real_render = synthetic.render

    def failing_render(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 20:
            raise RuntimeError("disk full (simulated)")
        return real_render(*args, **kwargs)

    monkeypatch.setattr(synthetic, "render", failing_render)
    with pytest.raises(RuntimeError, match="simulated"):
        synthetic.generate("tiny", tmp_path / "tiny-seed0", seed=0, progress=False, workers=1)
    assert calls["n"] > 20
    assert list(tmp_path.iterdir()) == []      # neither the final folder nor a temporary sibling


def test_ensure_generated_reuses_a_matching_folder_and_regenerates_a_mismatched_one(tiny, tmp_path):
    root = tmp_path / "tiny-seed0"
    shutil.copytree(tiny, root)
    sentinel = root / "query" / "sentinel.txt"
    sentinel.write_text("left by the test")
    assert synthetic.ensure_generated("tiny", seed=0, root=root) == root
    assert sentinel.exists()                                  # manifest matched: nothing was rewritten

    manifest = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps({**manifest, "generator_version": -1}))
    assert synthetic.ensure_generated("tiny", seed=0, root=root) == root
    assert not sentinel.exists()                              # mismatch: generated again from scratch
    assert json.loads((root / "manifest.json").read_text()) == manifest
    assert _bytes_of(root) == _bytes_of(tiny)


def test_ensure_generated_regenerates_when_the_seed_differs(tiny, tmp_path):
    root = tmp_path / "somewhere"
    shutil.copytree(tiny, root)
    synthetic.ensure_generated("tiny", seed=1, root=root)
    assert json.loads((root / "manifest.json").read_text())["seed"] == 1
    assert _bytes_of(root) != _bytes_of(tiny)


# ------------------------------------------------------------------------------------------ sample grid
def test_camera_sample_grid_rows_are_identities_columns_are_cameras(tiny, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from pirid_lite import datasets, viz

    dataset = datasets.load("tiny", root=tiny, verbose=False)
    fig = viz.camera_sample_grid(dataset, n_identities=3, path=tmp_path / "grid.png")
    assert len(fig.axes) == 3 * synthetic.PRESETS["tiny"].num_cameras
    shown = sum(bool(ax.images) for ax in fig.axes)
    assert 3 * 2 <= shown <= 3 * 3                            # each row: >= 2 cameras, blanks elsewhere
    assert (tmp_path / "grid.png").stat().st_size > 0
    assert np.all([ax.get_xticks().size == 0 for ax in fig.axes])


def test_a_concurrent_generation_keeps_the_folder_another_process_finished_first(tiny, tmp_path, monkeypatch):
    # Two shards of `make reproduce` may generate the same preset at once; the one finishing second must not
    # delete the folder the first one is already reading. Simulate: the folder appears while we render.
    root = tmp_path / "tiny-seed0"
    real_render_split = synthetic._render_split

    def render_while_another_process_finishes(args):
        if not root.exists():
            shutil.copytree(tiny, root)
            (root / "query" / "sentinel.txt").write_text("the other process's folder")
        return real_render_split(args)

    monkeypatch.setattr(synthetic, "_render_split", render_while_another_process_finishes)
    assert synthetic.generate("tiny", root, seed=0, progress=False, workers=1) == root
    assert (root / "query" / "sentinel.txt").exists()        # theirs was kept, ours discarded
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-seed0"]  # no temporary sibling left
