"""Bad input at the command line and in long runs: one ``error: …`` line, exit status 2, nothing half-written.

CLI cases run ``cli.main`` in-process (stderr via capsys); two run ``python -m pirid_lite`` as a subprocess.
Training cases use the synthetic ``tiny`` preset with the ``test`` profile and 2 steps per epoch.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pirid_lite import cli
from pirid_lite import losses as losses_lib
from pirid_lite.engine.training import TrainingState
from pirid_lite.config import get_config
from pirid_lite.datasets.pipeline import UnreadableImageError, make_train_loader
from pirid_lite.errors import UserError
from pirid_lite.engine.runfiles import CHECKPOINT, LOG, METRICS
from pirid_lite.engine.training import _first_nonfinite
from pirid_lite.utils import REPO_ROOT, repo_relative

from conftest import write_market_tree

TRAIN = ["train", "--dataset", "tiny", "--profile", "test", "--device", "cpu", "--no-progress",
         "--set", "epochs=2", "--set", "iters_per_epoch=2"]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``cli.main(argv)`` → (exit status, stdout, stderr)."""
    status = cli.main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_one_error_line(status: int, err: str, expected: str | None = None) -> str:
    """Exit status 2 and stderr = exactly one ``error: …`` line (equal to ``expected`` when given)."""
    assert status == 2
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    if expected is not None:
        assert lines[0] == expected
    return lines[0]


