"""Loaders (Market-1501, DukeMTMC-reID, MSMT17 V1/V2), ICS relabelling and the hidden ground truth, on small
fake trees written by tests/conftest.py."""
from __future__ import annotations

import os
import sys
import types
import warnings
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest

from conftest import write_jpeg, write_market_tree, write_msmt_tree
from pirid_lite import datasets
from pirid_lite.datasets import DatasetLayoutError, ics_relabel, load_dukemtmc, load_market1501, load_msmt17


def _load_quietly(loader, root):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = loader(root)
    return dataset, [str(w.message) for w in caught]


def _check_against_tree(dataset, tree, check_paths: bool = True):
    for split in ("train", "query", "gallery"):
        items = getattr(dataset, split)
        expected = tree.kept(split)
        assert len(items) == len(expected), split
        assert sorted(i.camid for i in items) == sorted(cam - 1 for _, _, cam in expected), split
        if check_paths:
            assert sorted(os.path.basename(i.path) for i in items) == sorted(name for name, _, _ in expected)
        if split != "train":
            assert sorted(i.pid for i in items) == sorted(pid for _, pid, _ in expected), split
    truth = dataset.hidden_truth.reveal_per_image(reason="test")
    assert sorted(truth) == sorted(pid for _, pid, _ in tree.kept("train"))


@pytest.mark.parametrize("style, loader, folder", [("market", load_market1501, "Market-1501-v15.09.15"),
                                                   ("duke", load_dukemtmc, "DukeMTMC-reID")])
def test_market_layout_formats_parse_to_the_written_counts(tmp_path, style, loader, folder):
    tree = write_market_tree(tmp_path / folder, style)
    dataset, messages = _load_quietly(loader, tmp_path)   # parent folder: auto-detected
    assert dataset.root == tree.root
    _check_against_tree(dataset, tree)
    assert not any("Thumbs.db" in m or "DS_Store" in m for m in messages)
    assert sum("do not parse" in m for m in messages) == 3  # one bad name per split, reported
    gallery_pids = {i.pid for i in dataset.gallery}
    assert 0 in gallery_pids and -1 not in gallery_pids      # distractors kept, junk dropped
    assert all(i.path.endswith(".jpg") for split in ("train", "query", "gallery") for i in getattr(dataset, split))


def test_msmt17_v1_and_v2_parse_to_the_written_counts(msmt_tree):
    dataset, messages = _load_quietly(load_msmt17, msmt_tree.root.parent)
    _check_against_tree(dataset, msmt_tree, check_paths=False)
    assert dataset.root == msmt_tree.root
    assert all(os.path.isfile(i.path) for i in dataset.train + dataset.query + dataset.gallery)
    # the first MSMT identity (list pid 0) is a real person: kept in train and query, not treated as distractor
    assert min(dataset.hidden_truth.reveal_per_image(reason="test")) == 1
    assert {i.camid for i in dataset.train} == {0, 13, 1, 14, 6}  # cameras 1,14,2,15,7 from the names
    assert sum("do not parse" in m and "badly_named.jpg" in m for m in messages) == 1


def test_unparseable_names_are_counted_and_named(tmp_path):
    tree = write_market_tree(tmp_path / "m", "market")
    for name in ("0002_c1_f0000001.jpg", "2_c1s1.jpg", "0002_c9s1_000001_01.jpg"):  # Duke-style, short, cam 9
        write_jpeg(tree.root / "bounding_box_train" / name)
    with pytest.warns(UserWarning) as caught:
        dataset = load_market1501(tree.root)
    train_warning = [str(w.message) for w in caught if "bounding_box_train" in str(w.message)
                     and "do not parse" in str(w.message)]
    assert len(train_warning) == 1
    assert "4 image file(s)" in train_warning[0] and "0002_c1s1_000451_03.jpg" in train_warning[0]
    assert len(dataset.train) == len(tree.kept("train"))


def test_count_mismatch_warns_naming_split_expected_and_found(market_tree):
    _, messages = _load_quietly(load_market1501, market_tree.root)
    assert any("query split has 5 images, expected 3368" in m for m in messages)
    assert any(f"train split has {len(market_tree.kept('train'))} images, expected 12936" in m for m in messages)
    assert any("train split has 6 identities, expected 751" in m for m in messages)


