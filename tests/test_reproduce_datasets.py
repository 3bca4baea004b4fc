"""``python -m pirid_lite reproduce --data NAME[=ROOT] …``: Tables 1–2 on any datasets (issue 27 item 1).

One ``test``-profile command (ResNet-18 from random weights, backbone frozen, 16×8 images, 2 epochs of one
step, one seed) trains PIRID-1, PIRID-2 and PIRID on generated Market-1501, DukeMTMC-reID and MSMT17 trees;
every cell of both tables is checked against the runs' ``metrics.json``, read here without the package's
readers. Bad input: one ``error:`` line, exit status 2, nothing under ``--out``.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from pirid_lite import cli
from pirid_lite.experiments import on_datasets, results
from pirid_lite.experiments.runner import select_shard

from conftest import write_market_tree, write_msmt_tree

TINY = ["--profile", "test", "--seeds", "1", "--device", "cpu",
        *(arg for setting in ("epochs=2", "iters_per_epoch=1", "frozen_blocks=5", "height=16", "width=8", "pad=1")
          for arg in ("--set", setting))]
PAPER_COLUMN = {"market1501": "Market1501", "dukemtmc": "DukeMTMC-ReID", "msmt17": "MSMT17"}
VARIANT_ROW = {"pirid-1": "PIRID-1", "pirid-2": "PIRID-2", "pirid": "PIRID"}
# MSMT17's tree gets 9 more training IDs, so that every camera index is below the number of IDs (Eq. 3's
# per-camera count assumes a camera owns at least one ID) and a batch finds 8 IDs (P = 8).
MSMT_EXTRA = [(10 + k, cam, 2) for k, cam in enumerate((3, 4, 5, 6, 8, 9, 10, 11, 12))]


def main(*argv: str) -> tuple[int, str]:
    """``cli.main(argv)`` in this process → (exit status, stdout)."""
    with contextlib.redirect_stdout(io.StringIO()) as out:
        status = cli.main(list(argv))
    return status, out.getvalue()


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("data")
    write_market_tree(base / "Market-1501-v15.09.15", "market", bad_name=False)
    write_market_tree(base / "DukeMTMC-reID", "duke", bad_name=False)
    write_msmt_tree(base / "MSMT17_V1", "V1", bad_name=False, extra_train=MSMT_EXTRA)
    return {"market1501": base / "Market-1501-v15.09.15", "dukemtmc": base / "DukeMTMC-reID",
            "msmt17": base / "MSMT17_V1"}


def data_args(trees: dict[str, Path]) -> list[str]:
    return [arg for name, root in trees.items() for arg in ("--data", f"{name}={root}")]


@pytest.fixture(scope="module")
def reproduced(trees, tmp_path_factory) -> tuple[Path, str, list[str]]:
    """The command over the three trees: (out folder, its stdout, its arguments)."""
    out = tmp_path_factory.mktemp("reproduce") / "out"
    argv = ["reproduce", *data_args(trees), "--out", str(out), *TINY]
    status, stdout = main(*argv)
    assert status == 0, stdout
    return out, stdout, argv


def table_file(out: Path, name: str, suffix: str) -> Path:
    return out / "tables" / f"{name}.{suffix}"


def metrics_files(out: Path) -> dict[tuple[str, str], dict]:
    """(dataset, variant) → the run's metrics.json, found by walking <out>/runs."""
    records = [json.loads(path.read_text()) for path in out.glob("runs/**/metrics.json")]
    return {(r["provenance"]["dataset"], r["config"]["variant"]): r for r in records}


def test_each_run_prints_a_line_with_the_time_left(reproduced):
    out, stdout, _ = reproduced
    lines = [line for line in stdout.splitlines() if line.startswith("run ")]
    assert len(lines) == 9 and all(" of 9: " in line and "min left)" in line for line in lines)
    assert [line.split(": ")[1].split("  mAP")[0] for line in lines[:3]] == [
        "market1501 pirid seed 0", "market1501 pirid-1 seed 0", "market1501 pirid-2 seed 0"]
    assert stdout.splitlines()[-1].startswith("reproduce: 9 runs executed, 0 reused; tables: ")


