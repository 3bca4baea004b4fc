"""Dataset loaders (Market-1501, DukeMTMC-reID, MSMT17, synthetic benchmark) with ICS relabelling.

``load(name, root=None, seed=0, verbose=True)`` returns a :class:`ReIDDataset`; see docs/ARCHITECTURE.md.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import UserError
from .base import (DISTRACTOR_PID, JUNK_PID, DatasetLayoutError, HiddenTruth, ICSLabels, ReIDDataset, TestItem,
                   TrainItem, build_dataset, ics_relabel)
from .market import (DUKE_PATTERN, MARKET_LAYOUTS, MARKET_PATTERN, load_dukemtmc, load_market1501, load_market_layout,
                     load_registered_layout)
from .msmt import load_msmt17

DEFAULT_DATA_ROOT = Path("data")
SYNTHETIC_PRESET_NAMES = ("tiny", "small", "market")

# Real datasets: canonical name -> loader; aliases are matched after lower-casing and dropping "-", "_".
# Every Market-1501-layout entry of market.MARKET_LAYOUTS is one of them.
_REAL: dict[str, Callable[[str | Path], ReIDDataset]] = {
    **{name: (lambda root, name=name: load_registered_layout(name, root)) for name in MARKET_LAYOUTS},
    "msmt17": load_msmt17}
_ALIASES = {**{alias: name for name, layout in MARKET_LAYOUTS.items() for alias in (name, *layout.aliases)},
            "msmt17": "msmt17", "msmt17v1": "msmt17", "msmt17v2": "msmt17", "msmt": "msmt17"}

__all__ = ["load", "canonical_name", "ReIDDataset", "TrainItem", "TestItem", "ICSLabels", "HiddenTruth",
           "DatasetLayoutError", "ics_relabel", "build_dataset", "load_market1501", "load_dukemtmc", "load_msmt17",
           "load_synthetic", "JUNK_PID", "DISTRACTOR_PID", "DATASET_NAMES"]
DATASET_NAMES = tuple(_REAL) + SYNTHETIC_PRESET_NAMES


def _synthetic_preset(name: str) -> str | None:
    key = name.lower().strip()
    key = key.removeprefix("synthetic-").removeprefix("synthetic_")
    return key if key in SYNTHETIC_PRESET_NAMES else None


def load_synthetic(preset, seed: int = 0, root: str | Path | None = None, name: str | None = None) -> ReIDDataset:
    """Generate the synthetic preset (a name, or a ``SyntheticSpec`` with ``root`` and ``name``) on first use
    and read it with the Market-1501 loader (no published counts to compare with; the number of cameras is
    read from the data)."""
    from .synthetic import ensure_generated  # lazy: generation code is only needed for synthetic data

    folder = ensure_generated(preset, seed=seed, root=root)
    name = (name or f"synthetic-{preset}") + (f"-seed{seed}" if seed else "")
    return load_market_layout(name, folder, patterns=[MARKET_PATTERN, DUKE_PATTERN], folder_names=[],
                              example="0002_c1s1_000451_03.jpg")


def canonical_name(name: str) -> str:
    """The registered name behind ``name`` or one of its aliases (``Market-1501`` → ``market1501``;
    ``synthetic-small`` → ``small``); :class:`UserError` for an unknown name."""
    preset = _synthetic_preset(name)
    if preset is not None:
        return preset
    key = _ALIASES.get(name.lower().replace("-", "").replace("_", "").replace(".", ""))
    if key is None:
        raise UserError(f"unknown dataset {name!r}; expected one of {', '.join(DATASET_NAMES)} "
                        f"(or synthetic-tiny/-small/-market)")
    return key


def load(name: str, root: str | Path | None = None, seed: int = 0, verbose: bool = True) -> ReIDDataset:
    """Load a dataset by name: ``market1501`` | ``dukemtmc`` | ``msmt17`` (read from ``root``: the dataset
    folder or a parent holding it; default ``data/``) or a synthetic preset ``tiny`` | ``small`` | ``market``
    (aliases ``synthetic-tiny`` …; ``seed`` picks the generated instance, ``root`` where it is written).
    ``verbose`` prints the split summary."""
    key = canonical_name(name)
    if key in SYNTHETIC_PRESET_NAMES:
        dataset = load_synthetic(key, seed=seed, root=root)
    else:
        dataset = _REAL[key](DEFAULT_DATA_ROOT if root is None else root)
    if verbose:
        dataset.print_summary()
    return dataset
