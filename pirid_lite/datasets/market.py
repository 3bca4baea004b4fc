"""Market-1501 and DukeMTMC-reID loaders (same folder layout, different file naming; docs/DESIGN.md §4).

The synthetic benchmark is written in this layout too and read by :func:`load_market_layout`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from .base import (ReIDDataset, Record, build_dataset, is_image, report_unparsed, resolve_root)

FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}

# Full-name patterns: anything else is reported, never half-parsed. Groups: pid, camera (1-based).
MARKET_PATTERN = r"^(?P<pid>-?\d+)_c(?P<cam>\d+)s\d+_\d+_\d+$"     # 0002_c1s1_000451_03
DUKE_PATTERN = r"^(?P<pid>-?\d+)_c(?P<cam>\d+)_f\d+$"              # 0001_c2_f0046182

MARKET_EXPECTED = {"train": {"images": 12936, "identities": 751}, "query": {"images": 3368},
                   "gallery": {"images": 15913}}
DUKE_EXPECTED = {"train": {"images": 16522, "identities": 702}, "query": {"images": 2228},
                 "gallery": {"images": 17661}}

LAYOUT_TREE = """\
<root>/                      (or <root>/{folder}/)
├── bounding_box_train/      {example} …
├── bounding_box_test/       gallery (pid 0000 = distractor, -1 = junk)
└── query/"""


def _has_market_layout(folder: Path) -> bool:
    return all((folder / name).is_dir() for name in FOLDERS.values())


def parse_names(names: Sequence[str], patterns: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """Parse ``pid`` and 1-based ``cam`` from file stems with the first matching pattern (vectorised with
    pandas); returns the parsed rows (columns ``name``, ``pid``, ``cam``; index = position in ``names``) and
    the names no pattern matched."""
    stems = pd.Series([os.path.splitext(n)[0] for n in names], dtype="string")
    parsed = stems.str.extract(patterns[0])[["pid", "cam"]]
    for pattern in patterns[1:]:
        parsed = parsed.combine_first(stems.str.extract(pattern)[["pid", "cam"]])
    ok = parsed["pid"].notna().to_numpy()
    table = parsed[ok].astype("int64")
    table.insert(0, "name", [n for n, good in zip(names, ok) if good])
    return table, [n for n, good in zip(names, ok) if not good]  # index = position in ``names``


def read_market_split(folder: Path, patterns: Sequence[str], num_cameras: int | None, example: str
                      ) -> list[Record]:
    """``(path, pid, camid)`` for the images of one folder; unparseable names and cameras outside
    1..num_cameras are counted and reported; non-image files (Thumbs.db, .DS_Store) are ignored."""
    names = sorted(n for n in os.listdir(folder) if is_image(n))
    table, bad = parse_names(names, patterns)
    if num_cameras is not None:
        out_of_range = (table["cam"] < 1) | (table["cam"] > num_cameras)
        bad += [f"{n} (camera outside 1..{num_cameras})" for n in table.loc[out_of_range, "name"]]
        table = table[~out_of_range]
    else:
        bad += [f"{n} (camera 0; cameras start at 1)" for n in table.loc[table["cam"] < 1, "name"]]
        table = table[table["cam"] >= 1]
    report_unparsed(folder, bad, example)
    paths = [str(folder / n) for n in table["name"]]
    return list(zip(paths, table["pid"].tolist(), (table["cam"] - 1).tolist()))


def load_market_layout(name: str, root: str | Path, *, patterns: Sequence[str], folder_names: Sequence[str],
                       example: str, num_cameras: int | None = None,
                       expected: Mapping[str, Mapping[str, int]] | None = None) -> ReIDDataset:
    """Read a Market-1501-layout dataset (Market-1501, DukeMTMC-reID, the synthetic benchmark)."""
    tree = LAYOUT_TREE.format(folder=" or ".join(folder_names) or name, example=example)
    folder = resolve_root(root, _has_market_layout, folder_names, tree, name)
    where = {split: str(folder / sub) for split, sub in FOLDERS.items()}
    splits = {split: read_market_split(Path(path), patterns, num_cameras, example) for split, path in where.items()}
    return build_dataset(name, folder, splits, num_cameras=num_cameras, expected=expected, where=where)


@dataclass(frozen=True)
class MarketLayout:
    """A dataset in the Market-1501 folder layout: how its files are named and what it should hold."""

    patterns: tuple[str, ...]                       # full-name regexes with groups pid and cam (1-based)
    example: str                                    # a file name, for error messages
    folder_names: tuple[str, ...] = ()              # folder names it may sit in under --root
    num_cameras: int | None = None                  # None = read from the data
    expected: Mapping[str, Mapping[str, int]] | None = None   # published counts to check against
    aliases: tuple[str, ...] = ()                   # other spellings of its name for --dataset


# A new dataset in this layout is one entry here (pirid_lite.datasets.load finds it by name and alias).
MARKET_LAYOUTS: dict[str, MarketLayout] = {
    "market1501": MarketLayout((MARKET_PATTERN,), "0002_c1s1_000451_03.jpg",
                               ("Market-1501-v15.09.15", "Market-1501", "market1501"), 6, MARKET_EXPECTED,
                               ("market150115", "market1501v150915")),
    "dukemtmc": MarketLayout((DUKE_PATTERN,), "0001_c2_f0046182.jpg", ("DukeMTMC-reID", "dukemtmc-reid", "DukeMTMC"),
                             8, DUKE_EXPECTED, ("duke", "dukemtmcreid")),
}


def load_registered_layout(name: str, root: str | Path) -> ReIDDataset:
    """The dataset ``name`` of :data:`MARKET_LAYOUTS`, read from ``root``."""
    layout = MARKET_LAYOUTS[name]
    return load_market_layout(name, root, patterns=list(layout.patterns), num_cameras=layout.num_cameras,
                              folder_names=list(layout.folder_names), example=layout.example,
                              expected=layout.expected)


def load_market1501(root: str | Path) -> ReIDDataset:
    return load_registered_layout("market1501", root)


def load_dukemtmc(root: str | Path) -> ReIDDataset:
    return load_registered_layout("dukemtmc", root)
