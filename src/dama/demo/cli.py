"""`dama demo`: the whole DAMA pipeline on a synthetic visual world, on a CPU, DPO vs DAMA compared honestly.

    dama demo                 # full run: 5 seeds, about 10–20 minutes on 2 CPU cores (README: measured time)
    dama demo --quick         # 2 seeds, smaller budgets, about 3 minutes (a smoke run: says nothing about who wins)
    dama demo --out DIR --seeds N

Stages: build (or load from the cache) a CLIP and a LLaVA-architecture VLM trained on the world → check that the
base model sees and hallucinates like a real one → sample responses and label them against ground truth (RLAIF-V
style, length-matched) → `dama hardness` → a learning-rate sweep per method on validation images → DPO, DAMA,
data-aware only, model-aware only over the seeds → CHAIR on held-out test images → paired DAMA − DPO intervals,
validity checks and a computed verdict in report.md, with plots (docs/demo.md).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from dama.errors import positive_int
from dama.io import check_writable


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="dama demo", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="smaller budgets, 2 seeds, about 3 minutes (a smoke run)")
    parser.add_argument("--out", default="runs/demo", help="output folder for the report (default: runs/demo)")
    parser.add_argument("--seeds", type=positive_int, default=None, help="alignment seeds (default: 5, quick: 2)")
    parser.add_argument("--cache-dir", default=None,
                        help="where the world's models are cached (default: $DAMA_CACHE/demo or ~/.cache/dama/demo)")
    parser.add_argument("--preset", choices=["full", "quick", "tiny"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    check_writable(args.out, "--out")  # before minutes of work, not at the report
    if args.cache_dir is not None:
        check_writable(args.cache_dir, "--cache-dir")

    import torch

    from dama.demo.experiment import ExperimentConfig, run_experiment
    from dama.demo.report import write_report

    preset = args.preset or ("quick" if args.quick else "full")
    if preset == "tiny":
        cfg = ExperimentConfig.tiny()
    elif preset == "quick":
        cfg = ExperimentConfig.quick(seeds=args.seeds or 2)
    else:
        cfg = ExperimentConfig.full(seeds=args.seeds or 5)
    torch.manual_seed(0)
    out = Path(args.out)
    start = time.perf_counter()
    summary = run_experiment(cfg, out, args.cache_dir)
    report = write_report(summary, out, "dama demo " + shlex.join(argv), time.perf_counter() - start)
    print(f"[demo] done in {(time.perf_counter() - start) / 60:.1f} min — report: {report.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
