"""Command line: ``python -m pirid_lite {train,evaluate,generate,demo,reproduce,calibrate} --help``."""
from __future__ import annotations

import argparse
import ast
import difflib
import json
import math
import os
import shlex
import sys
import time
import typing
from pathlib import Path

from .config import PROFILES, VARIANTS, PiridConfig, get_config
from .variants import BASELINES, POLICIES
from .errors import UserError

DEBUG_ENV = "PIRID_DEBUG"  # PIRID_DEBUG=1 acts like --debug
EXIT_USER_ERROR, EXIT_INTERRUPTED = 2, 130
_FLAG_FIELDS = {"variant": "--variant", "profile": "--profile", "seed": "--seed", "device": "--device"}
_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")
_TYPE_NAMES = {bool: "bool (true/false/yes/no/1/0)", int: "int", float: "float", str: "string"}


def _parse_override(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--set expects KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def _type_name(hint, article: bool = True) -> str:
    """How ``--set`` messages name a field type: "a float", "an int or none", "a tuple of ints such as 20,40"."""
    args = typing.get_args(hint)
    if type(None) in args:
        return _type_name(next(a for a in args if a is not type(None)), article) + " or none"
    if typing.get_origin(hint) is tuple:
        return ("a " if article else "") + f"tuple of {_type_name(args[0], article=False)}s such as 20,40"
    if typing.get_origin(hint) is dict:
        return ("a " if article else "") + "dict such as {'key': 1}"
    name = _TYPE_NAMES[hint]
    return (("an " if name[0] in "aeiou" else "a ") if article else "") + name


def _convert(hint, text: str):
    """``text`` as a value of type ``hint``; ValueError or SyntaxError when it does not parse as one."""
    args = typing.get_args(hint)
    if type(None) in args:  # an optional field
        if text.lower() in ("none", "null"):
            return None
        return _convert(next(a for a in args if a is not type(None)), text)
    if hint is bool:
        if text.lower() not in _TRUE + _FALSE:
            raise ValueError(text)
        return text.lower() in _TRUE
    if hint is float:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(text)
        return value
    if hint in (int, str):
        return hint(text)
    if typing.get_origin(hint) is tuple:  # 20,40 | (20,40) | [20, 40] | 20 | ()
        parts = [part.strip() for part in text.strip("()[] ").split(",")]
        return tuple(_convert(args[0], part) for part in parts if part)
    if typing.get_origin(hint) is dict:
        value = ast.literal_eval(text)
        if not isinstance(value, dict):
            raise ValueError(text)
        return value
    raise TypeError(f"--set has no parser for fields of type {hint}")  # a new field type: extend _convert


def parse_field_value(key: str, text: str) -> object:
    """``--set KEY=TEXT``: ``TEXT`` converted to the type of PiridConfig field ``KEY`` (UserError if not)."""
    hints = typing.get_type_hints(PiridConfig)
    if key in _FLAG_FIELDS:
        raise UserError(f"--set {key}: set it with {_FLAG_FIELDS[key]} instead")
    if key not in hints:
        close = difflib.get_close_matches(key, hints, n=1)
        raise UserError(f"--set {key}: unknown config field; " +
                        (f"did you mean {close[0]!r}?" if close else f"known fields: {', '.join(sorted(hints))}"))
    try:
        return _convert(hints[key], text)
    except (ValueError, SyntaxError):
        raise UserError(f"--set {key} expects {_type_name(hints[key])}, got {text!r}") from None


def _set_overrides(args: argparse.Namespace) -> dict[str, object]:
    return {key: parse_field_value(key, text) for key, text in args.set or []}


def _config_from_args(args: argparse.Namespace) -> PiridConfig:
    return get_config(args.profile, variant=args.variant, seed=args.seed, device=args.device, **_set_overrides(args))


def start_weights(cfg: PiridConfig, allow_random_init: bool) -> dict[str, object]:
    """The paper's network starts from ImageNet (§2.2): with the ``paper`` profile a missing weights file is
    a :class:`UserError` (naming the file, its folder and its URL), checked before anything is written,
    unless ``allow_random_init``; then the runs start from random weights on purpose (the overrides
    returned), and their provenance and table rows say "random init"."""
    if cfg.profile != "paper" or cfg.pretrained != "imagenet":
        return {}
    from .method.model import missing_imagenet_weights
    problem = missing_imagenet_weights(cfg.arch)
    if problem is None:
        return {}
    if not allow_random_init:
        raise UserError(f"--profile paper starts from ImageNet as the paper does, but {problem}; or pass "
                        f"--allow-random-init to train from random weights (labelled 'random init')")
    print(f"note: {problem}; --allow-random-init: starting from random weights", file=sys.stderr)
    return {"pretrained": None}


def _add_dataset_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="small",
                        help="market1501 | dukemtmc | msmt17 (need --root) or a synthetic preset: tiny | small | "
                             "market (generated on first use under data/synthetic/). Default: small")
    parser.add_argument("--root", default=None, help="folder of a real dataset (or where to put synthetic data)")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic benchmark (default 0)")


