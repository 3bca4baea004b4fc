"""The GPU check's CPU smoke run (``python -m benchmarks.gpu_check --smoke``): every section runs at toy sizes,
finishes with status ok, and every device-vs-CPU comparison is within its tolerance. About a minute on one
core, most of it the two training processes of section f (plain and under torchrun, gloo)."""
from __future__ import annotations

import json

import pytest
import torch

from benchmarks import gpu_check

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    threads = torch.get_num_threads()
    try:
        # caps x10: this test is about what the sections compute, on machines of any speed (a shared CI box);
        # that a spent cap skips work is tested below
        code = gpu_check.main(["--smoke", "--cap-scale", "10", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    return code, json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text()


def test_every_section_runs_and_passes(smoke):
    code, report, _ = smoke
    assert set(report["sections"]) == set(gpu_check.SECTIONS)  # (the JSON sorts its keys)
    problems = {key: (s["status"], s.get("error"), [c for c in s["checks"] if not c["pass"]], s["skipped"])
                for key, s in report["sections"].items() if s["status"] != "ok"}
    assert not problems
    assert code == 0 and report["all_ok"] and report["smoke"]


def test_every_comparison_is_within_its_tolerance_in_both_modes(smoke):
    comparisons = smoke[1]["sections"]["equivalence"]["result"]["comparisons"]
    assert {c["mode"] for c in comparisons} == {"fp32", "amp_bf16"}
    skipped = smoke[1]["sections"]["equivalence"]["skipped"]
    assert len(skipped) == 1 and "compared on CUDA only" in skipped[0]  # the network under AMP: a CUDA check
    assert len(comparisons) >= 20
    for c in comparisons:
        assert c["pass"], c
        assert c["max_abs_diff"] <= c["tolerance"]


def test_sections_measure_what_the_report_shows(smoke):
    _, report, md = smoke
    s = report["sections"]
    assert all(v["img_s"] > 0 for v in s["throughput"]["result"]["bare"].values() if v)
    for rates in s["throughput"]["result"]["trainer"].values():
        assert rates["stage1_img_s"] > 0 and 0 <= rates["data_wait_share"] <= 1
    assert s["cpu_profile"]["result"]["imagenet_weights"] is True
    assert s["paper_market"]["result"]["extrapolated"]["total_minutes"] > 0
    assert s["torchrun"]["result"]["backend"] == "gloo" and s["torchrun"]["result"]["bit_identical"]
    for section in s.values():
        assert f"## {section['title']}: ok" in md


def test_a_failing_section_records_its_error_and_the_next_one_runs(tmp_path, monkeypatch):
    def broken(run, sec):
        raise RuntimeError("boom")

    monkeypatch.setitem(gpu_check.SECTIONS, "machine", ("a. the machine", broken))
    code = gpu_check.main(["--smoke", "--sections", "a,b", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert code == 1 and report["sections"]["machine"]["status"] == "error"
    assert "RuntimeError: boom" in report["sections"]["machine"]["error"]
    assert report["sections"]["equivalence"]["status"] == "ok"


def test_a_spent_time_cap_skips_the_rest_of_a_section(tmp_path):
    code = gpu_check.main(["--smoke", "--sections", "equivalence", "--cap-scale", "0", "--out", str(tmp_path)])
    section = json.loads((tmp_path / "gpu_check.json").read_text())["sections"]["equivalence"]
    assert section["status"] in ("partial", "fail") and code in (0, 1)
    assert section["skipped"] and all(s.endswith(gpu_check.SKIPPED) for s in section["skipped"])
