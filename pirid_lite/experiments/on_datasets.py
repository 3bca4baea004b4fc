"""Tables 1–2 on any datasets: ``python -m pirid_lite reproduce --data NAME[=ROOT] …``.

Each ``--data`` entry is a real dataset with its root (``market1501=/data/Market-1501-v15.09.15``; the names
:func:`pirid_lite.datasets.load` accepts) or a synthetic preset by name alone (``small``). Every entry is
checked, and every real dataset read, before anything trains or is written. Per dataset the paper's
variants (PIRID-1, PIRID-2, PIRID; Table 2) train through :func:`pirid_lite.experiments.reproduce.plan`
and :func:`pirid_lite.experiments.runner.run_experiments` (finished runs reused, one line per run, shards),
then :func:`pirid_lite.experiments.results.table1_on_datasets` and ``table2_on_datasets`` put them beside
the paper's numbers under ``<out>/tables/``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import UserError
from .reproduce import TAGGED_RUNS, plan as reproduce_plan, write_table_files
from .results import TABLE2_VARIANTS, load_runs, table1_on_datasets, table2_on_datasets
from .runner import Experiment, run_experiments, select_shard

TABLE_NAMES = ("table1_datasets", "table2_datasets")  # <out>/tables/<name>.{md,tex,csv}


@dataclass(frozen=True)
class DataSpec:
    """One ``--data`` entry: the dataset's registered name and its root (None for a synthetic preset)."""

    name: str
    root: str | None
    text: str  # as typed, for messages

    @property
    def synthetic(self) -> bool:
        return self.root is None


def parse_data_spec(text: str) -> DataSpec:
    """``NAME=ROOT`` (a real dataset) or ``NAME`` (a synthetic preset); :class:`UserError` otherwise."""
    from .. import datasets

    name, sep, root = (part.strip() for part in text.partition("="))
    if not name or (sep and not root):
        missing = "no dataset name before '='" if not name else "no root after '='"
        raise UserError(f"--data {text!r}: {missing}; expected NAME=ROOT for a real dataset (e.g. "
                        f"market1501=/data/Market-1501) or a synthetic preset's name alone "
                        f"({', '.join(datasets.SYNTHETIC_PRESET_NAMES)})")
    key = _in_context(text, datasets.canonical_name, name)
    synthetic = key in datasets.SYNTHETIC_PRESET_NAMES
    if synthetic and root:
        raise UserError(f"--data {text!r}: {name} is a synthetic preset and takes no root (write --data {name})")
    if not synthetic and not root:
        raise UserError(f"--data {text!r}: {name} is a real dataset; give its folder as --data {name}=ROOT")
    return DataSpec(key, root or None, text)


def parse_data_specs(texts: Sequence[str]) -> list[DataSpec]:
    """Every ``--data`` entry parsed, each dataset at most once (aliases count as the same dataset)."""
    specs = [parse_data_spec(text) for text in texts]
    seen: dict[str, DataSpec] = {}
    for spec in specs:
        if spec.name in seen:
            raise UserError(f"--data {spec.text!r}: dataset {spec.name} is already given "
                            f"(--data {seen[spec.name].text!r}); give each dataset once")
        seen[spec.name] = spec
    return specs


def load_datasets(specs: Sequence[DataSpec]) -> dict[str, Any]:
    """The datasets by name (their ``dataset.name``), in the order given; the real ones are read first, so
    a bad root stops the command before a synthetic preset is generated (the loaders' own checks)."""
    from .. import datasets

    loaded = {spec: _in_context(spec.text, datasets.load, spec.name, root=spec.root)
              for spec in sorted(specs, key=lambda s: s.synthetic)}
    return {loaded[spec].name: loaded[spec] for spec in specs}


def _in_context(text: str, function, *args, **kwargs):
    """``function(*args, **kwargs)``; a :class:`UserError` it raises comes back on one line that starts with
    the ``--data`` entry (a loader's expected folder tree included, its lines joined)."""
    try:
        return function(*args, **kwargs)
    except UserError as error:
        raise UserError(f"--data {text!r}: " + " ".join(str(error).split())) from error


RUN_CHOICES = (*TABLE2_VARIANTS, *(f"{variant}+{tag}" for tag, (variant, _) in TAGGED_RUNS.items()))


def parse_runs(text: str | None) -> tuple[str, ...]:
    """``--runs pirid-1,pirid,pirid+paper-reading``: Table 2's variants and tagged runs
    (:data:`pirid_lite.experiments.reproduce.TAGGED_RUNS`) by label; None or empty = Table 2's variants."""
    labels = tuple(label.strip() for label in (text or "").split(",") if label.strip()) or TABLE2_VARIANTS
    unknown = [label for label in labels if label not in RUN_CHOICES]
    if unknown:
        raise UserError(f"--runs: unknown run label(s) {', '.join(unknown)}; expected some of {', '.join(RUN_CHOICES)}")
    return labels


def plan(dataset_names: Sequence[str], results_root: str | Path, profile: str, seeds: int | None = None,
         overrides: Mapping[str, Any] | None = None, runs: Sequence[str] = TABLE2_VARIANTS) -> list[Experiment]:
    """The ``runs`` (default: Table 2's variants) on every dataset, dataset after dataset (each one's stage-1
    donors first, as :func:`pirid_lite.experiments.reproduce.plan` orders them); no test features are saved."""
    variants = [label for label in runs if "+" not in label]
    tags = [label.partition("+")[2] for label in runs if "+" in label]
    tagged = {tag: TAGGED_RUNS[tag] for tag in tags}
    return [replace(exp, dataset=name) for name in dataset_names
            for exp in reproduce_plan(seeds, results_root, name, profile, variants=variants, tagged=tagged,
                                      overrides=overrides, save_features=False)]


def write_tables(results_root: str | Path, experiments: Sequence[Experiment], dataset_names: Sequence[str],
                 out: str | Path) -> list[Path]:
    """Tables 1–2 from the finished runs of ``experiments`` (read back from their ``metrics.json`` under
    ``results_root``), written to ``out`` as Markdown, LaTeX and CSV; returns the Markdown files."""
    runs = load_runs(results_root)
    runs = runs[runs["path"].isin({str(exp.out) for exp in experiments})]
    tables = (table1_on_datasets(runs, dataset_names), table2_on_datasets(runs, dataset_names))
    return [write_table_files(out, name, table, digits=2) for name, table in zip(TABLE_NAMES, tables)]


def reproduce_on(datasets: Mapping[str, Any], results_root: str | Path, profile: str, *, seeds: int | None = None,
                 shard: str | None = None, force: bool = False, overrides: Mapping[str, Any] | None = None,
                 runs: Sequence[str] = TABLE2_VARIANTS) -> list[Path]:
    """Train this shard's runs of :func:`plan` not finished yet, then write Tables 1–2 of every finished
    run of the plan to ``<results_root>/tables``."""
    everything = plan(list(datasets), results_root, profile, seeds, overrides, runs)
    mine = select_shard(everything, shard)
    timings = run_experiments(mine, datasets, force=force)
    written = write_tables(results_root, everything, list(datasets), Path(results_root) / "tables")
    print(f"reproduce: {len(timings)} runs executed, {len(mine) - len(timings)} reused; tables: "
          + ", ".join(str(path) for path in written))
    return written
