"""MSMT17 loader (V1: ``train/``, ``test/``; V2: ``mask_train_v2/``, ``mask_test_v2/``; docs/DESIGN.md §4).

Identities come from the list files (``relative/path.jpg pid``), cameras from the file name's third field
(``0000_000_01_0303morning_0015_0.jpg`` → camera 1 of 1..15). Train = ``list_train.txt`` + ``list_val.txt``.
MSMT17 numbers its identities from 0 and has no distractors, so its pids are shifted by +1 on load: pid 0
keeps its package-wide meaning (distractor) and a real person is never mistaken for one.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ..errors import UserError
from .base import ReIDDataset, Record, build_dataset, is_image, report_unparsed, resolve_root
from .market import parse_names

NUM_CAMERAS = 15
IMAGE_FOLDERS = {"V1": ("train", "test"), "V2": ("mask_train_v2", "mask_test_v2")}
LISTS = {"train": ("list_train.txt", "list_val.txt"), "query": ("list_query.txt",),
         "gallery": ("list_gallery.txt",)}
CAMERA_PATTERN = r"^(?P<pid>\d+)_\d+_(?P<cam>\d+)_"   # pid and camera: 1st and 3rd field of the name
EXAMPLE = "0000_000_01_0303morning_0015_0.jpg"
EXPECTED = {"train": {"images": 32621, "identities": 1041}, "query": {"images": 11659},
            "gallery": {"images": 82161}}

LAYOUT_TREE = """\
<root>/                      (or <root>/MSMT17_V1/, <root>/MSMT17_V2/)
├── train/  test/            (V1)   or   mask_train_v2/  mask_test_v2/  (V2)
│   └── 0000/0000_000_01_0303morning_0015_0.jpg …
├── list_train.txt           lines "0000/0000_000_01_0303morning_0015_0.jpg 0"
├── list_val.txt
├── list_query.txt
└── list_gallery.txt"""


def _image_folders(folder: Path) -> tuple[str, str] | None:
    for train, test in IMAGE_FOLDERS.values():
        if (folder / train).is_dir() and (folder / test).is_dir():
            return train, test
    return None


def _has_msmt_layout(folder: Path) -> bool:
    lists = [name for names in LISTS.values() for name in names]
    return _image_folders(folder) is not None and all((folder / name).is_file() for name in lists)


def read_list(list_file: Path) -> pd.DataFrame:
    """The ``path pid`` lines of a list file (blank lines ignored); a malformed line is an error."""
    try:
        table = pd.read_csv(list_file, sep=r"\s+", header=None, names=["path", "pid"], dtype={"path": str},
                            skip_blank_lines=True)
    except (pd.errors.ParserError, ValueError) as error:
        raise UserError(f"{list_file}: expected lines 'relative/path.jpg pid' ({error})") from error
    bad = table["pid"].isna() | pd.to_numeric(table["pid"], errors="coerce").isna()
    if bad.any():
        line = int(bad.to_numpy().nonzero()[0][0]) + 1
        raise UserError(f"{list_file}: line {line} is not 'relative/path.jpg pid': "
                        f"{table.iloc[line - 1].tolist()}")
    return table.astype({"pid": "int64"})


def read_msmt_split(image_folder: Path, list_files: list[Path]) -> list[Record]:
    """``(path, pid, camid)`` from list files; entries whose name gives no camera are reported and skipped."""
    table = pd.concat([read_list(f) for f in list_files], ignore_index=True)
    table = table[[is_image(os.path.basename(p)) for p in table["path"]]]
    names = [os.path.basename(p) for p in table["path"]]
    parsed, bad = parse_names(names, [CAMERA_PATTERN])
    in_range = parsed["cam"].between(1, NUM_CAMERAS)
    bad += [f"{n} (camera outside 1..{NUM_CAMERAS})" for n in parsed.loc[~in_range, "name"]]
    parsed = parsed[in_range]
    table = table.iloc[parsed.index]
    report_unparsed(", ".join(map(str, list_files)), bad, EXAMPLE)
    paths = [str(image_folder / p) for p in table["path"]]
    pids = table["pid"].where(table["pid"] < 0, table["pid"] + 1)  # shift real ids past 0 (see module doc)
    return list(zip(paths, pids.tolist(), (parsed["cam"] - 1).tolist()))


def load_msmt17(root: str | Path) -> ReIDDataset:
    folder = resolve_root(root, _has_msmt_layout, ["MSMT17_V1", "MSMT17_V2", "MSMT17"], LAYOUT_TREE, "msmt17")
    train_dir, test_dir = _image_folders(folder)
    image_folder = {"train": folder / train_dir, "query": folder / test_dir, "gallery": folder / test_dir}
    lists = {split: [folder / name for name in names] for split, names in LISTS.items()}
    splits = {split: read_msmt_split(image_folder[split], lists[split]) for split in LISTS}
    where = {split: ", ".join(str(p) for p in lists[split]) for split in LISTS}
    return build_dataset("msmt17", folder, splits, num_cameras=NUM_CAMERAS, expected=EXPECTED, where=where)
