"""Smoke test: every benchmark still runs in its tiny configuration and its correctness checks pass
(no timing assertions: the machine is shared)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks import bench_evaluator, bench_memory_update, bench_prototypes, bench_throughput


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_evaluator_benchmark_agrees_with_reference():
    result = bench_evaluator.main(small=True, repeats=1)
    assert result["max_abs_diff_cpu"] < 1e-6 and 0 < result["mAP"] <= 1


def test_evaluator_reference_catches_a_wrong_result():
    problem = bench_evaluator.market_like_problem(**bench_evaluator.SMALL)
    cmc, mAP = bench_evaluator.reference_evaluate_rank(*problem.args())
    shuffled = problem.distmat[:, np.random.default_rng(0).permutation(problem.distmat.shape[1])]
    _, wrong = bench_evaluator.reference_evaluate_rank(shuffled, *problem.args()[1:])
    assert abs(wrong - mAP) > 1e-3 and cmc.shape == (50,)


def test_memory_update_benchmark_agrees_with_loop():
    assert bench_memory_update.main(small=True, repeats=1)["max_abs_diff"] < 1e-5


def test_prototype_benchmark_runs_both_metrics():
    result = bench_prototypes.main(small=True)
    assert result["cosine_prototypes"] >= 1 and result["jaccard_prototypes"] >= 1 and result["linkage_prototypes"] >= 1
    assert result["linkage_same_camera_prototypes"] == 0
    assert 0 <= result["cosine_purity"] <= 1


def test_throughput_benchmark_runs():
    result = bench_throughput.main(small=True, iters=1)
    assert result["test_cpu_full_step_img_s"] > 0 and result["test_cpu_fwd_bwd_img_s"] > 0


def test_trainer_benchmark_runs_every_setting():
    from benchmarks import bench_trainer
    result = bench_trainer.main(small=True, iters=1)
    for name in bench_trainer.SETTINGS:
        assert result[f"{name}: bare img/s"] > 0 and result[f"{name}: trainer stage 2 img/s"] > 0


def test_distributed_benchmark_runs_one_and_two_processes():
    from benchmarks import bench_distributed
    result = bench_distributed.main(small=True)
    assert result["1 process(es): stage 1 img/s"] > 0 and result["2 process(es): stage 1 img/s"] > 0
