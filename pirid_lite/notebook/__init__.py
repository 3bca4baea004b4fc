"""Settings the notebooks share, read from the environment so that nbval can run them small.

``PIRID_NOTEBOOK_MODE``: ``full`` (default; what the committed outputs show) or ``test`` (what
``make test`` uses: the ``test`` profile, fewer epochs, runs written to a temporary folder).
``PIRID_DATASET`` / ``PIRID_DATA_ROOT``: a real dataset instead of the synthetic ``small`` benchmark.
``PIRID_RESULTS``: the results folder the notebooks read (``results_root``: runs under ``runs/``; a relative
path from the repository root), default the repository's ``results/``; e.g. the ``--out`` of
``python -m pirid_lite reproduce --data NAME=ROOT …``, whose Tables 1–2 notebook 06 then shows. It must be an
existing folder.
On a CUDA machine the full-training notebook switches to the ``paper`` profile.
``PIRID_WRITE_FIGURES=1`` (set by ``make notebooks``): the files a notebook makes — Figure 3, the table
export — go to the tracked ``results/figures/`` and ``results/tables/`` (those of ``PIRID_RESULTS`` when it
is set); without it to the ignored scratch folder (:func:`output_dir`), so that Run All in JupyterLab leaves
the repository as it was.

Also here: :func:`load_dataset` (the notebook's dataset, a synthetic one generated quietly on first use),
:func:`show_interactive` (a view with knobs in JupyterLab, the default view elsewhere), :func:`train_or_reuse`
(a committed run instead of a new training in full mode) and the FLOP-scaled cost estimate of notebook 04
(:func:`forward_gflops`, :func:`flop_scaled_estimate`).
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import PiridConfig, get_config
from ..engine.runfiles import RunFiles, run_dir
from ..utils import REPO_ROOT

MODES = ("full", "test")
RESULTS = "PIRID_RESULTS"               # the results folder the notebooks read; default DEFAULT_RESULTS
DEFAULT_RESULTS = REPO_ROOT / "results"
WRITE_TRACKED = "PIRID_WRITE_FIGURES"   # "1": notebooks write their figures and tables into the tracked results/


@dataclass(frozen=True)
class NotebookSettings:
    mode: str
    dataset: str
    data_root: str | None
    profile: str
    results_root: Path      # results read by the figure/table notebooks: PIRID_RESULTS, default results/
    scratch_root: Path      # where notebook trainings write (results/notebooks, or a temp dir in test mode)

    @property
    def is_test(self) -> bool:
        return self.mode == "test"

    def config(self, **overrides) -> PiridConfig:
        return get_config(self.profile, **overrides)

    def describe(self) -> str:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        text = (f"mode={self.mode}  dataset={self.dataset}  profile={self.profile}  device={device}\n"
                f"(set PIRID_NOTEBOOK_MODE / PIRID_DATASET / PIRID_DATA_ROOT to change)")
        if Path(self.results_root).resolve() != DEFAULT_RESULTS.resolve():   # only when PIRID_RESULTS moved it
            text += f"\nresults read from {shown_folder(self.results_root)} ({RESULTS})"
        return text


def set_torch_threads(threads: int) -> int:
    """Give torch ``threads`` threads (what the committed outputs were computed with), except under nbval
    (``PIRID_NOTEBOOK_MODE=test``), where the test runner's ``OMP_NUM_THREADS`` decides: two kernels with two
    threads each beside other test workers on 2 cores spin-wait for each other (a cell 4 × slower). Returns
    the count in use."""
    if os.environ.get("PIRID_NOTEBOOK_MODE") != "test" or "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


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
                            results_root=results_root(), scratch_root=scratch)


def results_root() -> Path:
    """The folder named by ``PIRID_RESULTS`` (``~`` expanded; a relative one from the repository root, where
    ``reproduce --out`` is typed, not from the kernel's ``notebooks/``), else the repository's ``results/``;
    a ValueError naming the variable and the path if it is not an existing folder."""
    value = os.environ.get(RESULTS, "").strip()
    if not value:
        return DEFAULT_RESULTS
    folder = (REPO_ROOT / Path(value).expanduser()).resolve()     # an absolute path stays as it is
    if not folder.is_dir():
        raise ValueError(f"{RESULTS}={value!r}: {folder} is not an existing folder; set it to the --out folder of "
                         f"'python -m pirid_lite reproduce' (the one holding runs/), or unset it for results/")
    return folder


def shown_folder(path) -> str:
    """A folder the reader chose (``PIRID_RESULTS``) as a notebook prints it: repository-relative, else
    absolute (never in a committed output, which reads the repository's ``results/``)."""
    return _in_repository(path) or str(Path(path).resolve())


def output_dir(nb: NotebookSettings, name: str) -> Path:
    """The folder where a notebook writes the files ``name`` (``"figures"``, ``"tables"``), created if needed:
    ``results/<name>/`` — tracked, what the README shows — only in full mode with ``PIRID_WRITE_FIGURES=1``
    (``make notebooks`` sets it); otherwise ``scratch_root/<name>/`` (``results/notebooks/``, ignored by git,
    or a temporary folder in test mode), so that running a notebook never rewrites a tracked file."""
    tracked = not nb.is_test and os.environ.get(WRITE_TRACKED) == "1"
    folder = (nb.results_root if tracked else nb.scratch_root) / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _in_repository(path) -> str | None:
    """``path`` relative to the repository, or None when it lies outside it."""
    resolved, root = Path(path).resolve(), REPO_ROOT.resolve()
    return resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else None


def shown_path(path) -> str:
    """``path`` as a notebook prints it: relative to the repository, or "a temporary folder" outside it
    (test mode), so that the printed line is the same on every machine."""
    return _in_repository(path) or "a temporary folder"


def load_dataset(name: str, root: str | Path | None = None, seed: int = 0):
    """``datasets.load(name, root=root, seed=seed, verbose=False)``. A synthetic preset that is not generated
    yet is generated first without the generator's progress bar (which JupyterLab shows in a pink stderr
    box): one line when it starts and one when it is done."""
    import time

    from .. import datasets
    from ..datasets import synthetic

    preset = name.lower().strip().removeprefix("synthetic-").removeprefix("synthetic_")
    if preset in datasets.SYNTHETIC_PRESET_NAMES:
        folder = Path(root) if root is not None else synthetic.default_root(preset, seed)
        first_use = not (folder / "manifest.json").exists()
        if first_use:
            print(f"generating the synthetic {preset!r} benchmark on first use, in {shown_path(folder)} ...", flush=True)
        started = time.perf_counter()
        synthetic.ensure_generated(preset, seed=seed, root=root, progress=False)
        if first_use:
            print(f"done in {time.perf_counter() - started:.0f} s")
    return datasets.load(name, root=root, seed=seed, verbose=False)


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

    Elsewhere than in a live JupyterLab kernel (:func:`live_frontend`: nbval, nbconvert) it calls ``draw``
    with the defaults, so the cell has the plain outputs of ``draw``. In a live kernel it shows the controls,
    then the outputs of ``draw`` as ordinary outputs — the figure as an image, the printed text as text —
    and redraws them in place (display ids) whenever a control changes. Saved from JupyterLab, the cell
    therefore still holds a static figure (the last one drawn), readable outside JupyterLab, and the
    controls leave a one-line note instead of ``interactive(children=...)``. Returns None, so that a cell
    ending with this call shows the view once.
    """
    defaults = {name: control.value for name, control in controls.items()}
    if not live_frontend():
        draw(**defaults)
        return
    import ipywidgets
    from IPython.display import display

    box = ipywidgets.VBox(list(controls.values()))
    bundle = {k: v for k, v in box._repr_mimebundle_().items() if k != "text/plain"}
    bundle["text/plain"] = f"(controls: {', '.join(controls)}; they work in a live JupyterLab kernel)"
    display(bundle, raw=True)
    handles = [display(data, raw=True, display_id=True) for data in _drawn(draw, defaults)]

    def redraw(_change):
        drawn = _drawn(draw, {name: control.value for name, control in controls.items()})
        extra = [d.get("text/plain", "") for d in drawn[len(handles):]]
        for i, handle in enumerate(handles):
            data = drawn[i] if i < len(drawn) else {"text/plain": ""}
            if i == len(handles) - 1 and extra:          # more outputs than the first view: text joins the last
                data = {"text/plain": "\n".join([data.get("text/plain", ""), *extra])}
            handle.update(data, raw=True)

    for control in controls.values():
        control.observe(redraw, names="value")


def _drawn(draw, kwargs) -> list[dict]:
    """The outputs of ``draw(**kwargs)`` as mime bundles, in order: what it displayed (a figure it showed,
    or left open, as PNG), then what it printed as one text output."""
    import matplotlib.pyplot as plt
    from IPython.display import display
    from IPython.utils.capture import capture_output

    before = set(plt.get_fignums())
    with capture_output(stdout=True, stderr=False, display=True) as captured:
        draw(**kwargs)
        for number in [n for n in plt.get_fignums() if n not in before]:   # drawn but not shown
            figure = plt.figure(number)
            display(figure)
            plt.close(figure)
    bundles = [dict(output.data) for output in captured.outputs]
    if captured.stdout:
        bundles.append({"text/plain": captured.stdout.rstrip("\n")})
    return bundles


# --------------------------------------------------------------------------- trainings
# Fields that change how a run is evaluated or where it runs, not what it learns.
_NOT_TRAINING = ("device", "num_workers", "eval_batch_size", "eval_every")


def train_or_reuse(nb: NotebookSettings, cfg: PiridConfig, dataset, scratch_name: str, reuse_committed: bool = True,
                   **trainer_kwargs):
    """``(run_path, record)`` of ``cfg`` on ``dataset``. In full mode a finished run of the same config is
    reused (a CPU cannot afford to train it again in every notebook): the one ``make reproduce`` committed
    (unless ``reuse_committed=False``), else the one this notebook committed under ``scratch_root``; for a
    variant without stage 2 (``pirid-1``) the stage-2 settings are not compared, since it never reads them.
    Otherwise — test mode, another config, ``PIRID_RETRAIN=1`` — a fresh training under ``scratch_root``."""
    from ..config import STAGE2_ONLY_FIELDS
    from ..engine.trainer import Trainer
    from ..variants import POLICIES

    out = nb.scratch_root / scratch_name
    candidates = [run_dir(nb.results_root, dataset.name, cfg.profile, cfg.variant, cfg.seed)] if reuse_committed else []
    ignored = _NOT_TRAINING + (() if POLICIES[cfg.variant].has_stage2 else STAGE2_ONLY_FIELDS)
    for path in [*candidates, out]:
        if nb.is_test or os.environ.get("PIRID_RETRAIN") == "1" or not RunFiles(path).is_finished:
            continue
        record = RunFiles(path).metrics()
        # through PiridConfig, so a field added since the run was made compares at its default
        saved = {k: v for k, v in PiridConfig.from_dict(record["config"]).to_dict().items() if k not in ignored}
        wanted = {k: v for k, v in cfg.to_dict().items() if k not in ignored}
        if saved == wanted:
            print(f"reusing the committed run {path.relative_to(REPO_ROOT).as_posix()}\n"
                  f"(same config and seed; PIRID_RETRAIN=1 trains it here)")
            return path, record
    trainer_kwargs.setdefault("progress", False)
    trainer_kwargs.setdefault("log", lambda line: None)
    return out, Trainer(cfg, dataset, out, **trainer_kwargs).fit()


# --------------------------------------------------------------------------- cost of a configuration
def images_per_run(cfg: PiridConfig, train_images: int) -> int:
    """Training images that go through the network in a run of ``cfg`` on ``train_images`` images
    (epochs × batches × batch size; an epoch is ``iters_per_epoch`` or ⌊train_images / batch size⌋ batches)."""
    from ..engine.training import batches_per_epoch
    return cfg.epochs * batches_per_epoch(cfg, train_images) * cfg.batch_size


def forward_gflops(cfg: PiridConfig) -> float:
    """GFLOPs of one forward pass of ``cfg``'s network on one ``height × width`` image, counted by
    ``torch.utils.flop_counter`` (random weights: the count does not depend on them)."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..method.model import build_model

    model = build_model(cfg.replace(pretrained=None)).eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, cfg.height, cfg.width))
    return counter.get_total_flops() / 1e9