def _load_dataset(args: argparse.Namespace):
    from . import datasets
    return datasets.load(args.dataset, root=args.root, seed=args.data_seed)


def cmd_train(args: argparse.Namespace) -> int:
    cfg = _config_from_args(args)  # first: a bad --set fails before torch is imported
    cfg = cfg.replace(**start_weights(cfg, args.allow_random_init))
    from . import distributed
    from .engine.runfiles import CHECKPOINT, run_dir
    from .engine.trainer import Trainer
    from .utils import resolve_device

    ctx = distributed.init_from_env(cfg.device)  # torchrun: this rank's place; else a single process
    cfg = cfg.replace(device=distributed.device_for(ctx, cfg.device))
    device = resolve_device(cfg.device)  # once for the run; a bad --device fails before the dataset is read
    dataset = _load_dataset(args)
    out = Path(args.out) if args.out else run_dir("results", dataset.name, cfg.profile, cfg.variant, cfg.seed)
    trainer = Trainer(cfg, dataset, out, progress=not args.no_progress, ctx=ctx, device=device)
    resume_hint = _resume_command(args.argv)
    try:
        with distributed.stop_on_sigterm(ctx):
            result = trainer.fit(resume=args.resume, stop_after_epoch=args.stop_after_epoch)
    except KeyboardInterrupt:
        if args.debug or not (out / CHECKPOINT).exists():
            raise
        print(f"interrupted; resume with: {resume_hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (distributed.RankStopped, distributed.CollectiveFailed) as error:
        if args.debug:
            raise
        print(f"error: rank {ctx.rank} of {ctx.world_size}: {error}; {trainer.checkpoint_note()} — resume with "
              f"--resume and the same number of processes", file=sys.stderr)
        return EXIT_USER_ERROR
    finally:
        trainer.release()  # the DDP wrapper goes before its process group: torch deadlocks the other way round
        distributed.shutdown(ctx)
    if ctx.is_main and "stopped_after_epoch" in result:
        print(f"stopped after epoch {result['stopped_after_epoch']} as asked; resume with: {resume_hint}")
    elif ctx.is_main:
        print(json.dumps(result["metrics"], indent=2))
        print(f"run written to {out}")
    return 0


def _resume_command(argv: list[str]) -> str:
    """The command that continues this training: the same arguments, ``--resume``, no early stop."""
    kept, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--stop-after-epoch"):
            skip = arg == "--stop-after-epoch"
            continue
        kept.append(arg)
    return shlex.join(["python", "-m", "pirid_lite", *kept, *([] if "--resume" in kept else ["--resume"])])


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation.evaluate import evaluate_model
    from .engine.runfiles import load_model
    from .utils import resolve_device

    device = resolve_device(args.device)
    model, cfg = load_model(args.checkpoint, device)
    metrics = evaluate_model(model, _load_dataset(args), cfg.replace(eval_flip=args.flip, device=args.device), device)
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from . import datasets
    from .datasets.synthetic import ensure_generated
    from .notebook.viz import camera_sample_grid

    if args.preset not in datasets.SYNTHETIC_PRESET_NAMES:
        raise UserError(f"--preset {args.preset!r}: unknown synthetic preset; expected one of "
                        f"{', '.join(datasets.SYNTHETIC_PRESET_NAMES)}")
    started = time.perf_counter()
    root = ensure_generated(args.preset, seed=args.seed, root=args.root)
    print(f"synthetic '{args.preset}' benchmark (seed {args.seed}) at {root} "
          f"[{time.perf_counter() - started:.1f} s]")
    dataset = datasets.load(args.preset, root=args.root, seed=args.seed)  # prints its summary
    if args.grid:
        camera_sample_grid(dataset, path=args.grid)
        print(f"sample grid per camera saved to {args.grid}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Generate `small`, train PIRID with the cpu profile, evaluate, print R1/R5/R10/mAP."""
    from . import datasets
    from .engine.runfiles import run_dir
    from .engine.trainer import Trainer, evaluate_untrained

    started = time.perf_counter()
    dataset = datasets.load("small", seed=0)  # prints its summary
    cfg = get_config("cpu", variant="pirid", seed=args.seed)
    # under results/demo/, not results/runs/: a demo run must not enter the committed tables
    out = run_dir(Path(args.out) / "demo", dataset.name, cfg.profile, cfg.variant, cfg.seed)
    trainer = Trainer(cfg, dataset, out, progress=not args.no_progress)
    untrained = evaluate_untrained(trainer)  # the floor to read the result against
    result = trainer.fit()
    start = result["provenance"]["weights_source"]
    print(f"\nPIRID on synthetic-small (cpu profile: {cfg.arch} at {cfg.height}x{cfg.width}, {cfg.epochs} epochs; "
          f"seed {args.seed}; {result['provenance']['device']}):")
    for name, metrics in ((f"start: {start}", untrained), ("after PIRID training", result["metrics"])):
        print(f"  {name:<32}" + "  ".join(f"{k} {metrics[k]:5.1f}%" for k in ("R1", "R5", "R10", "mAP")))
    print("  Table 2 over several training seeds, with pirid-1 and the diagnostics beside it: README 'Results' and "
          "results/FINDINGS.md.")
    print(f"demo finished in {time.perf_counter() - started:.0f} s; run files in {out}")
    return 0


def _set_threads(args: argparse.Namespace) -> None:
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)


def cmd_reproduce(args: argparse.Namespace) -> int:
    from .experiments.on_datasets import load_datasets, parse_data_specs, parse_runs, reproduce_on
    from .experiments.reproduce import reproduce
    overrides = {"device": args.device, **_set_overrides(args)}
    overrides.update(start_weights(get_config(args.profile, **overrides), args.allow_random_init))
    specs = parse_data_specs(args.data or [])
    runs = parse_runs(args.runs)
    if args.runs and not specs:
        raise UserError("--runs chooses the runs of --data; without --data, reproduce runs today's plan")
    if specs and args.generalisation:
        raise UserError("--generalisation runs on synthetic instances of its own and takes no --data")
    _set_threads(args)
    if specs:  # every entry checked and every real dataset read before anything trains or is written
        datasets = load_datasets(specs)
        if not args.prepare:
            reproduce_on(datasets, args.out, args.profile, seeds=args.seeds, shard=args.shard, force=args.force,
                         overrides=overrides, runs=runs)
        return 0
    if args.prepare:  # what every shard reads, made once before the shards start (no two writers)
        from . import datasets
        datasets.load("small", verbose=False)
        return 0
    if args.generalisation:
        from .experiments.reproduce import generalise
        only = tuple(v for v in args.only.split(",") if v) or None
        print(f"generalisation table: {generalise(shard=args.shard, only=only) / 'generalisation.md'}")
        return 0
    reproduce(results_root=args.out, profile=args.profile, force=args.force, seeds=args.seeds, shard=args.shard,
              overrides=overrides)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .experiments import calibrate
    _set_threads(args)
    if args.association:
        table = calibrate.run_association_study(shard=args.shard)
        print(calibrate.association_choice(table).round(3).to_string())
        print(f"report written to {calibrate.write_report()}")
        return 0
    if args.candidate not in calibrate.CANDIDATES:
        raise UserError(f"--candidate {args.candidate!r}: expected one of {', '.join(calibrate.CANDIDATES)}")
    if args.method_settings:
        settings = tuple(v for v in args.method_settings.split(",") if v)
        table = calibrate.run_method_settings(args.candidate, settings, seeds=args.seeds, shard=args.shard)
        print(table.round(3).to_string())
        print(f"report written to {calibrate.write_report()}")
        return 0
    variants = tuple(v for v in args.variants.split(",") if v)
    table = calibrate.run_candidate(args.candidate, seeds=args.seeds, shard=args.shard, variants=variants)
    print(f"candidate {args.candidate} (validation instance, generator seed {calibrate.VALIDATION_SEED}):")
    print(table.round(3).to_string())
    print(f"report written to {calibrate.write_report()}")
    return 0


def _add_random_init_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow-random-init", action="store_true",
                        help="with --profile paper: start from random weights when the ImageNet weights file is "
                             "missing (default: refuse to start); the runs are labelled 'random init'")