def test_table1_cells_are_the_papers_and_the_runs(reproduced):
    out, _, _ = reproduced
    runs = metrics_files(out)
    table = pd.read_csv(table_file(out, "table1_datasets", "csv"))
    published = table[table["source"] == "paper (published)"].set_index("method")
    for method, per_dataset in results.PAPER_TABLE1.items():
        for column, values in per_dataset.items():
            for metric, value in zip(("R1", "R5", "R10", "mAP"), values):
                cell = published.loc[method, f"{column} {metric}"]
                assert (math.isnan(cell) if value is None else cell == value), (method, column, metric)
    measured = table[table["source"] != "paper (published)"]
    assert list(measured["method"]) == ["PIRID"] * 3
    for (_, row), dataset in zip(measured.iterrows(), PAPER_COLUMN):
        record = runs[(dataset, "pirid")]
        device = record["provenance"]["device"]
        assert row["source"] == f"measured: {dataset}, test profile, 1 seed, {device}, random init"
        for column in PAPER_COLUMN.values():
            for metric in ("R1", "R5", "R10", "mAP"):
                expected = round(record["metrics"][metric], 2) if column == PAPER_COLUMN[dataset] else None
                cell = row[f"{column} {metric}"]
                assert (math.isnan(cell) if expected is None else cell == pytest.approx(expected)), (dataset, column)


def test_table2_cells_are_the_runs_beside_the_papers(reproduced):
    out, _, _ = reproduced
    runs = metrics_files(out)
    table = pd.read_csv(table_file(out, "table2_datasets", "csv"))
    assert len(table) == 9
    for _, row in table.iterrows():
        dataset = next(name for name, column in PAPER_COLUMN.items() if column == row["dataset"])
        variant = next(name for name, label in VARIANT_ROW.items() if label == row["method"])
        measured = runs[(dataset, variant)]["metrics"]
        paper = dict(zip(("R1", "mAP"), results.PAPER_TABLE2[row["method"]][row["dataset"]]))
        assert row["seeds"] == 1 and row["start"] == "random init"
        for metric in ("R1", "mAP"):
            assert row[metric] == pytest.approx(round(measured[metric], 2))
            assert math.isnan(row[f"{metric} std"])  # one seed
            assert row[f"{metric} paper"] == paper[metric]
            assert row[f"{metric} Δ"] == pytest.approx(round(measured[metric] - paper[metric], 2))


def test_tables_are_written_as_markdown_latex_and_csv(reproduced):
    out, _, _ = reproduced
    for name in ("table1_datasets", "table2_datasets"):
        assert {p.suffix for p in (out / "tables").glob(f"{name}.*")} == {".md", ".tex", ".csv"}
    markdown = table_file(out, "table1_datasets", "md").read_text()
    assert "| MATE     | paper (published)" in markdown and " – " in markdown and "nan" not in markdown
    assert "\\begin{tabular}" in table_file(out, "table2_datasets", "tex").read_text()


def test_a_second_command_reuses_every_run_and_writes_the_same_tables(reproduced):
    out, _, argv = reproduced
    before = {p.name: p.read_bytes() for p in (out / "tables").iterdir()}
    status, stdout = main(*argv)
    assert status == 0 and "9 of 9 runs already finished (reused; --force re-runs them)" in stdout
    assert {p.name: p.read_bytes() for p in (out / "tables").iterdir()} == before


def test_shards_take_every_run_of_every_dataset_exactly_once(tmp_path):
    runs = on_datasets.plan(["market1501", "dukemtmc", "msmt17"], tmp_path, "paper", seeds=3)
    assert len(runs) == 3 * 3 * 3 and len({r.out for r in runs}) == len(runs)
    for count in (1, 2, 4, 5):
        shards = [select_shard(runs, f"{i}/{count}") for i in range(count)]
        taken = [r.out for shard in shards for r in shard]
        assert sorted(taken) == sorted(r.out for r in runs)  # each run once, in one shard


def test_a_synthetic_preset_has_its_own_columns_with_no_paper_values():
    assert on_datasets.parse_data_spec("synthetic-market") == on_datasets.DataSpec("market", None, "synthetic-market")
    runs = pd.DataFrame([{"dataset": "synthetic-market", "profile": "cpu", "variant": variant, "tag": "", "seed": 0,
                          "R1": 50.0, "R5": 60.0, "R10": 70.0, "mAP": 40.0, "device": "cpu",
                          "start": "ImageNet (MobileNetV2)"} for variant in VARIANT_ROW])
    t1 = results.table1_on_datasets(runs, ["synthetic-market"])
    column = "synthetic, Market-1501 scale mAP"
    assert t1[column].iloc[:-1].isna().all() and t1[column].iloc[-1] == 40.0
    assert t1["source"].iloc[-1] == "measured: synthetic-market, cpu profile, 1 seed, cpu, ImageNet (MobileNetV2)"
    t2 = results.table2_on_datasets(runs, ["synthetic-market"])
    assert list(t2["dataset"]) == ["synthetic, Market-1501 scale"] * 3 and list(t2["R1"]) == [50.0] * 3
    assert t2[["R1 paper", "R1 Δ", "mAP paper", "mAP Δ"]].isna().all().all()


# ------------------------------------------------------------------ bad input: one error line, nothing written
def assert_refused(capsys, out: Path, *argv: str) -> str:
    status = cli.main(["reproduce", "--out", str(out), *argv])
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert not out.exists()
    return lines[0]