def _naive_ics(pids, camids):
    """Independent reference: per camera, sorted pids → y; offsets by accumulation."""
    per_camera = defaultdict(set)
    for pid, cam in zip(pids, camids):
        per_camera[cam].add(pid)
    offsets, start = {}, 0
    for cam in sorted(per_camera):
        offsets[cam] = start
        start += len(per_camera[cam])
    return [offsets[c] + sorted(per_camera[c]).index(p) for p, c in zip(pids, camids)], offsets


def test_ics_relabel_matches_naive_reference():
    rng = np.random.default_rng(0)
    pids = rng.integers(1, 30, 200)
    camids = rng.integers(0, 5, 200)
    labels, ics, truth = ics_relabel(pids, camids, num_cameras=6)
    expected, offsets = _naive_ics(pids.tolist(), camids.tolist())
    assert labels.tolist() == expected
    assert ics.offsets[:5].tolist() == [offsets[c] for c in range(5)]
    assert ics.ids_per_camera[5] == 0 and ics.offsets[5] == ics.num_ids
    assert truth[labels].tolist() == pids.tolist()


def test_ics_invariants_on_loaded_dataset(market_tree):
    dataset, _ = _load_quietly(load_market1501, market_tree.root)
    ics = dataset.ics
    labels = np.array([i.label for i in dataset.train])
    camids = np.array([i.camid for i in dataset.train])
    # N_c from the fixture: distinct true pids per camera
    written = defaultdict(set)
    for _, pid, cam in market_tree.kept("train"):
        written[cam - 1].add(pid)
    assert ics.num_cameras == 6
    assert ics.ids_per_camera.tolist() == [len(written[c]) for c in range(6)]
    assert ics.offsets.tolist() == np.concatenate([[0], np.cumsum(ics.ids_per_camera)[:-1]]).tolist()
    assert ics.num_ids == sum(len(v) for v in written.values()) == len(ics.label_camera)
    for c in range(ics.num_cameras):
        local = np.unique(labels[camids == c]) - ics.offsets[c]
        assert local.tolist() == list(range(ics.ids_per_camera[c]))     # contiguous 0..N_c-1
    assert (ics.label_camera[labels] == camids).all()                     # no global ID shared by cameras
    truth = dataset.hidden_truth.reveal_per_label(reason="test")
    for c in range(ics.num_cameras):                                      # y follows the sorted true pids
        assert truth[ics.offsets[c]:ics.offsets[c] + ics.ids_per_camera[c]].tolist() == sorted(written[c])
    per_image = dataset.hidden_truth.reveal_per_image(reason="test")
    pid_of_name = {name: pid for name, pid, _ in market_tree.kept("train")}
    assert per_image.tolist() == [pid_of_name[os.path.basename(i.path)] for i in dataset.train]


def test_hidden_truth_is_not_printed_and_needs_a_reason(market_tree):
    dataset, _ = _load_quietly(load_market1501, market_tree.root)
    truth = dataset.hidden_truth
    assert not any(ch.isdigit() for ch in repr(truth) + str(truth))
    assert not hasattr(truth, "__dict__")
    assert not any(isinstance(v, np.ndarray) for v in vars(dataset).values())
    for reason in ("", "   ", None):
        with pytest.raises(ValueError, match="reason"):
            truth.reveal_per_label(reason=reason)
        with pytest.raises(ValueError, match="reason"):
            truth.reveal_per_image(reason=reason)
    truth.reveal_per_label(reason="purity diagnostics")
    assert truth.reveal_log[-1] == "purity diagnostics"
    revealed = truth.reveal_per_label(reason="mutate a copy")
    revealed[:] = -5
    assert (truth.reveal_per_label(reason="check") != -5).all()


def test_scrambled_truth_permutes_only_the_truth(market_tree):
    dataset, _ = _load_quietly(load_market1501, market_tree.root)
    original = dataset.hidden_truth.reveal_per_label(reason="test")
    scrambled = dataset.with_scrambled_truth(seed=1)
    assert scrambled.train == dataset.train and scrambled.query == dataset.query
    assert scrambled.gallery == dataset.gallery and scrambled.ics is dataset.ics
    permuted = scrambled.hidden_truth.reveal_per_label(reason="test")
    assert sorted(permuted) == sorted(original) and (permuted != original).any()
    labels = np.array([i.label for i in dataset.train])
    assert scrambled.hidden_truth.reveal_per_image(reason="test").tolist() == permuted[labels].tolist()
    assert dataset.hidden_truth.reveal_per_label(reason="test").tolist() == original.tolist()  # untouched


