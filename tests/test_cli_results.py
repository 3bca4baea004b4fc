"""Command line parsing and the results/ tables (aggregation checked against NumPy)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pirid_lite import cli, results
from pirid_lite.engine.runfiles import run_dir
from pirid_lite.config import PiridConfig, get_config
from pirid_lite.errors import UserError


def test_every_option_of_train_is_documented():
    parser = cli.build_parser()
    train = next(a for a in parser._subparsers._group_actions[0].choices.items() if a[0] == "train")[1]
    for action in train._actions:
        if action.dest != "help":
            assert action.help, f"--{action.dest} has no help text"


def test_set_overrides_reach_the_config():
    args = cli.build_parser().parse_args(["train", "--dataset", "tiny", "--profile", "test", "--variant", "pirid-2",
                                          "--seed", "3", "--set", "cluster_metric=cosine", "--set", "epochs=7"])
    cfg = cli._config_from_args(args)
    assert (cfg.variant, cfg.seed, cfg.cluster_metric, cfg.epochs, cfg.profile) == ("pirid-2", 3, "cosine", 7, "test")


def test_unknown_override_is_a_clear_error():
    args = cli.build_parser().parse_args(["train", "--set", "epoks=7"])
    with pytest.raises(UserError, match="unknown config field; did you mean 'epochs'"):
        cli._config_from_args(args)


def test_bad_config_value_names_the_setting():
    with pytest.raises(ValueError, match="cluster_metric"):
        get_config("cpu", cluster_metric="euclid")
    with pytest.raises(ValueError, match="unknown PiridConfig fields"):
        PiridConfig.from_dict({"not_a_field": 1})


def test_evaluate_refuses_a_missing_checkpoint(tmp_path, capsys):
    assert cli.main(["evaluate", "--checkpoint", str(tmp_path / "nope.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err


def _fake_run(root, variant, seed, tag, m):
    cfg = get_config("cpu", variant=variant, seed=seed)
    out = run_dir(root, "synthetic-small", "cpu", variant, seed, tag)
    out.mkdir(parents=True)
    (out / "metrics.json").write_text(json.dumps({
        "metrics": dict(zip(results.METRIC_COLUMNS, m)), "config": cfg.to_dict(), "wall_seconds": 1.0,
        "provenance": {"dataset": "synthetic-small", "device": "cpu", "imagenet_weights": False, "git_commit": "x"},
        "final_epoch": {"purity": 0.5, "noise_share": 0.25}}))


def test_tables_aggregate_seeds_like_numpy(tmp_path):
    values = {0: (50.0, 60.0, 70.0, 30.0), 1: (54.0, 61.0, 72.0, 34.0), 2: (52.0, 65.0, 74.0, 35.0)}
    for seed, m in values.items():
        _fake_run(tmp_path, "pirid", seed, "", m)
        _fake_run(tmp_path, "pirid-1", seed, "", tuple(v - 10 for v in m))
    _fake_run(tmp_path, "pirid", 0, "cannot-link", (1.0, 2.0, 3.0, 4.0))
    runs = results.load_runs(tmp_path)
    assert len(runs) == 7
    t2 = results.table2(runs).set_index("variant")
    maps = np.array([m[3] for m in values.values()])
    assert t2.loc["pirid", "mAP_mean"] == pytest.approx(maps.mean())
    assert t2.loc["pirid", "mAP_std"] == pytest.approx(maps.std(ddof=1))
    assert t2.loc["pirid-1", "R1_mean"] == pytest.approx(np.mean([m[0] - 10 for m in values.values()]))
    assert list(t2.index) == ["pirid-1", "pirid"]  # Table 2 order, tagged runs excluded
    assert t2.loc["pirid", "seeds"] == 3
    t1 = results.table1(runs, dataset_label="synthetic small")
    measured = t1[t1["source"].str.startswith("measured")]
    assert len(measured) == 1 and measured["mAP"].iloc[0] == pytest.approx(round(maps.mean(), 2))
    assert (t1["source"] == "paper (published)").sum() == 15
    formatted = results.mean_std(results.summarize(runs[runs.variant == "pirid"]))
    assert formatted.loc[formatted.tag == "", "mAP"].iloc[0] == f"{maps.mean():.1f} ± {maps.std(ddof=1):.1f}"


def test_saved_features_metrics_matches_a_hand_worked_ranking(tmp_path):
    # 2 queries (pid 1 cam 0, pid 2 cam 0) then 3 gallery images; 1-D "features" after L2 norm are ±1 on
    # two axes, so each query's ranking is fixed by hand: q0 → g0 (pid 1, cam 1) first; q1 → its only true
    # match g2 (pid 2, cam 1) comes after g0 and g1 (tied at distance 1, ties keep gallery order) → rank 3.
    features = np.array([[1, 0], [0, 1],            # queries
                         [1, 0], [-1, 0], [0, -1]],  # gallery: pid 1, pid 3, pid 2
                        dtype=np.float16)
    pids, camids = np.array([1, 2, 1, 3, 2]), np.array([0, 0, 1, 1, 1])
    np.savez(tmp_path / "features_initial.npz", features=features, pids=pids, camids=camids)
    metrics = results.saved_features_metrics(tmp_path, "initial", num_query=2)
    assert metrics["R1"] == pytest.approx(50.0)
    assert metrics["R5"] == pytest.approx(100.0)
    assert metrics["mAP"] == pytest.approx((1.0 + 1 / 3) / 2 * 100)
    with pytest.raises(ValueError, match="num_query=5"):
        results.saved_features_metrics(tmp_path, "initial", num_query=5)
    with pytest.raises(FileNotFoundError, match="features_final.npz"):
        results.saved_features_metrics(tmp_path, "final", num_query=2)


def test_paired_differences_against_a_hand_worked_interval():
    """Differences 2, 3, 4: mean 3, s = 1, t(0.975, 2) = 4.3027 → half-width 4.3027 / √3 = 2.4842."""
    runs = pd.DataFrame({"tag": [""] * 7, "seed": [0, 1, 2, 0, 1, 2, 3], "variant": ["a"] * 3 + ["b"] * 4,
                         "mAP": [3.0, 5.0, 7.0, 1.0, 2.0, 3.0, 9.0]})   # seed 3 has no pair: ignored
    out = results.paired_differences(runs, "a", "b")
    assert out["per_seed"] == {0: 2.0, 1: 3.0, 2: 4.0} and out["seeds"] == 3 and out["wins"] == 3
    assert out["mean"] == pytest.approx(3.0)
    assert out["ci_low"] == pytest.approx(3.0 - 2.4842, abs=1e-3)
    assert out["ci_high"] == pytest.approx(3.0 + 2.4842, abs=1e-3)


def test_pooled_comparison_pairs_on_instance_and_seed():
    """Two instances that share seed numbers: a − b is 1, 2 on instance x and 3, 6 on y. Pairing on the seed
    alone would mix the instances; on (instance, seed) the four differences have mean 3, s = √(14/3) and
    half-width t(0.975, 3) · s / 2 = 3.1824 · 2.1602 / 2 = 3.4374."""
    runs = pd.DataFrame({"dataset": ["x", "x", "y", "y"] * 2, "seed": [0, 1, 0, 1] * 2, "tag": [""] * 8,
                         "variant": ["a"] * 4 + ["b"] * 4, "mAP": [11.0, 12.0, 23.0, 26.0, 10.0, 10.0, 20.0, 20.0]})
    row = results.pooled_comparison(runs, pairs=(("a", "b"),)).iloc[0]
    assert row["pairs"] == 4 and row["mean"] == 3.0 and row["ahead on"] == "4 of 4"
    assert row["95 % interval"] == f"[{3 - 3.4374:+.1f}, {3 + 3.4374:+.1f}]" == "[-0.4, +6.4]"
    assert row["per instance (mean, pairs)"] == "x: +1.5 (2); y: +4.5 (2)"


def test_start_label_names_the_weights():
    assert results.start_label({"imagenet_weights": True, "weights_source": "ImageNet (MobileNetV2)"}) == \
        "ImageNet (MobileNetV2)"
    assert results.start_label({"imagenet_weights": True,
                                "weights_source": "torchvision ResNet50_Weights.IMAGENET1K_V2"}) == \
        "ImageNet (ResNet50_Weights.IMAGENET1K_V2)"
    assert results.start_label({"imagenet_weights": False, "weights_source": "random init"}) == "random init"


def test_reproduce_plan_runs_donors_first_and_shares_their_stage1():
    from collections import Counter

    from pirid_lite.experiments.reproduce import STAGE1_DONOR, TABLE2_SEEDS, TAGGED_RUNS, plan
    runs = plan()
    untagged = [e for e in runs if not e.tag]
    assert Counter(e.cfg.variant for e in untagged) == Counter(TABLE2_SEEDS)
    assert Counter(e.tag for e in runs if e.tag) == Counter({tag: 5 for tag in TAGGED_RUNS})
    first_recipient = min(i for i, e in enumerate(runs) if e.stage1_from is not None)
    assert {e.cfg.variant for e in runs[:first_recipient]} == {STAGE1_DONOR, "supervised"}
    for e in runs[first_recipient:]:  # every later run starts from the donor of its own seed
        assert e.stage1_from.parent == runs[e.cfg.seed].out and runs[e.cfg.seed].cfg.seed == e.cfg.seed
    assert {(e.cfg.variant, e.cfg.seed) for e in runs if e.save_features} == {("pirid-1", 0), ("pirid", 0)}
    assert len(plan(seeds=2)) == 2 * (len(TABLE2_SEEDS) + len(TAGGED_RUNS))
    assert all(e.out.name == f"seed{e.cfg.seed}" and e.out.parent.name == e.label.split()[0] for e in runs)
    assert runs[0].cfg.association == "camera-linkage" and not runs[0].cfg.camera_centring  # the cpu default
    paper = [e.cfg for e in runs if e.tag == "paper-reading"]
    assert all(c.association == "dbscan" and not c.camera_centring for c in paper)




def _runs(maps: dict[str, list[float]]) -> pd.DataFrame:
    rows = [{"variant": name.partition("+")[0], "tag": name.partition("+")[2], "seed": seed, "mAP": value}
            for name, values in maps.items() for seed, value in enumerate(values)]
    return pd.DataFrame(rows)


def test_paired_table_pairs_tagged_runs_by_seed():
    runs = _runs({"pirid": [50.0, 52.0, 54.0], "pirid+paper-reading": [49.0, 52.5, 51.0], "pirid-1": [40.0, 40.0, 40.0]})
    table = results.paired_table(runs, pairs=(("pirid", "pirid+paper-reading"), ("pirid", "pirid-2"))).set_index("pair")
    assert list(table.index) == ["pirid − pirid+paper-reading"]  # no pirid-2 runs: that pair is left out
    row = table.iloc[0]
    assert row["per seed"] == "+1.0, -0.5, +3.0" and row["ahead on"] == "2 of 3" and row["mean"] == 1.17


def test_claims_by_hand():
    """pirid − pirid-1 = 4, 6, 5 (mean 5, s = 1, half-width 2.48): the interval [+2.5, +7.5] is above 0.
    Means: pirid 45, pirid-2 42, pirid-1 40, oracle 50, supervised 80 → share of the oracle's room
    (45 − 40) / (50 − 40) = 0.50 < 0.85; pirid / sup = 0.5625 < 0.84 (oracle / sup = 0.625);
    pirid − the paper's reading = 1, 3, 2 → [−0.5, +4.5], not above 0; pirid-1 / sup = 0.50."""
    runs = _runs({"pirid": [44.0, 46.0, 45.0], "pirid-1": [40.0, 40.0, 40.0], "pirid-2": [42.0] * 3,
                  "oracle-prototypes": [50.0] * 3, "supervised": [80.0] * 3,
                  "pirid+paper-reading": [43.0, 43.0, 43.0]})
    table = results.claims(runs)
    assert table["holds"].tolist() == [True, True, True, False, False, False, False]
    assert table["measured"].tolist() == ["[+2.5, +7.5]", "3 of 3", "45.0 / 42.0 / 40.0", "0.50", "0.562",
                                          "[-0.5, +4.5]", "0.50"]
    assert "oracle / supervised = 0.625" in table["target"].iloc[4]


