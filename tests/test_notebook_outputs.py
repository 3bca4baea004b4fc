"""What the notebooks print and write: short output lines, files only where the user asks, a Figure 3 layout
that does not depend on the machine's core count, and the association section's helpers."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pirid_lite import logkeys, notebook, viz
from pirid_lite.method.association import same_camera_prototypes

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ text lines
def test_wrap_parts_breaks_between_parts_only():
    parts = [f"value{i} 0.{i:03d}" for i in range(20)]
    text = viz.wrap_parts(parts, width=40)
    lines = text.splitlines()
    assert len(lines) > 1 and all(len(line) <= 40 for line in lines)
    assert text.replace(",\n", ", ") == ", ".join(parts)   # nothing lost, no part split
    assert viz.wrap_parts(parts) == ", ".join(parts)


def test_quality_summary_keeps_its_one_line_default_and_wraps_on_request():
    quality = {logkeys.NUM_PROTOTYPES: 66, logkeys.NUM_TRUE_IDENTITIES: 150, logkeys.NOISE_SHARE: 0.041,
               logkeys.PURITY: 0.538, logkeys.PAIRWISE_PRECISION: 0.284, logkeys.PAIRWISE_RECALL: 0.952,
               logkeys.PAIRWISE_F: 0.437, logkeys.MEMORY_NN_ACCURACY: 0.651}
    one_line = viz.quality_summary(quality)
    assert "\n" not in one_line and one_line.startswith("66 prototypes for 150 people")
    wrapped = viz.quality_summary(quality, width=90)
    assert all(len(line) <= 90 for line in wrapped.splitlines())
    assert "memory NN accuracy 0.651" in wrapped.splitlines()[-1]


def test_lr_schedule_text_collapses_equal_rates_and_counts_epochs_from_one():
    lrs = [3.5e-5, 1.925e-4] + [3.5e-4] * 13 + [3.5e-5] * 5
    assert viz.lr_schedule_text(lrs, width=None) == "1: 3.5e-05, 2: 1.9e-04, 3-15: 3.5e-04, 16-20: 3.5e-05"
    assert viz.lr_schedule_text([1e-3]) == "1: 1.0e-03"
    long = viz.lr_schedule_text([1e-4 * (i + 1) for i in range(50)], width=60)
    assert all(len(line) <= 60 for line in long.splitlines())


# ------------------------------------------------------------------------------------------ files
def test_notebook_files_go_to_the_ignored_scratch_folder_unless_asked(tmp_path, monkeypatch):
    nb = notebook.NotebookSettings(mode="full", dataset="small", data_root=None, profile="cpu",
                                   results_root=tmp_path / "results", scratch_root=tmp_path / "results" / "notebooks")
    monkeypatch.delenv(notebook.WRITE_TRACKED, raising=False)
    assert notebook.output_dir(nb, "figures") == tmp_path / "results" / "notebooks" / "figures"
    monkeypatch.setenv(notebook.WRITE_TRACKED, "1")
    assert notebook.output_dir(nb, "figures") == tmp_path / "results" / "figures"
    test_mode = notebook.NotebookSettings(**{**nb.__dict__, "mode": "test", "scratch_root": tmp_path / "tmp"})
    assert notebook.output_dir(test_mode, "tables") == tmp_path / "tmp" / "tables"   # test mode: never tracked


def test_the_scratch_folder_is_ignored_by_git_and_figures_are_not():
    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO).returncode == 0
    assert ignored("results/notebooks/figures/figure3_tsne.png")
    assert not ignored("results/figures/figure3_tsne.png")


def test_shown_path_is_repository_relative_or_says_temporary(tmp_path):
    assert notebook.shown_path(REPO / "results" / "notebooks" / "figures") == "results/notebooks/figures"
    assert notebook.shown_path(tmp_path) == "a temporary folder"


# ------------------------------------------------------------------------------------------ Figure 3
_EMBED = textwrap.dedent("""
    import sys
    import numpy as np
    from pirid_lite import viz
    x = np.random.default_rng(0).normal(size=(240, 24)).astype(np.float32)
    x[:120] += 1.5
    sys.stdout.write(viz.tsne_embedding(x, seed=0).astype(np.float64).tobytes().hex())
