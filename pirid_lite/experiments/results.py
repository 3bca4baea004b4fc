"""The ``results/`` tree: where runs live, how they are read back, and Tables 1–2 built from them.

A run writes ``results/runs/<dataset>/<profile>/<variant>[+<tag>]/seed<k>/`` (:mod:`pirid_lite.engine.runfiles`
reads and writes its files). Tables are *only* built from those files, next to the paper's published
numbers, so every measured figure traces back to a run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from .. import logkeys
from ..variants import ABLATION, INTRA_ONLY, METHOD, ORACLE, UPPER_BOUND, VARIANTS
from ..engine.runfiles import RunFiles

METRIC_COLUMNS = logkeys.RETRIEVAL

# Paper Table 1 (published; "-" in the paper = not reported → None).
PAPER_TABLE1 = {
    "MTML": {"Market1501": (85.3, None, 96.2, 65.2), "DukeMTMC-ReID": (71.7, None, 86.9, 50.7),
             "MSMT17": (44.1, None, 63.9, 18.6)},
    "PCSL": {"Market1501": (87.0, 94.8, 96.6, 69.4), "DukeMTMC-ReID": (71.7, 84.7, 88.2, 53.5),
             "MSMT17": (48.3, 62.8, 68.6, 20.7)},
    "ACAN": {"Market1501": (73.3, 87.6, 91.8, 50.6), "DukeMTMC-ReID": (67.6, 81.2, 85.2, 45.1),
             "MSMT17": (33.0, 48.0, 54.7, 12.6)},
    "MATE": {"Market1501": (88.7, None, 97.1, 71.1), "DukeMTMC-ReID": (76.9, None, 89.6, 56.6),
             "MSMT17": (46.0, None, 65.3, 19.1)},
    "PIRID": {"Market1501": (91.03, 96.7, 97.86, 79.57), "DukeMTMC-ReID": (79.85, 88.6, 91.38, 65.37),
              "MSMT17": (60.6, 73.76, 79.27, 34.85)},
}
# Paper Table 2 (published R1 / mAP).
PAPER_TABLE2 = {
    "PIRID-1": {"Market1501": (85.48, 69.73), "DukeMTMC-ReID": (77.11, 61.08), "MSMT17": (50.49, 25.56)},
    "PIRID-2": {"Market1501": (90.83, 79.18), "DukeMTMC-ReID": (79.35, 64.71), "MSMT17": (59.72, 34.37)},
    "PIRID": {"Market1501": (91.03, 79.57), "DukeMTMC-ReID": (79.85, 65.37), "MSMT17": (60.6, 34.85)},
}
VARIANT_ORDER = list(VARIANTS)  # Table 2's order, declared once in pirid_lite.variants


def epoch_logs(runs: pd.DataFrame) -> pd.DataFrame:
    """The per-epoch logs of the given runs (rows of :func:`load_runs`), stacked, each row tagged with its
    run's variant, tag and seed — e.g. to average prototype purity per epoch over seeds."""
    frames = [RunFiles(run.path).log().assign(variant=run.variant, tag=run.tag, seed=run.seed)
              for run in runs.itertuples()]
    if not frames:
        raise ValueError("epoch_logs: no runs given")
    return pd.concat(frames, ignore_index=True)


def start_label(provenance: dict) -> str:
    """What a run's network started from, as tables print it: "ImageNet (MobileNetV2)", "ImageNet
    (torchvision …)", "random init", or the checkpoint it was given."""
    source = str(provenance.get("weights_source", ""))
    if provenance.get("imagenet_weights") and source.startswith("torchvision"):
        return f"ImageNet ({source.removeprefix('torchvision ')})"
    return source or ("ImageNet" if provenance.get("imagenet_weights") else "random init")


