"""Settings the notebooks share, read from the environment so that nbval can run them small.

``PIRID_NOTEBOOK_MODE``: ``full`` (default; what the committed outputs show) or ``test`` (what
``make test`` uses: the ``test`` profile, fewer epochs, runs written to a temporary folder).
``PIRID_DATASET`` / ``PIRID_DATA_ROOT``: a real dataset instead of the synthetic ``small`` benchmark.
On a CUDA machine the full-training notebook switches to the ``paper`` profile.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import PiridConfig, get_config
from .runfiles import RunFiles, run_dir
from .utils import REPO_ROOT

MODES = ("full", "test")


@dataclass(frozen=True)
class NotebookSettings:
    mode: str
    dataset: str
    data_root: str | None
    profile: str
    results_root: Path      # committed results (read by the figure/table notebooks)
    scratch_root: Path      # where notebook trainings write (results/notebooks, or a temp dir in test mode)

    @property
    def is_test(self) -> bool:
        return self.mode == "test"

    def config(self, **overrides) -> PiridConfig:
        return get_config(self.profile, **overrides)

    def describe(self) -> str:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        return (f"mode={self.mode}  dataset={self.dataset}  profile={self.profile}  device={device}  "
                f"(set PIRID_NOTEBOOK_MODE / PIRID_DATASET / PIRID_DATA_ROOT to change)")


def settings(gpu_profile: str = "cpu", gpu_dataset: str | None = None) -> NotebookSettings:
    """The notebook settings; ``gpu_profile="paper"`` lets a notebook use §3.1 exactly on a GPU, and
    ``gpu_dataset`` (e.g. ``"market"``, the Market-1501-scale preset) is its dataset there when
    ``PIRID_DATASET`` is not set (full mode on a CUDA machine only)."""
    mode = os.environ.get("PIRID_NOTEBOOK_MODE", "full")
    if mode not in MODES:
        raise ValueError(f"PIRID_NOTEBOOK_MODE={mode!r}; expected one of {MODES}")
    if mode == "test":
        profile = "test"
        scratch = Path(tempfile.mkdtemp(prefix="pirid_nbval_"))
    else:
        profile = gpu_profile if torch.cuda.is_available() else "cpu"
        scratch = REPO_ROOT / "results" / "notebooks"
    default_dataset = "small"
    if gpu_dataset and mode == "full" and torch.cuda.is_available():
        default_dataset = gpu_dataset
    return NotebookSettings(mode=mode, dataset=os.environ.get("PIRID_DATASET", default_dataset),
                            data_root=os.environ.get("PIRID_DATA_ROOT"), profile=profile,
                            results_root=REPO_ROOT / "results", scratch_root=scratch)


# --------------------------------------------------------------------------- widgets
def live_frontend() -> bool:
    """True in a kernel that a Jupyter server started for an open notebook (JupyterLab, Notebook): the
    server sets ``JPY_SESSION_NAME`` for it, while nbval, nbconvert and plain Python do not.
    ``PIRID_WIDGETS=1``/``0`` forces it; ``PIRID_NOTEBOOK_MODE=test`` (nbval) always gives False."""
    forced = os.environ.get("PIRID_WIDGETS")
    if forced in ("0", "1"):
        return forced == "1"
    if os.environ.get("PIRID_NOTEBOOK_MODE") == "test" or not os.environ.get("JPY_SESSION_NAME"):
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return getattr(get_ipython(), "kernel", None) is not None


def show_interactive(draw, **controls):
    """``draw(**defaults)`` once, or the same view with knobs: ``controls`` are ipywidgets whose ``value``
    is the default of the ``draw`` argument of that name.

    In a live JupyterLab kernel (:func:`live_frontend`) it displays ``ipywidgets.interactive(draw, ...)``,
    which draws the default view at once and redraws on every change; elsewhere (nbval, nbconvert, a
    static render of the saved notebook) it calls ``draw`` with the defaults, so the cell always has a
    static output. Returns None, so that a cell ending with this call shows the view once.
    """
    if not live_frontend():
        draw(**{name: control.value for name, control in controls.items()})
        return
    import ipywidgets
    from IPython.display import display

    display(ipywidgets.interactive(draw, **controls))


# --------------------------------------------------------------------------- trainings
# Fields that change how a run is evaluated or where it runs, not what it learns.
_NOT_TRAINING = ("device", "num_workers", "eval_batch_size", "eval_every")


def train_or_reuse(nb: NotebookSettings, cfg: PiridConfig, dataset, scratch_name: str, **trainer_kwargs):
    """``(run_path, record)`` of ``cfg`` on ``dataset``: in full mode, the run ``make reproduce`` committed for
    the same config and seed when there is one (a CPU cannot afford to train it again in every notebook);
    otherwise — test mode, another config, ``PIRID_RETRAIN=1`` — a fresh training under ``scratch_root``."""
    from .trainer import Trainer

    committed = run_dir(nb.results_root, dataset.name, cfg.profile, cfg.variant, cfg.seed)
    if not nb.is_test and os.environ.get("PIRID_RETRAIN") != "1" and RunFiles(committed).is_finished:
        record = RunFiles(committed).metrics()
        saved = {k: v for k, v in record["config"].items() if k not in _NOT_TRAINING}
        wanted = {k: v for k, v in cfg.to_dict().items() if k not in _NOT_TRAINING}
        if saved == wanted:
            print(f"reusing the committed run {committed.relative_to(REPO_ROOT).as_posix()} (same config and "
                  f"seed; PIRID_RETRAIN=1 trains it here)")
            return committed, record
    out = nb.scratch_root / scratch_name
    trainer_kwargs.setdefault("progress", False)
    trainer_kwargs.setdefault("log", lambda line: None)
    return out, Trainer(cfg, dataset, out, **trainer_kwargs).fit()
