"""Shared dataset types: items, ICS relabelling (paper §2.1–2.2), hidden ground truth, layout checks.

Every loader produces raw ``(path, pid, camid)`` records per split and hands them to :func:`build_dataset`,
which drops junk/distractors where they do not belong, relabels the training images per camera (ICS) and
locks the true cross-camera identities away in a :class:`HiddenTruth`.
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import UserError

JUNK_PID = -1         # Market-1501 "junk" boxes: dropped at load
DISTRACTOR_PID = 0    # Market-1501 "distractors": kept in the gallery, never trained on
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
SPLITS = ("train", "query", "gallery")


class DatasetLayoutError(UserError, FileNotFoundError):
    """A dataset root is missing or does not look like the expected layout."""


@dataclass(frozen=True)
class TrainItem:
    """A training image as an ICS method may see it: ``label`` = global intra-camera ID j = A_c + y."""

    path: str
    camid: int
    label: int


@dataclass(frozen=True)
class TestItem:
    """A query/gallery image: true identity ``pid`` (0 = distractor) and camera (0-based)."""

    __test__ = False  # not a pytest test class despite the name

    path: str
    pid: int
    camid: int


@dataclass(frozen=True)
class ICSLabels:
    """The intra-camera label space (paper §2.1): camera c owns global IDs A_c .. A_c + N_c − 1.

    ``ids_per_camera[c]`` = N_c, ``offsets[c]`` = A_c = Σ_{k<c} N_k, ``num_ids`` = N = Σ_c N_c and
    ``label_camera[j]`` = the camera of global ID j.
    """

    num_cameras: int
    ids_per_camera: np.ndarray
    offsets: np.ndarray
    num_ids: int
    label_camera: np.ndarray


class HiddenTruth:
    """True cross-camera identities of the training set, locked away from ICS code.

    Nothing is printed by ``repr``; the arrays sit in name-mangled attributes and can be read only through
    :meth:`reveal_per_label` / :meth:`reveal_per_image` with a stated, non-empty reason (kept in
    :attr:`reveal_log`, so a run can show who looked and why).
    """

    __slots__ = ("__per_label", "__image_labels", "reveal_log")

    def __init__(self, per_label: np.ndarray, image_labels: np.ndarray) -> None:
        self.__per_label = np.asarray(per_label, dtype=np.int64).copy()
        self.__image_labels = np.asarray(image_labels, dtype=np.int64).copy()
        self.reveal_log: list[str] = []

    def __repr__(self) -> str:
        return "HiddenTruth(<true identities hidden; use reveal_per_label(reason=...)>)"

    __str__ = __repr__

    def _check(self, reason: str) -> None:
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError("HiddenTruth: a non-empty reason=... is required to read the true identities "
                             "(ICS variants must never read them)")
        self.reveal_log.append(reason)

    def reveal_per_label(self, reason: str) -> np.ndarray:
        """Array (N,): the true identity of each global intra-camera ID j."""
        self._check(reason)
        return self.__per_label.copy()

    def reveal_per_image(self, reason: str) -> np.ndarray:
        """Array (len(train),): the true identity of each training image."""
        self._check(reason)
        return self.__per_label[self.__image_labels]

    def scrambled(self, seed: int) -> "HiddenTruth":
        """A copy whose identities are shuffled over the global IDs (image → ID mapping unchanged)."""
        permutation = np.random.default_rng(seed).permutation(len(self.__per_label))
        return HiddenTruth(self.__per_label[permutation], self.__image_labels)


def ics_relabel(pids: np.ndarray, camids: np.ndarray, num_cameras: int) -> tuple[np.ndarray, ICSLabels, np.ndarray]:
    """ICS relabelling (paper §2.1–2.2): per camera, sort the true pids it saw and number them y = 0..N_c−1;
    the global label is j = A_c + y with A_c = Σ_{k<c} N_k.

    Sorting the (camera, pid) pairs lexicographically lists exactly camera 0's IDs, then camera 1's, …,
    each in pid order, so the rank of a pair *is* j. Returns (labels per image, ICSLabels, true pid per j).
    """
    pids = np.asarray(pids, dtype=np.int64)
    camids = np.asarray(camids, dtype=np.int64)
    if camids.size and (camids.min() < 0 or camids.max() >= num_cameras):
        raise ValueError(f"camera ids must lie in 0..{num_cameras - 1}, got {camids.min()}..{camids.max()}")
    pairs, labels = np.unique(np.stack([camids, pids], axis=1), axis=0, return_inverse=True)
    label_camera, truth_per_label = pairs[:, 0], pairs[:, 1]
    ids_per_camera = np.bincount(label_camera, minlength=num_cameras)
    offsets = np.concatenate([[0], np.cumsum(ids_per_camera)[:-1]]).astype(np.int64)
    ics = ICSLabels(num_cameras=num_cameras, ids_per_camera=ids_per_camera, offsets=offsets,
                    num_ids=int(ids_per_camera.sum()), label_camera=label_camera)
    return labels.reshape(-1).astype(np.int64), ics, truth_per_label


class ReIDDataset:
    """A loaded dataset: ``train`` (ICS labels only), ``query``/``gallery`` (true pids, for evaluation),
    ``ics`` (the label space) and ``hidden_truth`` (true identities of the training set, locked)."""

    def __init__(self, name: str, root: Path, train: list[TrainItem], query: list[TestItem],
                 gallery: list[TestItem], ics: ICSLabels, hidden_truth: HiddenTruth, num_train_identities: int):
        self.name, self.root = name, Path(root)
        self.train, self.query, self.gallery = train, query, gallery
        self.ics, self.hidden_truth = ics, hidden_truth
        self._num_train_identities = num_train_identities  # a count only, shown by summary()

    def summary(self) -> pd.DataFrame:
        """Images, identities and cameras per split (train identities: the true count, for comparison with
        published numbers; the ICS label space is in ``ics``)."""
        def row(items: Sequence, identities: int) -> dict[str, int]:
            cams = {item.camid for item in items}
            return {"images": len(items), "identities": identities, "cameras": len(cams)}

        table = pd.DataFrame.from_dict({
            "train": row(self.train, self._num_train_identities),
            "query": row(self.query, len({i.pid for i in self.query})),
            "gallery": row(self.gallery, len({i.pid for i in self.gallery})),
        }, orient="index")
        return table

    def __repr__(self) -> str:
        return (f"ReIDDataset {self.name!r} at {_display_path(self.root)}\n{self.summary().to_string()}\n"
                f"ICS label space: N = {self.ics.num_ids} intra-camera IDs over {self.ics.num_cameras} cameras, "
                f"N_c = {self.ics.ids_per_camera.tolist()}")

    __str__ = __repr__

    def print_summary(self) -> None:
        print(self)

    def with_scrambled_truth(self, seed: int) -> "ReIDDataset":
        """A copy whose hidden truth is randomly permuted over the global IDs; train items, labels and
        test splits are unchanged — an ICS run on it must be bit-identical (docs/DESIGN.md §2, no leakage)."""
        clone = copy.copy(self)
        clone.hidden_truth = self.hidden_truth.scrambled(seed)
        return clone


# ---------------------------------------------------------------------------------------------- building
Record = tuple[str, int, int]  # (path, true pid, 0-based camera)


def build_dataset(name: str, root: Path, splits: Mapping[str, list[Record]], num_cameras: int | None = None,
                  expected: Mapping[str, Mapping[str, int]] | None = None, where: Mapping[str, str] | None = None
                  ) -> ReIDDataset:
    """Drop junk (everywhere) and distractors (train/query), check counts, relabel train per camera.

    ``where[split]`` names the folder/list a split came from (for error messages); ``expected`` maps a split
    to published counts ``{"images": …, "identities": …}`` and a mismatch warns.
    """
    where = where or {}
    kept = {split: _drop_special(split, splits[split], where.get(split, split)) for split in SPLITS}
    for split in SPLITS:
        if not kept[split]:
            raise UserError(f"{name}: the {split} split is empty after parsing {where.get(split, split)} "
                            f"(no image with a valid identity found)")
    if num_cameras is None:
        num_cameras = 1 + max(camid for records in kept.values() for _, _, camid in records)
    train_paths, train_pids, train_cams = (list(col) for col in zip(*kept["train"]))
    labels, ics, truth_per_label = ics_relabel(np.array(train_pids), np.array(train_cams), num_cameras)
    dataset = ReIDDataset(
        name, root,
        train=[TrainItem(p, int(c), int(j)) for p, c, j in zip(train_paths, train_cams, labels)],
        query=[TestItem(p, pid, c) for p, pid, c in kept["query"]],
        gallery=[TestItem(p, pid, c) for p, pid, c in kept["gallery"]],
        ics=ics, hidden_truth=HiddenTruth(truth_per_label, labels),
        num_train_identities=len(set(train_pids)))
    if expected:
        check_counts(dataset, expected)
    return dataset


def _drop_special(split: str, records: Iterable[Record], source: str) -> list[Record]:
    """Junk never counts; distractors stay only in the gallery (a distractor has no identity to learn or
    to query for)."""
    records = [r for r in records if r[1] != JUNK_PID]
    if split == "gallery":
        return records
    distractors = sum(r[1] == DISTRACTOR_PID for r in records)
    if distractors:
        warnings.warn(f"{source}: {distractors} distractor image(s) (pid 0) found in the {split} split; "
                      f"they are dropped", stacklevel=3)
    return [r for r in records if r[1] != DISTRACTOR_PID]


def check_counts(dataset: ReIDDataset, expected: Mapping[str, Mapping[str, int]]) -> None:
    """Warn, per split, when the loaded numbers differ from the published ones (docs/DESIGN.md §4)."""
    found = dataset.summary()
    for split, counts in expected.items():
        for column, value in counts.items():
            if int(found.loc[split, column]) != value:
                warnings.warn(f"{dataset.name}: the {split} split has {int(found.loc[split, column])} {column}, "
                              f"expected {value} (published count) — is the copy at {dataset.root} complete?",
                              stacklevel=3)


# ---------------------------------------------------------------------------------------------- layout
def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith(".")


def report_unparsed(source: str | Path, bad_names: Sequence[str], expected_form: str) -> None:
    """Warn about image files whose names do not parse (they are skipped, never guessed)."""
    if bad_names:
        warnings.warn(f"{source}: {len(bad_names)} image file(s) with names that do not parse were skipped "
                      f"(e.g. {bad_names[0]!r}; expected names like {expected_form!r})", stacklevel=3)


def resolve_root(root: str | Path, has_layout, folder_names: Sequence[str], layout_tree: str, dataset: str) -> Path:
    """The dataset folder: ``root`` itself when it has the layout, else ``root/<usual folder name>``."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetLayoutError(f"{dataset}: root folder {root} does not exist. Expected layout:\n{layout_tree}")
    for candidate in (root, *(root / name for name in folder_names)):
        if candidate.is_dir() and has_layout(candidate):
            return candidate
    raise DatasetLayoutError(
        f"{dataset}: {root} does not have the expected layout (neither it nor a subfolder named "
        f"{', '.join(folder_names)} does). Expected layout:\n{layout_tree}")


def _display_path(path) -> str:
    """A path relative to the working directory when that is shorter (no machine-specific prefix in
    notebook outputs), else as given."""
    import os
    relative = os.path.relpath(path)
    return relative if len(relative) < len(str(path)) else str(path)