def paired_differences(runs: pd.DataFrame, variant: str, baseline: str, metric: str = "mAP",
                       confidence: float = 0.95, pair_on: tuple[str, ...] = ("seed",)) -> dict:
    """Per-seed ``variant − baseline`` differences of ``metric`` over the seeds both have, with their mean and
    a Student-t confidence interval of the mean. A name is a variant (its untagged runs) or ``variant+tag``.
    ``pair_on=("dataset", "seed")`` pairs runs of several instances (keys of ``per_seed`` are then tuples)."""
    from scipy import stats

    wide = runs.assign(label=run_labels(runs)).pivot_table(index=list(pair_on), columns="label", values=metric)
    if variant not in wide or baseline not in wide:
        raise ValueError(f"paired_differences: need runs of both {variant!r} and {baseline!r}")
    diff = (wide[variant] - wide[baseline]).dropna()
    n = len(diff)
    if n < 2:
        raise ValueError(f"paired_differences: {n} paired seed(s); need at least 2 for an interval")
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * diff.std(ddof=1) / np.sqrt(n)
    return {"per_seed": diff.round(2).to_dict(), "mean": float(diff.mean()), "ci_low": float(diff.mean() - half),
            "ci_high": float(diff.mean() + half), "seeds": n, "wins": int((diff > 0).sum()),
            "confidence": confidence}


def run_labels(runs: pd.DataFrame) -> pd.Series:
    """``variant`` for untagged runs, ``variant+tag`` for tagged ones (the run folder's own name)."""
    tags = runs["tag"] if "tag" in runs else pd.Series("", index=runs.index)
    return runs["variant"].where(tags == "", runs["variant"] + "+" + tags)


# Table 2's paired comparisons (issue targets): the paper's ablation order and the oracle's room.
PAIRS = ((METHOD, INTRA_ONLY), (METHOD, ABLATION), (ABLATION, INTRA_ONLY), (ORACLE, METHOD))
# The ceiling row of Table 2 (a diagnostic): the oracle's true prototypes with stage-2 batches drawn by prototype,
# so that the triplet term sees cross-camera positives (reproduce.TAGGED_RUNS trains it).
CEILING = f"{ORACLE}+prototype-batches"


def paired_table(runs: pd.DataFrame, pairs=PAIRS, metric: str = "mAP") -> pd.DataFrame:
    """One row per pair (those with ≥ 2 paired seeds): per-seed differences, mean, 95 % interval, wins."""
    rows = []
    for a, b in pairs:
        try:
            d = paired_differences(runs, a, b, metric)
        except ValueError:
            continue
        rows.append({"pair": f"{a} − {b}", "per seed": ", ".join(f"{v:+.1f}" for v in d["per_seed"].values()),
                     "mean": round(d["mean"], 2), "95 % interval": f"[{d['ci_low']:+.1f}, {d['ci_high']:+.1f}]",
                     "ahead on": f"{d['wins']} of {d['seeds']}"})
    return pd.DataFrame(rows)


# The pooled generalisation comparison: every (instance, seed) pair of Table 2's instance and the generalisation ones.
POOLED_PAIRS = ((METHOD, INTRA_ONLY), (METHOD, f"{METHOD}+paper-reading"))


def pooled_comparison(runs: pd.DataFrame, pairs=POOLED_PAIRS, metric: str = "mAP") -> pd.DataFrame:
    """One row per pair: the ``a − b`` differences paired on (instance, seed) over every instance ``runs``
    holds, their mean and 95 % interval, how often ``a`` is ahead, and the mean difference per instance."""
    rows = []
    for a, b in pairs:
        d = paired_differences(runs, a, b, metric, pair_on=("dataset", "seed"))
        per_instance = pd.Series(d["per_seed"]).groupby(level=0).agg(["mean", "size"])
        rows.append({"pair": f"{a} − {b}", "pairs": d["seeds"], "mean": round(d["mean"], 2),
                     "95 % interval": f"[{d['ci_low']:+.1f}, {d['ci_high']:+.1f}]",
                     "ahead on": f"{d['wins']} of {d['seeds']}",
                     "per instance (mean, pairs)": "; ".join(f"{name}: {row['mean']:+.1f} ({row['size']:.0f})"
                                                             for name, row in per_instance.iterrows())})
    return pd.DataFrame(rows)