def test_the_ceiling_claim_uses_the_ceiling_seeds_only():
    """Ceiling (oracle, batches by prototype) on seeds 0 and 1 only: 60, 70 → paired means pirid 45, pirid-1 40,
    ceiling 65, supervised 80 → (45 − 40) / (65 − 40) = 0.20; with one ceiling seed there is no such claim."""
    maps = {"pirid": [44.0, 46.0, 99.0], "pirid-1": [40.0, 40.0, 10.0], "pirid-2": [42.0] * 3,
            "oracle-prototypes": [50.0] * 3, "supervised": [80.0] * 3}
    table = results.claims(_runs({**maps, results.CEILING: [60.0, 70.0]})).set_index("measured")
    assert "ceiling's room" in table.loc["0.20", "target"] and "ceiling / supervised = 0.812" in table.loc["0.20", "target"]
    assert not table.loc["0.20", "holds"]
    assert not results.claims(_runs({**maps, results.CEILING: [60.0]}))["target"].str.contains("ceiling").any()


def test_prototype_claims_by_hand():
    rows = results.prototype_claims({"F": 0.8, "purity": 0.9, "same_camera_max": 0.0})
    assert [holds for _, _, holds in rows] == [True, True]
    rows = results.prototype_claims({"F": 0.8, "purity": 0.84, "same_camera_max": 0.2})
    assert [holds for _, _, holds in rows] == [False, False]


def test_prototype_quality_per_epoch_means_stage2_epochs_over_seeds(tmp_path):
    rows = []
    for seed, f in ((0, (0.2, 0.4)), (1, (0.4, 0.8))):
        path = tmp_path / f"seed{seed}"
        path.mkdir()
        log = [{"epoch": 1, "stage": 1}] + [
            {"epoch": 2 + i, "stage": 2, "num_prototypes": 10 + i, "noise_share": 0.1, "purity": 0.5,
             "pairwise_f": value, "memory_nn_accuracy": 0.3} for i, value in enumerate(f)]
        (path / "log.jsonl").write_text("\n".join(json.dumps(r) for r in log))
        rows.append({"variant": "pirid", "tag": "", "seed": seed, "path": str(path)})
    table = results.prototype_quality_per_epoch(pd.DataFrame(rows)).set_index("epoch")
    assert list(table.index) == [2, 3] and table["seeds"].tolist() == [2, 2]
    assert table["pairwise_f"].tolist() == pytest.approx([0.3, 0.6])
    assert table["num_prototypes"].tolist() == [10, 11]
