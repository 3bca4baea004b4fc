"""pirid_lite — a thin, tested implementation of PIRID (Prototype-based Inter-camera Learning for
intra-camera supervised person re-identification) backing a sequence of teaching notebooks.

The folders are the layers (docs/ARCHITECTURE.md), each importing only those below it:

* foundations — ``errors``, ``utils``, ``logkeys``, ``distributed`` (this process's place in a launch);
* ``method/`` — the paper's method (§2): ``model``, ``memory`` (Eq. 1-2), ``losses`` (Eq. 3-7),
  ``jaccard``, ``prototypes`` (§2.3), ``association`` and ``groupings`` (how IDs become prototypes);
* ``config`` (§3.1 defaults, the profiles) and ``variants`` (the variant table);
* ``datasets/`` — loaders, the synthetic benchmark, transforms and the P-K sampler;
* ``evaluation/`` — CMC/mAP and the diagnostics that read the hidden truth;
* ``engine/`` — the trainer, the epoch cycle (``epoch``), one step (``training``), a run's files;
* ``experiments/`` — batches of runs: ``reproduce`` (Tables 1-2), ``calibrate``, ``results`` (tables);
* ``notebook/`` — what the notebooks share: run lookup, widgets, ``viz`` (figures); ``cli`` on top.

``from pirid_lite import viz`` (and ``results``, ``diagnostics``, ...) still works: the short names below
load the module where it lives.
"""
from __future__ import annotations

import importlib

from .config import PiridConfig, get_config

_SHORT_NAMES = {"viz": "notebook.viz", "results": "experiments.results", "diagnostics": "evaluation.diagnostics",
                "calibrate": "experiments.calibrate", "reproduce": "experiments.reproduce",
                "losses": "method.losses", "prototypes": "method.prototypes", "memory": "method.memory",
                "trainer": "engine.trainer", "runfiles": "engine.runfiles", "evaluate": "evaluation.evaluate"}

__all__ = ["PiridConfig", "get_config", *_SHORT_NAMES]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _SHORT_NAMES:
        return importlib.import_module(f".{_SHORT_NAMES[name]}", __name__)
    raise AttributeError(f"module 'pirid_lite' has no attribute {name!r}")