@pytest.mark.parametrize("data, expected", [
    ("foo=/x", "error: --data 'foo=/x': unknown dataset 'foo'; expected one of market1501, dukemtmc, msmt17, "
               "tiny, small, market (or synthetic-tiny/-small/-market)"),
    ("=x", "error: --data '=x': no dataset name before '='"),
    ("market1501=", "error: --data 'market1501=': no root after '='"),
    ("small=/some/root", "error: --data 'small=/some/root': small is a synthetic preset and takes no root"),
    ("market1501", "error: --data 'market1501': market1501 is a real dataset; give its folder as --data "
                   "market1501=ROOT"),
])
def test_a_malformed_data_entry_is_refused(capsys, tmp_path, data, expected):
    assert assert_refused(capsys, tmp_path / "out", "--data", data).startswith(expected)


def test_a_missing_empty_or_wrong_root_is_refused_before_anything_trains(capsys, tmp_path, trees):
    (tmp_path / "empty").mkdir()
    market = f"market1501={trees['market1501']}"
    for data, expected in [
            (f"dukemtmc={tmp_path / 'absent'}", f"dukemtmc: root folder {tmp_path / 'absent'} does not exist."),
            (f"dukemtmc={tmp_path / 'empty'}", f"dukemtmc: {tmp_path / 'empty'} does not have the expected layout"),
            (f"msmt17={trees['market1501']}", f"msmt17: {trees['market1501']} does not have the expected layout")]:
        line = assert_refused(capsys, tmp_path / "out", "--data", market, "--data", data, *TINY)
        assert line.startswith(f"error: --data {data!r}: {expected}") and "Expected layout: <root>/" in line


def test_the_same_dataset_twice_is_refused(capsys, tmp_path, trees):
    line = assert_refused(capsys, tmp_path / "out", "--data", f"market1501={trees['market1501']}",
                          "--data", f"Market-1501={trees['market1501']}")
    assert line == (f"error: --data 'Market-1501={trees['market1501']}': dataset market1501 is already given "
                    f"(--data 'market1501={trees['market1501']}'); give each dataset once")


def test_generalisation_takes_no_data(capsys, tmp_path, trees):
    line = assert_refused(capsys, tmp_path / "out", "--generalisation", "--data", f"market1501={trees['market1501']}")
    assert line == "error: --generalisation runs on synthetic instances of its own and takes no --data"


# ------------------------------------------------------------------ the paper profile's ImageNet start
def test_the_paper_profile_refuses_to_start_without_imagenet_weights(capsys, tmp_path, trees, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    line = assert_refused(capsys, tmp_path / "out", "--profile", "paper", "--data", f"market1501={trees['market1501']}")
    assert f"no resnet50-11ad3fa6.pth in {folder}" in line and "TORCH_HOME" in line
    assert "https://download.pytorch.org/models/resnet50-11ad3fa6.pth" in line and "--allow-random-init" in line
    status = cli.main(["train", "--profile", "paper", "--dataset", "market1501", "--root", str(trees["market1501"]),
                       "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.splitlines()
    assert status == 2 and len(err) == 1 and f"no resnet50-11ad3fa6.pth in {folder}" in err[0]
    assert not (tmp_path / "run").exists()


def test_allow_random_init_trains_and_labels_the_rows_so(capsys, tmp_path, trees, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    out = tmp_path / "out"
    small = ["arch=resnet18", "frozen_blocks=5", "height=32", "width=16", "pad=2", "epochs=1", "stage1_epochs=1",
             "warmup_epochs=1", "lr_milestones=()", "iters_per_epoch=1", "num_workers=0", "eval_batch_size=64"]
    status, _ = main("reproduce", "--profile", "paper", "--allow-random-init", "--data",
                     f"market1501={trees['market1501']}", "--seeds", "1", "--device", "cpu", "--out", str(out),
                     *(arg for setting in small for arg in ("--set", setting)))
    assert status == 0
    assert "--allow-random-init: starting from random weights" in capsys.readouterr().err
    record = metrics_files(out)[("market1501", "pirid")]
    assert record["config"]["pretrained"] is None and record["provenance"]["imagenet_weights"] is False
    source = pd.read_csv(table_file(out, "table1_datasets", "csv"))["source"].iloc[-1]
    assert source.startswith("measured: market1501, paper profile, 1 seed") and source.endswith(", random init")


def test_the_help_names_every_run_label():
    with pytest.raises(SystemExit), contextlib.redirect_stdout(io.StringIO()) as out:
        cli.main(["reproduce", "--help"])
    flat = "".join(out.getvalue().split())  # argparse wraps long labels across lines
    assert all(label in flat for label in on_datasets.RUN_CHOICES), on_datasets.RUN_CHOICES