def assert_nothing_half_written(folder: Path) -> None:
    """No temporary file left by an interrupted atomic write, anywhere under ``folder``."""
    leftovers = [p for p in Path(folder).rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers, leftovers


def checkpoint_epochs(out: Path) -> int:
    """How many epochs the checkpoint in ``out`` holds (it loads: it is whole)."""
    return int(torch.load(out / CHECKPOINT, map_location="cpu", weights_only=False)["epoch"]) + 1


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A complete 2-epoch run folder (checkpoint.pt, log, metrics.json), shared read-only."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert cli.main([*TRAIN, "--out", str(out)]) == 0
    return out


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


# ------------------------------------------------------------------ --set values and config checks
def test_set_lr_abc_names_the_field_and_the_expected_type(capsys):
    status, out, err = run_cli(capsys, *TRAIN, "--set", "lr=abc")
    assert_one_error_line(status, err, "error: --set lr expects a float, got 'abc'")


@pytest.mark.parametrize("setting, expected", [
    ("epochs=ten", "error: --set epochs expects an int, got 'ten'"),
    ("temperature=hot", "error: --set temperature expects a float, got 'hot'"),
    ("amp=maybe", "error: --set amp expects a bool (true/false/yes/no/1/0), got 'maybe'"),
    ("lr_milestones=20,x", "error: --set lr_milestones expects a tuple of ints such as 20,40, got '20,x'"),
    ("iters_per_epoch=1.5", "error: --set iters_per_epoch expects an int or none, got '1.5'"),
    ("cluster_metric=euclid",
     "error: invalid PiridConfig: cluster_metric='euclid', expected one of ('cosine', 'jaccard', 'jaccard-camera')"),
    ("epoks=3", "error: --set epoks: unknown config field; did you mean 'epochs'?"),
    ("seed=3", "error: --set seed: set it with --seed instead"),
], ids=["int", "float", "bool", "tuple", "optional", "string", "unknown", "flag"])
def test_a_wrong_value_for_each_kind_of_field(capsys, setting, expected):
    status, out, err = run_cli(capsys, *TRAIN, "--set", setting)
    assert_one_error_line(status, err, expected)


@pytest.mark.parametrize("setting, field, value", [
    ("lr_milestones=20,40", "lr_milestones", (20, 40)), ("lr_milestones=(20, 40)", "lr_milestones", (20, 40)),
    ("lr_milestones=[7]", "lr_milestones", (7,)), ("amp=no", "amp", False), ("compile=YES", "compile", True),
    ("iters_per_epoch=none", "iters_per_epoch", None), ("iters_per_epoch=12", "iters_per_epoch", 12),
    ("pretrained=None", "pretrained", None), ("lr=1e-3", "lr", 1e-3), ("cluster_metric=cosine", "cluster_metric",
                                                                      "cosine"),
])
def test_set_values_parse_as_typed(setting, field, value):
    args = cli.build_parser().parse_args([*TRAIN, "--set", setting])
    assert getattr(cli._config_from_args(args), field) == value


def test_set_epochs_zero_is_one_line(capsys):
    status, out, err = run_cli(capsys, *TRAIN, "--set", "epochs=0")
    assert_one_error_line(status, err, "error: invalid PiridConfig: epochs=0, expected >= 1")


# ------------------------------------------------------------------ datasets
def test_unknown_dataset(capsys):
    status, out, err = run_cli(capsys, "train", "--dataset", "nope", "--profile", "test")
    assert_one_error_line(status, err, "error: unknown dataset 'nope'; expected one of market1501, dukemtmc, "
                                       "msmt17, tiny, small, market (or synthetic-tiny/-small/-market)")


def test_empty_split_names_the_split_and_folder(capsys, tmp_path):
    tree = write_market_tree(tmp_path / "Market-1501-v15.09.15", bad_name=False)
    for image in (tree.root / "query").glob("*.jpg"):
        image.unlink()
    status, out, err = run_cli(capsys, *TRAIN, "--dataset", "market1501", "--root", str(tmp_path),
                               "--out", str(tmp_path / "run"))
    assert_one_error_line(status, err, f"error: market1501: the query split is empty after parsing "
                                       f"{tree.root / 'query'} (no image with a valid identity found)")
    assert not (tmp_path / "run").exists()


def test_missing_split_names_the_folder_and_shows_the_expected_tree(capsys, tmp_path):
    tree = write_market_tree(tmp_path / "Market-1501-v15.09.15", bad_name=False)
    for image in (tree.root / "query").iterdir():
        image.unlink()
    (tree.root / "query").rmdir()
    status, out, err = run_cli(capsys, *TRAIN, "--dataset", "market1501", "--root", str(tree.root))
    assert status == 2 and "Traceback" not in err
    first, *layout = err.splitlines()  # the one error line, then the expected folder tree (kept on purpose)
    assert first == (f"error: market1501: {tree.root} does not have the expected layout (neither it nor a "
                     f"subfolder named Market-1501-v15.09.15, Market-1501, market1501 does). Expected layout:")
    assert any("query/" in line for line in layout)


def test_unreadable_training_image_names_the_file(capsys, tmp_path):
    root = tmp_path / "tiny"
    assert run_cli(capsys, "generate", "--preset", "tiny", "--root", str(root))[0] == 0
    broken = sorted((root / "bounding_box_train").glob("*.jpg"))[0]
    broken.write_text("not a jpeg")
    status, out, err = run_cli(capsys, *TRAIN, "--root", str(root), "--out", str(tmp_path / "run"))
    line = assert_one_error_line(status, err)
    assert line.startswith(f"error: cannot read image {broken}: ")
    assert_nothing_half_written(tmp_path / "run")


def test_unreadable_image_in_a_worker_process_is_one_line_naming_the_file(tmp_path):
    """A DataLoader worker re-raises with its traceback as the message; the error keeps one line."""
    from pirid_lite.datasets.base import TrainItem
    items = [TrainItem(str(tmp_path / f"{i}.jpg"), 0, i % 2) for i in range(4)]
    for item in items:
        Path(item.path).write_text("not a jpeg")
    cfg = get_config("test", num_ids_per_batch=2, num_instances=2, num_workers=1)
    with pytest.raises(UnreadableImageError) as error:
        next(iter(make_train_loader(items, [i.label for i in items], cfg)))
    assert "\n" not in str(error.value) and str(error.value).startswith(f"cannot read image {tmp_path}")


# ------------------------------------------------------------------ checkpoints
def test_text_file_as_checkpoint(capsys, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    status, out, err = run_cli(capsys, "evaluate", "--checkpoint", str(text), "--dataset", "tiny")
    line = assert_one_error_line(status, err)
    assert line.startswith(f"error: {text} is not a pirid_lite checkpoint: torch.load failed with UnpicklingError")
    assert line.endswith("expected a checkpoint.pt written by `python -m pirid_lite train`")


def test_missing_checkpoint(capsys, tmp_path):
    status, out, err = run_cli(capsys, "evaluate", "--checkpoint", str(tmp_path / "nope.pt"))
    assert_one_error_line(status, err, f"error: checkpoint {tmp_path / 'nope.pt'} does not exist (expected a "
                                       f"checkpoint.pt written by `python -m pirid_lite train`)")


def test_weights_file_that_is_not_a_run_checkpoint(capsys, tmp_path, finished_run):
    bank = finished_run / "memory_final.pt"
    status, out, err = run_cli(capsys, "evaluate", "--checkpoint", str(bank), "--dataset", "tiny")
    assert_one_error_line(status, err, f"error: {bank} is not a pirid_lite run checkpoint: it has no "
                                       f"['epoch', 'config', 'model'] entries (found ['features', "
                                       f"'fresh_centroids', 'label_camera']); expected a checkpoint.pt written by "
                                       f"`python -m pirid_lite train`")


def test_checkpoint_of_another_arch(capsys, tmp_path, finished_run):
    state = torch.load(finished_run / CHECKPOINT, map_location="cpu", weights_only=False)
    state["config"]["arch"] = "resnet34"  # resnet18 weights under a resnet34 config
    path = tmp_path / "other_arch.pt"
    torch.save(state, path)
    status, out, err = run_cli(capsys, "evaluate", "--checkpoint", str(path), "--dataset", "tiny",
                               "--device", "cpu")
    line = assert_one_error_line(status, err)
    assert line.startswith(f"error: {path}: its weights do not fit a resnet34 model (not a checkpoint of this "
                           f"arch; Error(s) in loading state_dict for ReIDNet:")


def test_pretrained_weights_of_another_arch(capsys, tmp_path, finished_run):
    weights = tmp_path / "resnet18.pt"
    torch.save(torch.load(finished_run / CHECKPOINT, map_location="cpu", weights_only=False)["model"], weights)
    status, out, err = run_cli(capsys, *TRAIN, "--set", "arch=resnet34", "--set", f"pretrained={weights}",
                               "--out", str(tmp_path / "run"))
    line = assert_one_error_line(status, err)
    assert line.startswith(f"error: pretrained checkpoint {weights} is not compatible with resnet34")


def test_resume_with_a_different_config_lists_the_differences(capsys, tmp_path, finished_run):
    before = _snapshot(finished_run)
    status, out, err = run_cli(capsys, *TRAIN, "--variant", "pirid-2", "--set", "lr=0.001",
                               "--set", "epochs=3", "--out", str(finished_run), "--resume")
    assert_one_error_line(status, err, (
        f"error: cannot resume from {finished_run / CHECKPOINT}: it was written with a different config "
        f"(variant: checkpoint 'pirid', now 'pirid-2'; lr: checkpoint 0.00035, now 0.001); only epochs and "
        f"device may change on resume — use the same settings or a new --out folder"))
    assert _snapshot(finished_run) == before
    assert_nothing_half_written(finished_run)


# ------------------------------------------------------------------ long runs
def _nan_from_call(monkeypatch, name: str, first_bad_call: int) -> None:
    """Make losses.<name> (a loss function of the recipe) return NaN from its ``first_bad_call``-th call on."""
    real, calls = getattr(losses_lib, name), []

    def loss(*args, **kwargs):
        calls.append(1)
        value = real(*args, **kwargs)
        return value * float("nan") if len(calls) >= first_bad_call else value

    monkeypatch.setattr(losses_lib, name, loss)


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(capsys, monkeypatch, tmp_path):
    _nan_from_call(monkeypatch, "intra_camera_loss", first_bad_call=4)  # epoch 2, its second step
    out = tmp_path / "run"
    status, stdout, err = run_cli(capsys, *TRAIN, "--out", str(out))
    assert_one_error_line(status, err, (
        f"error: epoch 2: the loss became non-finite (L_intra (Eq. 3) = nan); the run stopped without saving this "
        f"epoch, {out / CHECKPOINT} holds epoch 1 (complete) (try a lower --set lr=...)"))
    assert checkpoint_epochs(out) == 1
    assert len((out / LOG).read_text().splitlines()) == 1
    assert not (out / METRICS).exists()
    assert_nothing_half_written(out)


def test_first_nonfinite_keeps_the_terms_of_the_first_bad_step():
    """Naming the term: a NaN in L_inter_ID poisons every term of later steps; the first bad step is kept."""
    kept = torch.zeros(3)
    for step in ([1.0, 2.0, 3.0], [1.0, float("nan"), 3.0], [float("nan")] * 3, [4.0, 5.0, 6.0]):
        kept = _first_nonfinite(kept, torch.tensor(step))
    assert kept[0] == 1.0 and kept[1].isnan() and kept[2] == 3.0


def test_interrupt_between_epochs_leaves_a_checkpoint_that_resumes(capsys, monkeypatch, tmp_path):
    real_step, calls = TrainingState.step, []

    def interrupted_step(self, *args):
        calls.append(1)
        if len(calls) == 3:  # the first step of epoch 2
            raise KeyboardInterrupt
        return real_step(self, *args)

    monkeypatch.setattr(TrainingState, "step", interrupted_step)
    out = tmp_path / "run"
    argv = [*TRAIN, "--out", str(out)]
    status, stdout, err = run_cli(capsys, *argv)
    assert status == 130
    assert err == f"interrupted; resume with: {shlex.join(['python', '-m', 'pirid_lite', *argv, '--resume'])}\n"
    assert f"interrupted: {out / CHECKPOINT} holds epoch 1 (complete)" in stdout
    assert checkpoint_epochs(out) == 1 and not (out / METRICS).exists()
    assert_nothing_half_written(out)

    monkeypatch.setattr(TrainingState, "step", real_step)
    resume_argv = shlex.split(err.split("resume with: ")[1])[3:]
    status, stdout, err = run_cli(capsys, *resume_argv)
    assert status == 0 and err == ""
    assert f"resumed from {out / CHECKPOINT} after epoch 1" in stdout
    assert checkpoint_epochs(out) == 2 and (out / METRICS).exists()
    assert len((out / LOG).read_text().splitlines()) == 2
    assert_nothing_half_written(out)


# ------------------------------------------------------------------ run records, debug, internal errors
def test_run_records_carry_no_machine_path(finished_run):
    import json
    provenance = json.loads((finished_run / METRICS).read_text())["provenance"]
    assert provenance["dataset_root"] == "data/synthetic/tiny-seed0"
    assert repo_relative(REPO_ROOT / "data" / "synthetic" / "x") == "data/synthetic/x"
    assert repo_relative("/elsewhere/Market-1501") == "/elsewhere/Market-1501"


def test_a_path_in_another_checkout_is_recorded_relative_to_it(tmp_path, monkeypatch):
    """A run started in a second checkout (a git worktree) that imports this one's package records its stage-1
    donor relative to that checkout, not as the machine's absolute path."""
    monkeypatch.chdir(tmp_path)
    assert repo_relative(tmp_path / "results" / "runs" / "stage1.pt") == "results/runs/stage1.pt"
    assert repo_relative("/elsewhere/stage1.pt") == "/elsewhere/stage1.pt"


def test_internal_errors_still_raise(monkeypatch):
    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "cmd_generate", broken)
    with pytest.raises(KeyError, match="a bug"):
        cli.main(["generate", "--preset", "tiny"])


def _python_m(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pirid_lite", *argv], capture_output=True, text=True,
                          cwd=REPO_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, timeout=120)


def test_subprocess_prints_one_line_and_exits_2():
    done = _python_m("train", "--set", "lr=abc")
    assert (done.returncode, done.stderr, done.stdout) == (2, "error: --set lr expects a float, got 'abc'\n", "")


@pytest.mark.parametrize("argv, env", [
    (["--debug", "train", "--set", "lr=abc"], None),
    (["train", "--debug", "--set", "lr=abc"], None),
    (["train", "--set", "lr=abc"], {"PIRID_DEBUG": "1"}),
], ids=["flag", "flag-after-command", "env"])
def test_debug_shows_the_traceback(argv, env):
    done = _python_m(*argv, env=env)
    assert done.returncode == 1
    assert "Traceback" in done.stderr and done.stderr.rstrip().endswith(
        "pirid_lite.errors.UserError: --set lr expects a float, got 'abc'")


def test_user_error_is_a_value_error():
    """Callers that catch ValueError for bad input keep working."""
    with pytest.raises(ValueError):
        raise UserError("x")