def _add_batch_args(parser: argparse.ArgumentParser) -> None:
    """What every batch of runs takes (pirid_lite.experiments.runner): shards and threads."""
    parser.add_argument("--shard", default=None, metavar="I/N",
                        help="run every N-th experiment starting at I (run N such processes in parallel; with "
                             "several GPUs one each: CUDA_VISIBLE_DEVICES=I, docs/GPU.md)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of this process (default: torch's)")


def build_parser() -> argparse.ArgumentParser:
    debug_help = f"show the traceback of an error instead of one line (or set {DEBUG_ENV}=1)"
    parser = argparse.ArgumentParser(prog="python -m pirid_lite", description=__doc__)
    parser.add_argument("--debug", action="store_true", help=debug_help)
    common = argparse.ArgumentParser(add_help=False)  # --debug after the command too; SUPPRESS keeps the above
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_train, _add_evaluate, _add_generate, _add_demo, _add_reproduce, _add_calibrate):
        add(sub, common)
    return parser


def _add_train(sub, common) -> None:
    train = sub.add_parser("train", parents=[common],
                           help="train one variant and evaluate it")
    _add_dataset_args(train)
    train.add_argument("--variant", choices=VARIANTS, default="pirid",
                       help="; ".join(f"{name}: {p.description}" for name, p in POLICIES.items())
                            + " (default pirid)")
    train.add_argument("--profile", choices=PROFILES, default="cpu",
                       help="paper = §3.1 exactly (GPU); cpu = scaled down for 2 cores; test = seconds")
    train.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    train.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    train.add_argument("--out", default=None,
                       help="run folder (default results/runs/<dataset>/<profile>/<variant>/seed<N>)")
    train.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt if present")
    train.add_argument("--set", action="append", type=_parse_override, metavar="KEY=VALUE",
                       help="override any PiridConfig field, e.g. --set cluster_metric=cosine --set epochs=30")
    train.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    _add_random_init_arg(train)
    train.add_argument("--stop-after-epoch", type=int, default=None, metavar="N",
                       help="stop after N epochs, as if killed there (the checkpoint resumes with --resume)")
    train.set_defaults(func=cmd_train)