def prototype_quality_per_epoch(runs: pd.DataFrame, variant: str = METHOD, tag: str = "") -> pd.DataFrame:
    """Mean over seeds, per stage-2 epoch, of what the prototypes show without the truth (prototypes holding
    two IDs of one camera, the largest one) and against it (logged only), and the memory's cross-camera
    nearest-neighbour accuracy."""
    selected = runs[(runs["variant"] == variant) & (runs["tag"] == tag)]
    logs = epoch_logs(selected)
    logs = logs[logs[logkeys.STAGE] == 2]
    columns = [c for c in (logkeys.NUM_PROTOTYPES, *logkeys.TRUTH_FREE, logkeys.NOISE_SHARE, logkeys.PURITY,
                           logkeys.PAIRWISE_F, logkeys.MEMORY_NN_ACCURACY) if c in logs]
    table = logs.groupby(logkeys.EPOCH)[columns].mean().round(3)
    table.insert(0, "seeds", logs.groupby(logkeys.EPOCH).size())
    return table.reset_index()


def late_stage2_quality(runs: pd.DataFrame, variant: str = METHOD, tag: str = "") -> dict[str, float]:
    """Pairwise F, purity and the most prototypes with two IDs of one camera, over the second half of stage 2
    (the mean over seeds of :func:`prototype_quality_per_epoch`'s rows there)."""
    table = prototype_quality_per_epoch(runs, variant, tag)
    late = table.iloc[len(table) // 2:]
    return {"F": float(late[logkeys.PAIRWISE_F].mean()), "purity": float(late[logkeys.PURITY].mean()),
            "same_camera_max": float(late[logkeys.SAME_CAMERA_PROTOTYPES].max())
            if logkeys.SAME_CAMERA_PROTOTYPES in late else float("nan")}


def generalisation_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per dataset (instance): mAP of each variant (mean over its seeds, seed count in brackets)
    and the per-seed gains of the method over pirid-1 and over the paper's reading."""
    rows = []
    for dataset, part in runs.groupby("dataset"):
        labelled = part.assign(label=run_labels(part))
        row = {"instance": dataset}
        for label, runs_of in labelled.groupby("label", sort=False):
            row[label] = f"{runs_of['mAP'].mean():.1f} ({len(runs_of)})"
        for baseline in (INTRA_ONLY, f"{METHOD}+paper-reading"):
            try:
                d = paired_differences(part, METHOD, baseline)
            except ValueError:
                continue
            row[f"{METHOD} − {baseline} per seed"] = ", ".join(f"{v:+.1f}" for v in d["per_seed"].values())
        rows.append(row)
    return pd.DataFrame(rows)


def claims(runs: pd.DataFrame, paper_reading: str = f"{METHOD}+paper-reading") -> pd.DataFrame:
    """The paper's claims and the association's targets as measurements on Table 2's runs: what each target
    asks, the measured value, and whether it holds. The oracle's own ratio to ``supervised`` stands beside
    PIRID's, so a reader sees which part of the gap is the prototypes."""
    mean = runs[runs["tag"] == ""].groupby("variant")["mAP"].mean()
    method, low, ablation, oracle, top = (mean[v] for v in (METHOD, INTRA_ONLY, ABLATION, ORACLE, UPPER_BOUND))
    gain = paired_differences(runs, METHOD, INTRA_ONLY)
    share = (method - low) / (oracle - low)
    rows = [(f"{METHOD} − {INTRA_ONLY}: 95 % interval above 0", f"[{gain['ci_low']:+.1f}, {gain['ci_high']:+.1f}]",
             gain["ci_low"] > 0),
            (f"{METHOD} > {INTRA_ONLY} on every seed", f"{gain['wins']} of {gain['seeds']}", gain["wins"] == gain["seeds"]),
            (f"{METHOD} > {ABLATION} > {INTRA_ONLY} (means)", f"{method:.1f} / {ablation:.1f} / {low:.1f}",
             method > ablation > low),
            (f"{METHOD} takes ≥ 85 % of the oracle's room, ({METHOD} − {INTRA_ONLY}) / (oracle − {INTRA_ONLY})",
             f"{share:.2f}", share >= 0.85),
            (f"{METHOD} / {UPPER_BOUND} ≥ 0.84 (oracle / {UPPER_BOUND} = {oracle / top:.3f})", f"{method / top:.3f}",
             method / top >= 0.84)]
    wide = runs.assign(label=run_labels(runs)).pivot_table(index="seed", columns="label", values="mAP")
    if CEILING in wide and wide[CEILING].notna().sum() >= 2:  # on the seeds the ceiling row has (may be < 5)
        paired = wide[[METHOD, INTRA_ONLY, CEILING, UPPER_BOUND]].dropna().mean()
        room = (paired[METHOD] - paired[INTRA_ONLY]) / (paired[CEILING] - paired[INTRA_ONLY])
        rows.append((f"{METHOD} takes ≥ 85 % of the ceiling's room, ({METHOD} − {INTRA_ONLY}) / ({CEILING} − "
                     f"{INTRA_ONLY}), on the ceiling's {len(wide[CEILING].dropna())} seed(s) (ceiling / "
                     f"{UPPER_BOUND} = {paired[CEILING] / paired[UPPER_BOUND]:.3f})", f"{room:.2f}", room >= 0.85))
    if paper_reading in set(run_labels(runs)):
        vs_paper = paired_differences(runs, METHOD, paper_reading)
        rows.append((f"{METHOD} − the paper's reading: 95 % interval above 0",
                     f"[{vs_paper['ci_low']:+.1f}, {vs_paper['ci_high']:+.1f}]", vs_paper["ci_low"] > 0))
    if "path" in runs:  # the per-epoch logs are there: the prototypes' own targets
        rows += prototype_claims(late_stage2_quality(runs))
    ratio = low / top
    rows.append((f"{INTRA_ONLY} / {UPPER_BOUND} within 0.65–0.85", f"{ratio:.2f}", 0.65 <= ratio <= 0.85))
    return pd.DataFrame(rows, columns=["target", "measured", "holds"])


def prototype_claims(quality: dict[str, float]) -> list[tuple[str, str, bool]]:
    """The association's targets for the prototypes of the second half of stage 2 (:func:`late_stage2_quality`)."""
    return [("prototypes over the second half of stage 2: F ≥ 0.75 and purity ≥ 0.85",
              f"F {quality['F']:.2f}, purity {quality['purity']:.2f}", quality["F"] >= 0.75 and quality["purity"] >= 0.85),
             ("no prototype holds two IDs of one camera (second half of stage 2)",
              f"at most {quality['same_camera_max']:.1f} per epoch (mean over seeds)", quality["same_camera_max"] == 0)]


def load_runs(results_root: str | Path = "results") -> pd.DataFrame:
    """One row per finished run (a ``metrics.json``) under ``results_root/runs``."""
    rows = []
    for path in sorted(Path(results_root).glob("runs/*/*/*/seed*/metrics.json")):
        record = RunFiles(path.parent).metrics()
        config, provenance = record["config"], record["provenance"]
        variant_dir = path.parent.parent.name
        rows.append({
            "dataset": provenance["dataset"], "profile": config["profile"], "variant": config["variant"],
            "tag": variant_dir.partition("+")[2], "seed": config["seed"], **record["metrics"],
            "device": provenance["device"], "imagenet_weights": provenance["imagenet_weights"],
            "start": start_label(provenance),
            "git_commit": provenance["git_commit"], "wall_seconds": record.get("wall_seconds"),
            "final_purity": (record.get("final_epoch") or {}).get(logkeys.PURITY),
            "final_noise_share": (record.get("final_epoch") or {}).get(logkeys.NOISE_SHARE),
            "path": str(path.parent),
        })
    columns = ["dataset", "profile", "variant", "tag", "seed", *METRIC_COLUMNS, "device", "imagenet_weights",
               "start", "git_commit", "wall_seconds", "final_purity", "final_noise_share", "path"]
    return pd.DataFrame(rows, columns=columns)


ARCHIVE_ROOT = "results/archive"


def archive_table(archive_root: str | Path = ARCHIVE_ROOT) -> pd.DataFrame:
    """What each archived version measured: one row per version and run (variant[+tag]) of its ``runs/`` tree,
    mAP and R1 as mean ± std over its seeds, and the commit(s) that made the runs (from their provenance). The
    archive keeps these numbers, not the runs' arrays (results/archive/README.md is this table)."""
    frames = []
    for version in sorted(p for p in Path(archive_root).iterdir() if (p / "runs").is_dir()):
        runs = load_runs(version)
        runs["run"] = run_labels(runs)
        runs["commit"] = runs["git_commit"].str[:7]
        metrics = ("mAP", "R1")
        table = mean_std(summarize(runs, by=("dataset", "profile", "run"), metrics=metrics), metrics=metrics)
        table["commit"] = list(runs.groupby(["dataset", "profile", "run"], sort=False)["commit"]
                               .agg(lambda c: ", ".join(sorted(set(c)))))
        frames.append(table.assign(version=version.name))
    columns = ["version", "dataset", "profile", "run", "seeds", "mAP", "R1", "commit"]
    return pd.concat(frames, ignore_index=True)[columns]


def saved_features_metrics(run_path: str | Path, stage: str, num_query: int) -> dict[str, float]:
    """R1/R5/R10/mAP (%) of the test features a run saved with ``save_features`` (``features_<stage>.npz``,
    stage ``initial`` = the untrained network, ``final``; query rows first, then gallery)."""
    from ..evaluation.evaluate import retrieval_metrics

    f, pids, camids = RunFiles(run_path).features(stage)
    if not 0 < num_query < len(pids):
        raise ValueError(f"num_query={num_query} must split the {len(pids)} saved {stage} rows of {run_path}")
    q, g = slice(0, num_query), slice(num_query, None)
    return retrieval_metrics(f[q], pids[q], camids[q], f[g], pids[g], camids[g])


def summarize(runs: pd.DataFrame, by: Iterable[str] = ("dataset", "profile", "variant", "tag"),
              metrics: Iterable[str] = METRIC_COLUMNS) -> pd.DataFrame:
    """Mean, std and number of seeds of each metric per group."""
    by, metrics = list(by), list(metrics)
    grouped = runs.groupby(by, sort=False)[metrics]
    table = grouped.agg(["mean", "std"])
    table.columns = [f"{metric}_{stat}" for metric, stat in table.columns]
    table["seeds"] = grouped.size()
    return table.reset_index()


def mean_std(table: pd.DataFrame, metrics: Iterable[str] = METRIC_COLUMNS, digits: int = 1) -> pd.DataFrame:
    """Format ``summarize`` output as "mean ± std" strings."""
    out = table.drop(columns=[c for c in table.columns if c.endswith(("_mean", "_std"))]).copy()
    for metric in metrics:
        mean, std = table[f"{metric}_mean"], table[f"{metric}_std"].fillna(0.0)
        out[metric] = [f"{m:.{digits}f} ± {s:.{digits}f}" for m, s in zip(mean, std)]
    return out


def table1(runs: pd.DataFrame, dataset_label: str) -> pd.DataFrame:
    """Paper Table 1 (published rows) beside this project's measured PIRID rows.

    Each measured row names the dataset, profile and number of seeds it was measured on.
    """
    rows = []
    for method, per_dataset in PAPER_TABLE1.items():
        for dataset, values in per_dataset.items():
            rows.append({"method": method, "source": "paper (published)", "dataset": dataset,
                         **dict(zip(METRIC_COLUMNS, values))})
    measured = runs[(runs["variant"] == METHOD) & (runs["tag"] == "")]
    for (dataset, profile), group in measured.groupby(["dataset", "profile"], sort=False):
        means = group[list(METRIC_COLUMNS)].mean()
        rows.append({"method": "PIRID", "source": f"measured ({profile} profile, {len(group)} seeds)",
                     "dataset": f"{dataset_label}" if dataset_label else dataset, **means.round(2).to_dict()})
    return pd.DataFrame(rows)


def table2(runs: pd.DataFrame, dataset: str | None = None, profile: str | None = None) -> pd.DataFrame:
    """Table 2 on measured runs: the ablations and the diagnostics, mean ± std over seeds (untagged runs, and
    the :data:`CEILING` row after the oracle's where it was run)."""
    selected = runs[(runs["tag"] == "") | (run_labels(runs) == CEILING)]
    if dataset is not None:
        selected = selected[selected["dataset"] == dataset]
    if profile is not None:
        selected = selected[selected["profile"] == profile]
    table = summarize(selected)
    order = {variant: i for i, variant in enumerate(VARIANT_ORDER)}
    return table.sort_values(by=["variant", "tag"], key=lambda s: s.map(order) if s.name == "variant" else s,
                             kind="stable").reset_index(drop=True)


def paper_table2() -> pd.DataFrame:
    rows = [{"method": method, "dataset": dataset, "R1": values[0], "mAP": values[1]}
            for method, per_dataset in PAPER_TABLE2.items() for dataset, values in per_dataset.items()]
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- Tables 1–2 on several datasets
# The paper's column of each real dataset (Tables 1–2); a synthetic preset has none and keeps its own name.
PAPER_COLUMNS = {"market1501": "Market1501", "dukemtmc": "DukeMTMC-ReID", "msmt17": "MSMT17"}
# A synthetic preset built to a real dataset's scale says so in its column (never in the real dataset's column).
SCALE_COLUMNS = {"synthetic-market": "synthetic, Market-1501 scale"}
TABLE2_VARIANTS = (INTRA_ONLY, ABLATION, METHOD)  # the rows of the paper's Table 2: PIRID-1, PIRID-2, PIRID
TABLE2_METRICS = ("R1", "mAP")                    # its columns per dataset, the order of PAPER_TABLE2's pairs


def dataset_column(dataset: str) -> str:
    """The column of the paper's tables a dataset's runs go in: ``market1501`` → ``Market1501``; a synthetic
    preset gets a column the paper does not have: ``synthetic-market`` → "synthetic, Market-1501 scale"
    (:data:`SCALE_COLUMNS`), any other keeps its name (``synthetic-small``)."""
    return PAPER_COLUMNS.get(dataset, SCALE_COLUMNS.get(dataset, dataset))


def _measured_label(group: pd.DataFrame) -> str:
    """What a measured row was measured with: dataset, profile, seeds, device and start."""
    joined = lambda column: ", ".join(sorted(set(group[column].astype(str))))
    seeds = len(group)
    return (f"measured: {joined('dataset')}, {joined('profile')} profile, {seeds} seed{'s' * (seeds != 1)}, "
            f"{joined('device')}, {joined('start')}")


def table1_on_datasets(runs: pd.DataFrame, datasets: Iterable[str]) -> pd.DataFrame:
    """Table 1 as the paper lays it out (a row per method, R1/R5/R10/mAP per dataset column): the published
    rows, then one measured PIRID row per dataset in that dataset's column (mean over its seeds), labelled
    by :func:`_measured_label`. A dataset the paper lacks gets its own columns, empty in the published rows."""
    columns = list(dict.fromkeys([*PAPER_TABLE1[METHOD.upper()], *map(dataset_column, datasets)]))
    cells = lambda column, values: {f"{column} {metric}": value for metric, value in zip(METRIC_COLUMNS, values)}
    rows = [{"method": method, "source": "paper (published)",
             **{key: value for column, values in per_dataset.items() for key, value in cells(column, values).items()}}
            for method, per_dataset in PAPER_TABLE1.items()]
    measured = runs[(runs["variant"] == METHOD) & (runs["tag"] == "")]
    for dataset in datasets:
        group = measured[measured["dataset"] == dataset]
        if len(group):
            means = group[list(METRIC_COLUMNS)].mean().round(2)
            rows.append({"method": METHOD.upper(), "source": _measured_label(group),
                         **cells(dataset_column(dataset), means)})
    header = ["method", "source", *(f"{column} {metric}" for column in columns for metric in METRIC_COLUMNS)]
    return pd.DataFrame(rows).reindex(columns=header)


def table2_on_datasets(runs: pd.DataFrame, datasets: Iterable[str]) -> pd.DataFrame:
    """Table 2 per dataset: PIRID-1, PIRID-2 and PIRID measured (mean and std over seeds), the paper's value
    beside each (empty for a dataset the paper lacks) and the difference measured − paper per cell."""
    rows = []
    for dataset in datasets:
        for variant in TABLE2_VARIANTS:
            group = runs[(runs["dataset"] == dataset) & (runs["variant"] == variant) & (runs["tag"] == "")]
            paper = PAPER_TABLE2[variant.upper()].get(dataset_column(dataset), (np.nan,) * len(TABLE2_METRICS))
            row = {"dataset": dataset_column(dataset), "method": variant.upper(), "seeds": len(group),
                   "start": ", ".join(sorted(set(group["start"]))) or np.nan}
            for metric, published in zip(TABLE2_METRICS, paper):
                mean = group[metric].mean()
                row.update({metric: round(mean, 2), f"{metric} std": round(group[metric].std(), 2),
                            f"{metric} paper": published, f"{metric} Δ": round(mean - published, 2)})
            rows.append(row)
    return pd.DataFrame(rows)
