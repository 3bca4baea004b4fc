"""``make reproduce``: every training run behind Tables 1–2 and ``results/FINDINGS.md``, then the tables.

Runs are skipped when their ``metrics.json`` already exists (use ``force`` to re-run), so an interrupted
reproduction continues where it stopped. Everything runs on the synthetic ``small`` benchmark with the
``cpu`` profile unless told otherwise.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from .config import get_config
from .results import METRIC_COLUMNS, VARIANT_ORDER, load_runs, mean_std, run_dir, summarize, table1, table2
from .utils import atomic_torch_save, atomic_write_json, atomic_write_text

GROUPS = ("table2", "metric", "cannot-link", "sampling", "eps", "temperature", "pipeline", "pretrained")
EPS_SWEEP = (0.4, 0.5, 0.7)
# Diagnostic only (defaults stay §3.1's τ = 0.01): is the ICS variants' weak learning an optimisation effect
# of the sharp softmax when training from random weights?
TEMPERATURE_PROBE = 0.05
# Diagnostic only: the paper starts from ImageNet, which these machines cannot download. As a stand-in, a
# `supervised` model trained on another instance of the benchmark (generator seed 1: other people, other
# cameras) initialises the `pretrained` group — does PIRID's stage 2 work once the initial features
# separate people? A person-ID-supervised prior is stronger than ImageNet's; read it as such.
SOURCE_GENERATOR_SEED = 1
SOURCE_WEIGHTS = "source-weights"  # placeholder in an experiment's overrides, resolved by source_weights()
TRANSFER_METRICS = "target_metrics.json"  # the source model on the target benchmark, before ICS training
# An oracle-chosen eps (diagnostic): the Jaccard eps with the best pairwise F against the hidden *training*
# identities on the final memory bank of pirid-1 (seed 0) from that start — notebook 3's last sweep. It asks
# whether the best prototypes DBSCAN can give at all close the gap to oracle-prototypes.
PRETRAINED_BEST_EPS = 0.35


@dataclass(frozen=True)
class Experiment:
    group: str
    variant: str
    seed: int
    tag: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)
    save_features: bool = False


def plan(seeds: int = 3) -> list[Experiment]:
    """The experiments, in the order they run (cheapest information first)."""
    default_metric = get_config("cpu").cluster_metric
    other_metric = "cosine" if default_metric == "jaccard" else "jaccard"
    runs: list[Experiment] = []
    for seed in range(seeds):
        for variant in ("pirid-1", "pirid-2", "pirid", "oracle-prototypes", "supervised"):
            runs.append(Experiment("table2", variant, seed,
                                   save_features=seed == 0 and variant in ("pirid-1", "pirid")))
    for seed in range(seeds):
        runs.append(Experiment("cannot-link", "pirid", seed, "cannot-link", {"cannot_link": True}))
        runs.append(Experiment("metric", "pirid", seed, other_metric, {"cluster_metric": other_metric}))
    for seed in range(seeds):
        runs += [Experiment("eps", "pirid", seed, f"eps{eps}", {"dbscan_eps": eps}) for eps in EPS_SWEEP]
        runs.append(Experiment("sampling", "pirid", seed, "proto-sampling", {"stage2_sampling": "prototype"}))
    for seed in range(seeds):  # diagnostics (FINDINGS §2-4), not settings of the method
        runs += [Experiment("temperature", variant, seed, f"tau{TEMPERATURE_PROBE}",
                            {"temperature": TEMPERATURE_PROBE}) for variant in ("pirid-1", "pirid")]
        # the GPU fast path's batched tensor augmentation, run on the CPU: same results as the DataLoader path?
        runs += [Experiment("pipeline", variant, seed, "tensor-pipeline", {"input_pipeline": "tensor"})
                 for variant in ("pirid", "supervised")]
        pretrained = {"pretrained": SOURCE_WEIGHTS}
        runs += [Experiment("pretrained", variant, seed, "source-pretrained", pretrained)
                 for variant in ("pirid-1", "pirid", "oracle-prototypes")]
        runs += [Experiment("pretrained", "pirid", seed, "source-pretrained+cannot-link",
                            {**pretrained, "cannot_link": True}),
                 Experiment("pretrained", "pirid", seed, f"source-pretrained+eps{PRETRAINED_BEST_EPS}",
                            {**pretrained, "dbscan_eps": PRETRAINED_BEST_EPS})]
    return runs


def source_weights(results_root: str | Path, dataset_name: str = "small", profile: str = "cpu") -> Path:
    """The stand-in for ImageNet weights (see ``SOURCE_GENERATOR_SEED``): trained on first use, then reused;
    also writes how the source model scores on the target benchmark as it is (``TRANSFER_METRICS``).

    The source run's config, log and metrics stay under ``results/pretrain/`` for provenance; the weights
    file (model state dict plus a note of its origin, which marks the run as not ImageNet-initialised)
    sits beside them and is not committed (regenerated in a few minutes)."""
    from . import datasets
    from .evaluate import evaluate_model
    from .model import PRETRAINING_KEY, build_model
    from .trainer import CHECKPOINT, Trainer

    source = datasets.load(dataset_name, seed=SOURCE_GENERATOR_SEED, verbose=False)
    out = run_dir(Path(results_root) / "pretrain", source.name, profile, "supervised", 0)
    weights = out / "weights.pt"
    if not weights.exists():
        Trainer(get_config(profile, variant="supervised", seed=0), source, out, progress=False,
                log=lambda _: None).fit()
        checkpoint = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=False)
        origin = f"supervised on {source.name} ({profile} profile, seed 0), run {out.as_posix()}"
        atomic_torch_save({"model": checkpoint["model"], PRETRAINING_KEY: origin}, weights)
        (out / CHECKPOINT).unlink()
    if not (out / TRANSFER_METRICS).exists():  # the floor of the group: the source model, before any ICS step
        cfg = get_config(profile, pretrained=str(weights))
        target = datasets.load(dataset_name, verbose=False)
        atomic_write_json(out / TRANSFER_METRICS, {"dataset": target.name, "profile": profile,
                                                   "metrics": evaluate_model(build_model(cfg), target, cfg)})
    return weights


def reproduce(results_root: str | Path = "results", dataset_name: str = "small", profile: str = "cpu",
              only: str | None = None, force: bool = False, seeds: int = 3, shard: str | None = None) -> Path:
    """Run the plan (or the groups in ``only``); ``shard="i/n"`` runs every n-th experiment from the i-th, so
    n processes can share the work (e.g. two single-threaded processes on a 2-core CPU)."""
    from . import datasets
    from .trainer import METRICS, Trainer

    results_root = Path(results_root)
    groups = GROUPS if not only else tuple(g.strip() for g in only.split(","))
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        raise ValueError(f"unknown experiment group(s) {unknown}; expected some of {GROUPS}")
    experiments = [e for e in plan(seeds) if e.group in groups]
    if shard:
        index, count = (int(v) for v in shard.split("/"))
        experiments = experiments[index::count]
    dataset = datasets.load(dataset_name, verbose=False)
    started = time.perf_counter()
    timings = []
    bar = tqdm(experiments, desc="reproduce", unit="run")
    for exp in bar:
        overrides = dict(exp.overrides)
        if overrides.get("pretrained") == SOURCE_WEIGHTS:
            overrides["pretrained"] = str(source_weights(results_root, dataset_name, profile))
        cfg = get_config(profile, variant=exp.variant, seed=exp.seed, **overrides)
        out = run_dir(results_root, dataset.name, profile, exp.variant, exp.seed, exp.tag)
        bar.set_postfix_str(f"{exp.variant}{'+' + exp.tag if exp.tag else ''} seed {exp.seed}")
        if (out / METRICS).exists() and not force:
            continue
        t0 = time.perf_counter()
        Trainer(cfg, dataset, out, progress=False, save_features=exp.save_features, log=lambda _: None).fit()
        timings.append({"run": str(out.relative_to(results_root)), "seconds": round(time.perf_counter() - t0, 1)})
    total = time.perf_counter() - started
    write_tables(results_root, dataset.name, profile)
    atomic_write_json(results_root / f"reproduce_timing{'_' + shard.replace('/', 'of') if shard else ''}.json",
                      {"total_seconds": round(total, 1), "runs_executed": timings, "groups": list(groups)})
    print(f"reproduce: {len(timings)} runs executed, {len(experiments) - len(timings)} reused, "
          f"{total / 60:.1f} min in all; tables in {results_root / 'tables'}")
    return results_root


def write_tables(results_root: str | Path, dataset: str, profile: str, out_dir: str | Path | None = None
                 ) -> dict[str, Any]:
    """Tables 1–2 (Markdown + LaTeX + CSV) and the per-setting summary, from the runs under ``results_root``,
    written to ``out_dir`` (default ``results_root/tables``)."""
    results_root = Path(results_root)
    runs = load_runs(results_root)
    runs = runs[(runs["dataset"] == dataset) & (runs["profile"] == profile)]
    out = Path(out_dir) if out_dir is not None else results_root / "tables"
    t1 = table1(runs, dataset_label=dataset)
    t2 = mean_std(table2(runs))
    by_tag = mean_std(summarize(runs[(runs["variant"] == "pirid") | (runs["tag"] != "")]))
    rank = {variant: i for i, variant in enumerate(VARIANT_ORDER)}
    by_tag = by_tag.sort_values(["variant", "tag"], key=lambda col: col.map(rank) if col.name == "variant" else col,
                                kind="stable").reset_index(drop=True)
    for name, table in (("table1", t1), ("table2", t2), ("pirid_settings", by_tag)):
        atomic_write_text(out / f"{name}.md", table.to_markdown(index=False, missingval="–") + "\n")
        atomic_write_text(out / f"{name}.tex", table.to_latex(index=False, na_rep="--"))
        atomic_write_text(out / f"{name}.csv", table.to_csv(index=False))
    return {"table1": t1, "table2": t2, "pirid_settings": by_tag, "metrics": METRIC_COLUMNS}
