"""`dama demo`: the whole DAMA pipeline on a synthetic visual world, on a CPU, DPO vs DAMA compared honestly.

    dama demo                 # DPO and DAMA frontiers in the short regime, 3 seeds (README: measured time)
    dama demo --study         # every regime (short, official recipe's shape, β 1.0) and every method; resumable
    dama demo --quick         # 2 seeds, smaller budgets, about 3 minutes (a smoke run: says nothing about who wins)
    dama demo --out DIR --seeds N

Stages: load the world's shipped CLIP and LLaVA-architecture VLM (or train them: --build-models, other presets) →
check that the base model sees and hallucinates like a real one → sample responses and label them against ground
truth (RLAIF-V style, length-matched) → `dama hardness` → per regime, DPO's pilot on validation images fixes a learning-rate grid →
every method along the grid over paired seeds → CHAIR on held-out test images → recall–CHAIR_i frontiers compared
with DPO at matched recall, validity checks and a computed verdict per regime in report.md, with plots
(docs/demo.md). Every finished run is kept in DIR/store under a key of its settings: a killed demo or study run
again with the same command continues where it stopped, and runs made with other settings are never reused.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
from pathlib import Path

from dama.errors import positive_int
from dama.io import check_writable


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="dama demo",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("--quick", action="store_true", help="smaller budgets, 2 seeds, about 3 minutes (a smoke run)")
    parser.add_argument(
        "--study", action="store_true", help="every regime and every method (about 71 min on 2 cores); resumable"
    )
    parser.add_argument(
        "--out",
        default=None,
        help="output folder for the report and the run store (default: runs/demo, --study: runs/demo-study)",
    )
    parser.add_argument("--seeds", type=positive_int, default=None, help="alignment seeds (default: 3, quick: 2)")
    parser.add_argument(
        "--methods",
        default=None,
        help="comma-separated methods to run (default: DPO,DAMA; --study: all of them); DPO and DAMA "
        "are always among them (DPO's pilot fixes the grid, the verdict compares DAMA with DPO)",
    )
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="where the world's models are cached (default: $DAMA_CACHE/demo or ~/.cache/dama/demo)",
    )
    parser.add_argument(
        "--build-models",
        action="store_true",
        help="train the world's CLIP and VLM on this machine (cached) instead of loading the shipped copy; a build "
        'differs across CPU types (docs/demo.md, "The world\'s models")',
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="alignment runs side by side, one thread each (default: the usable CPUs, at most 8); the numbers do "
        "not depend on it",
    )
    parser.add_argument("--preset", choices=["full", "quick", "tiny"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.study and args.quick:
        parser.error("--study and --quick cannot be combined: the study runs the full preset's budgets")
    if args.preset is not None and args.quick:
        parser.error(f"--quick and --preset {args.preset} cannot be combined: each names the budgets")
    if args.preset == "tiny" and args.seeds is not None:
        parser.error("--seeds does not apply to --preset tiny, which always runs seeds 0 and 1")
    if args.out is None:
        args.out = "runs/demo-study" if args.study else "runs/demo"
    methods = _methods(parser, args.methods)
    check_writable(args.out, "--out")  # before minutes of work, not at the report
    if args.cache_dir is not None:
        check_writable(args.cache_dir, "--cache-dir")

    import torch

    from dama.demo.console import quiet_libraries
    from dama.demo.experiment import ExperimentConfig, run_experiment
    from dama.demo.pool import usable_cpus
    from dama.demo.report import write_report

    preset = args.preset or ("quick" if args.quick else "full")
    if preset == "tiny":
        cfg = ExperimentConfig.tiny(study=args.study)
    elif preset == "quick":
        cfg = ExperimentConfig.quick(seeds=args.seeds or 2)
    elif args.study:
        cfg = ExperimentConfig.study(seeds=args.seeds or 3)
    else:
        cfg = ExperimentConfig.full(seeds=args.seeds or 3)
    if methods is not None:
        cfg = dataclasses.replace(cfg, methods=methods)
    if args.build_models:
        cfg = dataclasses.replace(cfg, shipped_models=False)
    torch.manual_seed(0)
    out = Path(args.out)
    start = time.perf_counter()
    with quiet_libraries():  # the demo's own lines and bar only; restored on exit (never for `dama train`)
        summary = run_experiment(cfg, out, args.cache_dir, workers=args.workers or min(usable_cpus(), 8))
        report = write_report(summary, out, "dama demo " + shlex.join(argv), time.perf_counter() - start)
    print(f"[demo] done in {(time.perf_counter() - start) / 60:.1f} min — report: {report.resolve()}")
    return 0


def _methods(parser: argparse.ArgumentParser, text: str | None) -> tuple[str, ...] | None:
    """`--methods` as a tuple in the study's order, or a usage error naming the unknown or missing ones."""
    if text is None:
        return None
    from dama.demo.experiment import STUDY_METHODS

    asked = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in asked if name not in STUDY_METHODS]
    if unknown:
        parser.error(f"--methods: unknown {', '.join(map(repr, unknown))}; choose from {', '.join(STUDY_METHODS)}")
    missing = [name for name in ("DPO", "DAMA") if name not in asked]
    if missing:
        parser.error(
            f"--methods must include {' and '.join(missing)} (DPO's pilot fixes each regime's grid and the "
            "verdict compares DAMA with DPO)"
        )
    return tuple(name for name in STUDY_METHODS if name in asked)


if __name__ == "__main__":
    sys.exit(main())
