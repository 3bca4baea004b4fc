"""Run every benchmark at full size, one after another: ``python -m benchmarks.run_all [--small]``.

Results are printed (and returned as one dict per benchmark); benchmarks/RESULTS.md records a run.
"""
from __future__ import annotations

from benchmarks import (bench_distributed, bench_evaluator, bench_memory_update, bench_prototypes, bench_throughput,
                        bench_trainer)
from benchmarks._common import make_parser

BENCHMARKS = {"evaluator": bench_evaluator, "memory_update": bench_memory_update,
              "prototypes": bench_prototypes, "throughput": bench_throughput, "trainer": bench_trainer, "distributed": bench_distributed}


def main(small: bool = False, threads: int | None = 1) -> dict[str, dict]:
    return {name: module.main(small=small, threads=threads) for name, module in BENCHMARKS.items()}


if __name__ == "__main__":
    parser = make_parser(__doc__)
    args = parser.parse_args()
    main(small=args.small, threads=args.threads)
