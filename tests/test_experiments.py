"""The one experiment runner behind `reproduce` and `calibrate`: shards, skip-if-done, one line per run."""
from __future__ import annotations

import pytest

from pirid_lite import calibrate, datasets
from pirid_lite.config import get_config
from pirid_lite.datasets.synthetic import PRESETS
from pirid_lite.errors import UserError
from pirid_lite.experiments.runner import Experiment, parse_shard, run_experiments, select_shard


def test_shards_partition_the_plan():
    items = list(range(7))
    shards = [select_shard(items, f"{i}/3") for i in range(3)]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]] and select_shard(items, None) == items
    for bad in ("3/3", "a/b", "1"):
        with pytest.raises(UserError, match="--shard"):
            parse_shard(bad)


def test_the_chosen_calibration_candidate_is_the_small_preset():
    assert calibrate.candidate_spec(calibrate.CHOSEN) == PRESETS["small"]
    assert calibrate.candidate_spec("ids150-cam6-img2to3-shift0.5") != PRESETS["small"]


def test_calibration_refuses_the_methods_own_variants():
    with pytest.raises(UserError, match="calibration runs only"):
        calibrate.plan(calibrate.CHOSEN, variants=("pirid",))


@pytest.mark.slow
def test_finished_runs_are_reused_and_each_run_prints_one_line(tmp_path):
    tiny = datasets.load("tiny", verbose=False)
    cfg = get_config("test", device="cpu", variant="pirid-1", epochs=1, stage1_epochs=1, warmup_epochs=1,
                     lr_milestones=(), iters_per_epoch=1)
    plan = [Experiment(cfg.replace(seed=seed), tmp_path / f"seed{seed}") for seed in (0, 1)]
    lines: list[str] = []
    first = run_experiments(plan[:1], tiny, print_line=lines.append)
    assert len(first) == 1 and lines[0].startswith("run 1 of 1: pirid-1 seed 0  mAP ")
    lines.clear()
    second = run_experiments(plan, tiny, print_line=lines.append)
    assert [t["run"] for t in second] == [str(tmp_path / "seed1")]
    assert lines[0] == "1 of 2 runs already finished (reused; --force re-runs them)"
    assert lines[1].startswith("run 1 of 1: pirid-1 seed 1  mAP ") and len(lines) == 2


def test_method_settings_are_pirid_runs_in_their_own_folders():
    runs = calibrate.method_plan(calibrate.CHOSEN, ("paper-reading", "camera-centred"), seeds=2)
    assert [(e.cfg.variant, e.tag, e.cfg.seed) for e in runs] == [
        ("pirid", "paper-reading", 0), ("pirid", "camera-centred", 0),
        ("pirid", "paper-reading", 1), ("pirid", "camera-centred", 1)]
    assert [e.cfg.camera_centring for e in runs] == [False, True, False, True]  # the setting wins over the profile
    assert runs[1].out.parts[-4:] == (calibrate.CHOSEN, "method", "camera-centred", "seed0")
    with pytest.raises(UserError, match="--method-settings"):
        calibrate.method_plan(calibrate.CHOSEN, ("no-such-setting",))
