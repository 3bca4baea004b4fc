"""Command line: ``python -m pirid_lite {train,evaluate,generate,demo,reproduce} --help``."""
from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from pathlib import Path

from .config import PROFILES, VARIANTS, PiridConfig, get_config


def _parse_override(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--set expects KEY=VALUE, got {text!r}")
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value  # plain strings such as cosine
    return key.strip(), parsed


def _config_from_args(args: argparse.Namespace) -> PiridConfig:
    overrides = dict(args.set or [])
    known = set(PiridConfig.__dataclass_fields__)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise SystemExit(f"error: --set got unknown config field(s) {unknown}; known: {sorted(known)}")
    return get_config(args.profile, variant=args.variant, seed=args.seed, device=args.device, **overrides)


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
    from .results import run_dir
    from .trainer import Trainer

    cfg = _config_from_args(args)
    dataset = _load_dataset(args)
    out = Path(args.out) if args.out else run_dir("results", dataset.name, cfg.profile, cfg.variant, cfg.seed)
    result = Trainer(cfg, dataset, out, progress=not args.no_progress).fit(resume=args.resume)
    print(json.dumps(result["metrics"], indent=2))
    print(f"run written to {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    path = Path(args.checkpoint)
    if not path.is_file():
        raise SystemExit(f"error: checkpoint {path} does not exist (expected a checkpoint.pt written by `train`)")
    import torch

    from .evaluate import evaluate_model
    from .model import build_model
    from .utils import resolve_device

    state = torch.load(path, map_location="cpu", weights_only=False)
    if "model" not in state or "config" not in state:
        raise SystemExit(f"error: {path} is not a pirid_lite checkpoint (missing 'model'/'config' entries)")
    cfg = PiridConfig.from_dict({**state["config"], "pretrained": None, "device": args.device})
    model = build_model(cfg)
    model.load_state_dict(state["model"])
    device = resolve_device(args.device)
    metrics = evaluate_model(model.to(device), _load_dataset(args), cfg.replace(eval_flip=args.flip), device)
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from . import datasets
    from .datasets.synthetic import ensure_generated
    from .viz import camera_sample_grid

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
    from .results import run_dir
    from .trainer import Trainer

    started = time.perf_counter()
    dataset = datasets.load("small", seed=0)  # prints its summary
    cfg = get_config("cpu", variant="pirid", seed=args.seed)
    # under results/demo/, not results/runs/: a demo run must not enter the committed tables
    out = run_dir(Path(args.out) / "demo", dataset.name, cfg.profile, cfg.variant, cfg.seed)
    trainer = Trainer(cfg, dataset, out, progress=not args.no_progress)
    trainer.setup()
    untrained = trainer.evaluate()  # the floor to read the result against (fit() re-seeds and rebuilds)
    result = trainer.fit()
    print(f"\nPIRID on synthetic-small (cpu profile, seed {args.seed}, {result['provenance']['device']}):")
    for name, metrics in (("untrained network", untrained), ("after training", result["metrics"])):
        print(f"  {name:<18}" + "  ".join(f"{k} {metrics[k]:5.1f}%" for k in ("R1", "R5", "R10", "mAP")))
    print("  From random weights in 15 epochs, PIRID with the paper's τ = 0.01 stays near the untrained network on\n"
          "  this benchmark (README 'Results': 4.8 ± 2.7 mAP over 3 seeds); results/FINDINGS.md explains why.")
    print(f"demo finished in {time.perf_counter() - started:.0f} s; run files in {out}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from .reproduce import reproduce
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    if args.prepare:  # what every shard reads, made once before the shards start (no two writers)
        from . import datasets
        from .reproduce import source_weights
        datasets.load("small", verbose=False)
        print(f"source weights for the 'pretrained' group: {source_weights(args.out)}")
        return 0
    reproduce(results_root=args.out, only=args.only, force=args.force, seeds=args.seeds, shard=args.shard)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pirid_lite", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train one variant and evaluate it")
    _add_dataset_args(train)
    train.add_argument("--variant", choices=VARIANTS, default="pirid",
                       help="pirid (full) | pirid-1 (L_intra only) | pirid-2 (no triplet) | supervised | "
                            "oracle-prototypes (default pirid)")
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
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="evaluate a checkpoint (Market-1501 protocol)")
    evaluate.add_argument("--checkpoint", required=True, help="checkpoint.pt of a run")
    _add_dataset_args(evaluate)
    evaluate.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    evaluate.add_argument("--flip", action="store_true", help="average features of the image and its mirror")
    evaluate.set_defaults(func=cmd_evaluate)

    generate = sub.add_parser("generate", help="generate a synthetic benchmark preset and print its summary")
    generate.add_argument("--preset", default="small", help="tiny | small | market (default small)")
    generate.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    generate.add_argument("--root", default=None, help="output folder (default data/synthetic/<preset>-seed<N>)")
    generate.add_argument("--grid", default=None, help="also save a PNG grid of sample images per camera here")
    generate.set_defaults(func=cmd_generate)

    demo = sub.add_parser("demo", help="what `make demo` runs: small benchmark, PIRID, cpu profile")
    demo.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    demo.add_argument("--out", default="results",
                      help="results root (default results); the run goes to <out>/demo/runs/...")
    demo.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    demo.set_defaults(func=cmd_demo)

    rep = sub.add_parser("reproduce", help="run every experiment behind Tables 1-2 and FINDINGS.md")
    rep.add_argument("--out", default="results", help="results root (default results)")
    rep.add_argument("--only", default=None, help="comma-separated experiment groups to run (default all)")
    rep.add_argument("--seeds", type=int, default=3, help="seeds per variant (default 3)")
    rep.add_argument("--force", action="store_true", help="re-run experiments whose metrics.json exists")
    rep.add_argument("--shard", default=None, metavar="I/N",
                     help="run every N-th experiment starting at I (run N such processes in parallel)")
    rep.add_argument("--threads", type=int, default=None, help="torch threads of this process (default: torch's)")
    rep.add_argument("--prepare", action="store_true",
                     help="only generate the benchmark and train the 'pretrained' group's source model, then exit "
                          "(make reproduce runs this before its parallel shards)")
    rep.set_defaults(func=cmd_reproduce)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