def test_summary_table_and_printing(market_tree, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = datasets.load("market-1501", root=market_tree.root.parent, verbose=True)
    printed = capsys.readouterr().out
    table = dataset.summary()
    assert isinstance(table, pd.DataFrame)
    assert list(table.index) == ["train", "query", "gallery"]
    assert {"images", "identities", "cameras"} <= set(table.columns)
    assert table.loc["gallery", "images"] == len(market_tree.kept("gallery"))
    assert table.loc["query", "identities"] == len({pid for _, pid, _ in market_tree.kept("query")})
    assert table.loc["train", "cameras"] == 3
    assert "gallery" in printed and str(len(market_tree.kept("gallery"))) in printed and str(dataset) in printed


def test_missing_root_names_the_path_and_shows_the_layout(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetLayoutError, match="nowhere") as error:
        load_market1501(missing)
    assert "bounding_box_train/" in str(error.value) and "query/" in str(error.value)
    with pytest.raises(DatasetLayoutError, match="list_gallery.txt"):
        load_msmt17(missing)


def test_wrong_layout_names_the_path_and_shows_the_layout(tmp_path):
    (tmp_path / "Market-1501-v15.09.15" / "query").mkdir(parents=True)   # train/test folders missing
    with pytest.raises(DatasetLayoutError, match="bounding_box_test/") as error:
        load_market1501(tmp_path)
    assert str(tmp_path) in str(error.value)
    tree = write_msmt_tree(tmp_path / "MSMT17_V1")
    (tree.root / "list_val.txt").unlink()
    with pytest.raises(DatasetLayoutError, match="list_val.txt"):
        load_msmt17(tmp_path)


def test_empty_split_is_an_error(market_tree):
    for path in (market_tree.root / "query").iterdir():
        if path.name.endswith(".jpg"):
            path.unlink()
    with pytest.raises(ValueError, match=r"query split is empty.*query"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_market1501(market_tree.root)


@pytest.mark.filterwarnings("ignore:.*do not parse")
def test_malformed_msmt_list_line_is_an_error(tmp_path):
    tree = write_msmt_tree(tmp_path / "MSMT17_V2", "V2")
    with open(tree.root / "list_query.txt", "a") as handle:
        handle.write("0001/0001_001_04_0303morning_0001_0.jpg not-a-pid\n")
    with pytest.raises(ValueError, match="list_query.txt"):
        load_msmt17(tree.root)


@pytest.mark.filterwarnings("ignore:.*(do not parse|published count)")
def test_distractor_in_train_is_dropped_with_a_warning(market_tree):
    write_jpeg(market_tree.root / "bounding_box_train" / "0000_c1s1_000001_01.jpg")
    with pytest.warns(UserWarning, match="distractor"):
        dataset = load_market1501(market_tree.root)
    assert len(dataset.train) == len(market_tree.kept("train"))


@pytest.mark.filterwarnings("ignore:.*do not parse")
def test_load_dispatches_synthetic_presets_to_the_generator(market_tree, monkeypatch):
    calls = []
    fake = types.ModuleType("pirid_lite.datasets.synthetic")
    fake.ensure_generated = lambda preset, seed=0, root=None: calls.append((preset, seed, root)) or market_tree.root
    monkeypatch.setitem(sys.modules, "pirid_lite.datasets.synthetic", fake)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = datasets.load("synthetic-tiny", seed=3, verbose=False)
    assert calls == [("tiny", 3, None)]
    assert dataset.name == "synthetic-tiny-seed3"
    assert not any("expected" in str(w.message) and "published" in str(w.message) for w in caught)
    _check_against_tree(dataset, market_tree)
    datasets.load("small", root="somewhere", verbose=False)
    assert calls[-1] == ("small", 0, "somewhere")


def test_unknown_dataset_name_is_an_error():
    with pytest.raises(ValueError, match="unknown dataset 'cuhk03'"):
        datasets.load("cuhk03", verbose=False)