@dataclass(frozen=True)
class FlopScaledEstimate:
    """How long ``target`` would train on ``dataset`` on the machine where ``measured`` ran at
    ``measured_rate`` images/s, assuming time per image scales with forward FLOPs (an estimate, not a
    measurement: real throughput does not scale exactly with FLOPs)."""

    target: PiridConfig
    dataset: str
    train_images: int
    measured: PiridConfig
    measured_rate: float       # training images per second, end to end
    measured_on: str           # the device description of the measurement
    flop_ratio: float          # forward FLOPs of target / of measured, per image

    @property
    def images_seen(self) -> int:
        return images_per_run(self.target, self.train_images)

    @property
    def hours(self) -> float:
        return self.images_seen * self.flop_ratio / self.measured_rate / 3600

    def describe(self) -> str:
        t, m = self.target, self.measured
        return (f"GPU configuration: profile={t.profile}, {t.arch} at {t.height}x{t.width}, dataset {self.dataset}\n"
                f"  ({self.train_images} training images), {t.epochs} epochs = {self.images_seen} training images\n"
                f"one forward pass costs {self.flop_ratio:.1f}x the FLOPs of this run's {m.arch} at "
                f"{m.height}x{m.width}\n"
                f"estimate: about {self.hours:.0f} h for the GPU configuration on this machine\n"
                f"  (basis: {self.measured_rate:.1f} images/s measured above on {self.measured_on},\n"
                f"  scaled by the FLOP ratio; a GPU run prints its own measured rate and wall time)")


def flop_scaled_estimate(measured: PiridConfig, measured_rate: float, measured_on: str, profile: str = "paper",
                         dataset: str = "market") -> FlopScaledEstimate:
    """:class:`FlopScaledEstimate` of the ``profile`` configuration on the synthetic preset ``dataset``
    (its training-set size is fixed by the preset), from a run of ``measured`` at ``measured_rate``."""
    from ..datasets.synthetic import PRESETS

    target = get_config(profile)
    train_images = PRESETS[dataset].train_images
    if train_images is None:
        raise ValueError(f"the synthetic preset {dataset!r} has no fixed number of training images")
    return FlopScaledEstimate(target, dataset, train_images, measured, measured_rate, measured_on,
                              forward_gflops(target) / forward_gflops(measured))