""")


def _embedding(threads: int) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    return subprocess.run([sys.executable, "-c", _EMBED], cwd=REPO, env=env, capture_output=True, text=True,
                          check=True).stdout


def test_tsne_layout_does_not_depend_on_the_thread_count():
    assert _embedding(1) == _embedding(2)


def test_tsne_panels_do_not_depend_on_the_order_of_the_saved_features():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(1)
    pids = np.repeat(np.arange(1, 9), 12)
    camids = np.tile(np.arange(3), 32)
    x = rng.normal(size=(len(pids), 16)) + pids[:, None] * 0.5
    shuffle = rng.permutation(len(pids))

    def points(order):
        fig = viz.plot_tsne_panels({"p": (x[order], pids[order], camids[order])}, n_identities=5, seed=0)
        offsets = np.concatenate([c.get_offsets() for c in fig.axes[0].collections])
        plt.close(fig)
        return offsets[np.lexsort(offsets.T)]

    np.testing.assert_array_equal(points(np.arange(len(pids))), points(shuffle))


# ------------------------------------------------------------------------------------------ association
def test_rule_breaking_prototypes_are_those_same_camera_prototypes_counts():
    assignment = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, -1, 3, 3])
    cameras = np.array([0, 1, 2, 0, 0, 0, 1, 1, 2, 0, 1, 2])
    broken = viz.rule_breaking_prototypes(assignment, cameras)
    assert broken.tolist() == [1, 2]                      # smallest first: prototype 1 has 2 IDs, 2 has 4
    assert len(broken) == same_camera_prototypes(assignment, cameras)
    assert viz.rule_breaking_prototypes(np.array([-1, -1]), np.array([0, 1])).tolist() == []


def test_grouping_summary_sets_groupings_side_by_side():
    truth = np.array([7, 7, 8, 8, 9, 9])
    cameras = np.array([0, 1, 0, 1, 0, 1])
    table = viz.grouping_summary({"right": np.array([0, 0, 1, 1, 2, 2]), "chained": np.array([0, 0, 0, 0, -1, -1])},
                                 cameras, truth)
    assert list(table.columns) == ["right", "chained"] and list(table.index) == list(viz.GROUPING_SUMMARY_ROWS)
    assert table.loc["prototypes with 2 IDs of 1 camera"].tolist() == [0, 1]
    assert table.loc["largest prototype (IDs)"].tolist() == [2, 4]
    assert table.loc["pairwise F", "right"] == "1.000"


@pytest.mark.parametrize("scale", [0.75, 3.0])
def test_linkage_scale_sweep_never_breaks_the_rule(scale):
    import torch

    from pirid_lite.config import get_config

    rng = np.random.default_rng(0)
    people = rng.normal(size=(12, 8))
    cameras = np.tile(np.arange(3), 12)
    truth = np.repeat(np.arange(12), 3)
    bank = torch.tensor(people[truth] + 0.3 * rng.normal(size=(36, 8)), dtype=torch.float32)
    sweep = viz.linkage_scale_sweep(bank, torch.as_tensor(cameras), truth, get_config("test"), [scale])
    assert sweep[logkeys.SAME_CAMERA_PROTOTYPES].tolist() == [0]
    assert sweep[logkeys.LARGEST_PROTOTYPE].iloc[0] <= 3
    assert sweep["threshold"].iloc[0] > 0


def _log():
    import pandas as pd

    rows = [{logkeys.EPOCH: e, logkeys.STAGE: 1 if e < 3 else 2, logkeys.LR: 3.5e-5 * e, logkeys.SECONDS: 10.0 * e,
             **{key: 1.0 / e for key in viz.LOSS_KEYS}} for e in (1, 2, 3, 4)]
    for row in rows[2:]:
        row.update({logkeys.NUM_PROTOTYPES: 40, logkeys.NOISE_SHARE: 0.1, logkeys.PURITY: 0.9, logkeys.PAIRWISE_F: 0.8,
                    logkeys.MEMORY_NN_ACCURACY: 0.5})
    return pd.DataFrame(rows)


def test_epoch_tables_split_the_log_into_two_narrow_tables():
    training, prototypes = viz.epoch_tables(_log())
    assert list(training.index) == [1, 2, 3, 4] and list(prototypes.index) == [3, 4]   # stage-2 epochs only
    assert logkeys.LR in training and logkeys.PURITY not in training
    assert logkeys.PURITY in prototypes and logkeys.LR not in prototypes
    assert len(training.columns) <= 8 and len(prototypes.columns) <= 8
    stage1_only = _log().drop(columns=[logkeys.NUM_PROTOTYPES, logkeys.NOISE_SHARE, logkeys.PURITY, logkeys.PAIRWISE_F,
                                       logkeys.MEMORY_NN_ACCURACY])
    assert viz.epoch_tables(stage1_only)[1].empty


def test_association_curves_name_a_reading_whose_runs_lack_a_key():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    new = pd.DataFrame({logkeys.EPOCH: [5, 6], logkeys.PAIRWISE_F: [0.5, 0.6], logkeys.PURITY: [0.7, 0.8],
                        logkeys.NUM_PROTOTYPES: [90, 95], logkeys.SAME_CAMERA_PROTOTYPES: [0, 0]})
    old = new.drop(columns=[logkeys.SAME_CAMERA_PROTOTYPES])
    fig = viz.plot_association_curves({"new": new, "old": old}, num_people=100)
    panel = fig.axes[list(viz.ASSOCIATION_CURVES).index(logkeys.SAME_CAMERA_PROTOTYPES)]
    assert "old: not logged" in panel.get_xlabel() and len(panel.lines) == 1
    plt.close(fig)