def _add_evaluate(sub, common) -> None:
    evaluate = sub.add_parser("evaluate", parents=[common],
                              help="evaluate a checkpoint (Market-1501 protocol)")
    evaluate.add_argument("--checkpoint", required=True, help="checkpoint.pt of a run")
    _add_dataset_args(evaluate)
    evaluate.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    evaluate.add_argument("--flip", action="store_true", help="average features of the image and its mirror")
    evaluate.set_defaults(func=cmd_evaluate)


def _add_generate(sub, common) -> None:
    generate = sub.add_parser("generate", parents=[common],
                              help="generate a synthetic benchmark preset and print its summary")
    generate.add_argument("--preset", default="small", help="tiny | small | market (default small)")
    generate.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    generate.add_argument("--root", default=None, help="output folder (default data/synthetic/<preset>-seed<N>)")
    generate.add_argument("--grid", default=None, help="also save a PNG grid of sample images per camera here")
    generate.set_defaults(func=cmd_generate)


def _add_demo(sub, common) -> None:
    demo = sub.add_parser("demo", parents=[common],
                          help="what `make demo` runs: small benchmark, PIRID, cpu profile")
    demo.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    demo.add_argument("--out", default="results",
                      help="results root (default results); the run goes to <out>/demo/runs/...")
    demo.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    demo.set_defaults(func=cmd_demo)


def _add_reproduce(sub, common) -> None:
    rep = sub.add_parser("reproduce", parents=[common],
                         help="run every experiment behind Tables 1-2 and results/FINDINGS.md",
                         description="Without --data: every run behind results/tables (synthetic small). With "
                                     "--data: PIRID-1, PIRID-2 and PIRID on each dataset, then Tables 1-2 beside "
                                     "the paper's numbers in <out>/tables/table{1,2}_datasets.{md,tex,csv}.")
    rep.add_argument("--data", action="append", metavar="NAME[=ROOT]",
                     help="a dataset for Tables 1-2, repeatable: market1501=ROOT | dukemtmc=ROOT | msmt17=ROOT, or a "
                          "synthetic preset alone: tiny | small | market. Default: today's plan on synthetic small")
    rep.add_argument("--runs", default="", metavar="LABELS",
                     help="with --data: the runs per dataset, comma-separated, among pirid-1, pirid-2, pirid and the "
                          "tagged pirid+paper-reading, pirid+dbscan-centred, oracle-prototypes+prototype-batches "
                          "(default: pirid-1,pirid-2,pirid)")
    rep.add_argument("--profile", choices=PROFILES, default="cpu",
                     help="paper = §3.1 exactly (GPU); cpu = scaled down for 2 cores; test = seconds (default cpu)")
    rep.add_argument("--out", default="results", help="results root (default results): runs in <out>/runs, "
                                                       "tables in <out>/tables")
    rep.add_argument("--seeds", type=int, default=None,
                     help="seeds for every variant (default: pirid_lite.experiments.reproduce.TABLE2_SEEDS per variant)")
    rep.add_argument("--force", action="store_true", help="re-run experiments whose metrics.json exists")
    rep.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    rep.add_argument("--set", action="append", type=_parse_override, metavar="KEY=VALUE",
                     help="override a PiridConfig field of every run, as for train")
    _add_random_init_arg(rep)
    _add_batch_args(rep)
    rep.add_argument("--prepare", action="store_true",
                     help="only generate the benchmark (with --data: check and read every dataset), then exit "
                          "(make reproduce runs this before its parallel shards)")
    rep.add_argument("--generalisation", action="store_true",
                     help="instead: the generalisation runs on instances 4 and 5 (results/generalisation)")
    rep.add_argument("--only", default="", help="with --generalisation: only these run labels (comma-separated)")
    rep.set_defaults(func=cmd_reproduce)


def _add_calibrate(sub, common) -> None:
    cal = sub.add_parser("calibrate", parents=[common],
                         help="run a benchmark candidate on the validation instance (baselines only)")
    cal.add_argument("--candidate", default=None, help="a name from pirid_lite.experiments.calibrate.CANDIDATES")
    cal.add_argument("--association", action="store_true",
                     help="instead: the association study (pirid_lite.experiments.calibrate.ASSOCIATION_SETTINGS over the "
                          "validation instances 1 and 2, two seeds each)")
    cal.add_argument("--seeds", type=int, default=3, help="training seeds per variant (default 3)")
    cal.add_argument("--variants", default=",".join(BASELINES),
                     help=f"comma-separated, among {', '.join(BASELINES)}")
    cal.add_argument("--method-settings", default="",
                     help="instead of the baselines: `pirid` with these open settings (comma-separated names "
                          "from pirid_lite.experiments.calibrate.METHOD_SETTINGS), to choose them on the validation instance")
    _add_batch_args(cal)
    cal.set_defaults(func=cmd_calibrate)


def main(argv: list[str] | None = None) -> int:
    """Run a command. A :class:`UserError` is printed as one ``error: …`` line on stderr and returns 2
    (``--debug`` or ``PIRID_DEBUG=1`` re-raises it with its traceback); any other exception is a bug and
    raises."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.debug = args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        return args.func(args)
    except UserError as error:
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
