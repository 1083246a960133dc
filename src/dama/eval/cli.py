"""`dama eval`: generate answers, score them, compare runs (docs/eval.md).

    dama eval generate --bench object-halbench --questions q.jsonl --model PATH --out runs/dama
    dama eval score --bench object-halbench --responses runs/dama/object-halbench.jsonl --questions q.jsonl \\
        --coco-annotations coco/annotations [--mode rule|llm|both --judge SPEC]
    dama eval score --bench pope --responses runs/dama/pope.jsonl --questions coco_pope_random.json
    dama eval score --bench amber-g --responses runs/dama/amber.jsonl --amber-dir AMBER/data
    dama eval compare runs/base runs/dpo runs/dama [--out table.md]

`score` options depend on `--bench`; `dama eval score --bench BENCH --help` lists them. Rule-based scorers write
`<out>/<bench>[_<split|mode>].metrics.json` and a `.details.jsonl` sidecar; `--out` defaults to the folder of
`--responses`, so a run folder collects its results for `compare`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from dama.errors import EXIT_PARTIAL, is_user_error
from dama.eval.records import RecordError, write_results
from dama.io import atomic_write_text, check_writable

RULE_BENCHES = ("chair", "object-halbench", "amber-g", "amber-d", "pope")
JUDGED_BENCHES = ("mmhal", "llava-bench", "mmvet")
BENCHES = RULE_BENCHES + JUDGED_BENCHES


def _score_parser(bench: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dama eval score", description="score a response file on one benchmark")
    parser.add_argument("--bench", required=True, choices=BENCHES, help="benchmark to score")
    if bench in JUDGED_BENCHES:
        from dama.eval import judged

        judged.add_arguments(parser)
        return parser
    parser.add_argument("--responses", required=True, help="response JSONL written by `dama eval generate`")
    parser.add_argument("--out", help="folder for results (default: the folder of --responses)")
    parser.add_argument("--strict", action="store_true", help="exit with status 3 when a result is partial")
    if bench in ("chair", "object-halbench"):
        parser.add_argument(
            "--coco-annotations", required=True, help="folder with instances_val2014.json + captions_val2014.json"
        )
        parser.add_argument(
            "--questions", help="Object HalBench question JSONL; needed to detect missing responses (partial results)"
        )
        parser.add_argument("--mode", choices=("rule", "llm", "both"), default="rule", help="object extraction mode")
        parser.add_argument("--judge", help="llm mode: openai:MODEL[@BASE_URL], hf:/path/to/causal-lm or fake[:SEED]")
        parser.add_argument("--judge-cache", help="llm mode: judge cache folder (default: judge_cache/ next to --out)")
        parser.add_argument(
            "--prompt",
            choices=("rlaif-v", "dama-v1"),
            default="rlaif-v",
            help="llm mode: extraction prompt; rlaif-v (default, RLAIF-V's, as a system message) or dama-v1",
        )
        parser.add_argument(
            "--tagger",
            choices=("auto", "spacy", "approx"),
            default="auto",
            help="llm mode: POS tagger for reducing listed names; spacy (en_core_web_trf, the reference), approx "
            "(offline approximation) or auto (spacy when installed, else approx; recorded in the results)",
        )
        parser.add_argument(
            "--synonyms",
            default="chair-refined-v1",
            help="chair-refined-v1 (default), chair-original, or a file of 'class, synonym, ...' lines",
        )
        parser.add_argument("--cache-dir", help="ground-truth cache folder (default: ~/.cache/dama/coco)")
    elif bench in ("amber-g", "amber-d"):
        parser.add_argument(
            "--amber-dir", required=True, help="AMBER data folder (annotations.json, relation.json, ...)"
        )
        parser.add_argument(
            "--extraction",
            choices=("auto", "reference", "vocab-match"),
            default="auto",
            help="amber-g nouns: reference (AMBER's inference.py exactly; needs the eval-reference extra and its data), "
            "vocab-match (offline approximation) or auto (reference when installed; recorded in the results)",
        )
        parser.add_argument(
            "--similarity",
            choices=("none", "spacy"),
            help="word-similarity backend for vocab-match (default none; reference always uses spaCy)",
        )
    elif bench == "pope":
        parser.add_argument("--questions", required=True, help="POPE question file (JSONL: question_id, text, label)")
        parser.add_argument(
            "--split", choices=("random", "popular", "adversarial"), help="default: from the file name"
        )
    return parser


def _engine(spec: str):
    from dama.eval.chair import VERSIONS, ChairEngine

    if spec in VERSIONS:
        return ChairEngine(version=spec)
    path = Path(spec)
    if not path.is_file():
        raise RecordError(f"--synonyms {spec!r}: neither {', '.join(VERSIONS)} nor a file")
    return ChairEngine(synonym_lines=path.read_text(encoding="utf-8").splitlines())


def _score(argv: list[str]) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--bench", choices=BENCHES)
    known, _ = pre.parse_known_args(argv)
    parser = _score_parser(known.bench)
    args = parser.parse_args(argv)
    if args.bench in JUDGED_BENCHES:
        from dama.eval import judged

        return int(judged.run(args) or 0)
    out = Path(args.out) if args.out else Path(args.responses).parent
    check_writable(out, "--out")
    outputs = []
    if args.bench in ("chair", "object-halbench"):
        from dama.eval.coco import CocoGroundTruth
        from dama.eval.object_halbench import build_tagger, score_responses

        modes = ("rule", "llm") if args.mode == "both" else (args.mode,)
        judge = None
        if "llm" in modes and not args.judge:
            parser.error("--mode llm/both needs --judge")
        from dama.eval.judge import JudgeError, build_judge  # standard library only: cheap to import

        try:
            if "llm" in modes:
                judge = build_judge(args.judge, args.judge_cache or str(out / "judge_cache"))
            engine = _engine(args.synonyms)
            ground_truth = CocoGroundTruth(args.coco_annotations, engine, args.cache_dir)
            outputs = score_responses(
                args.responses,
                engine,
                ground_truth,
                bench=args.bench,
                questions_path=args.questions,
                modes=modes,
                judge=judge,
                prompt=args.prompt,
                tagger=build_tagger(args.tagger, engine) if "llm" in modes else None,
            )
        except JudgeError as err:  # a judge that cannot answer (bad spec, endpoint down): a message, not a traceback
            raise RecordError(f"judge {args.judge!r}: {err}") from err
    elif args.bench in ("amber-g", "amber-d"):
        from dama.eval import amber

        similarity = amber.build_similarity(args.similarity) if args.similarity else None
        outputs = [amber.score(args.responses, args.amber_dir, args.bench[-1], similarity, args.extraction)]
    elif args.bench == "pope":
        from dama.eval import pope

        outputs = [pope.score(args.responses, args.questions, args.split)]
    partial = False
    for stem, result, details in outputs:
        path = write_results(out, stem, result, details)
        shown = {k: round(v, 2) if isinstance(v, float) else v for k, v in result["metrics"].items()}
        print(f"{stem}: {json.dumps(shown)} -> {path}")
        if result.get("partial"):
            partial = True
            print(
                f"warning: {stem} is partial: {result.get('n_missing', 0)} response(s) missing"
                + (f", {result['n_judge_failures']} judge failure(s)" if result.get("n_judge_failures") else ""),
                file=sys.stderr,
            )
    return EXIT_PARTIAL if partial and args.strict else 0


def _compare(argv: list[str]) -> int:
    from dama.eval.compare import compare_table

    parser = argparse.ArgumentParser(prog="dama eval compare", description="side-by-side table of run folders")
    parser.add_argument("runs", nargs="+", help="run folders holding results files")
    parser.add_argument("--out", help="also write the markdown table to this file")
    parser.add_argument("--all-metrics", action="store_true", help="include counts (n_*, tp/fp/tn/fn)")
    parser.add_argument(
        "--refuse-mixed",
        action="store_true",
        help="error out when a row's scoring settings (extraction, judge, prompt, synonyms) differ between runs "
        "(default: mark the row with ≠ and list the differences)",
    )
    args = parser.parse_args(argv)
    table = compare_table(args.runs, all_metrics=args.all_metrics, mixed="refuse" if args.refuse_mixed else "mark")
    print(table, end="")
    if args.out:
        atomic_write_text(args.out, table)
    return 0


def _generate(argv: list[str]) -> int:
    from dama.eval import generate

    parser = argparse.ArgumentParser(prog="dama eval generate", description="answer a benchmark's questions")
    generate.add_arguments(parser)
    return int(generate.run(parser.parse_args(argv)) or 0)


COMMANDS = {"generate": _generate, "score": _score, "compare": _compare}


def main(argv: list[str]) -> int:
    """Entry point of `dama eval`; returns the exit status (2 for bad input, with a message naming file and line)."""
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"dama eval: unknown subcommand {command!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    from dama.eval.judge import JudgeError

    try:
        return COMMANDS[command](rest)
    except (RecordError, ValueError, OSError) as err:
        if os.environ.get("DAMA_DEBUG", "") not in {"", "0"} or (isinstance(err, OSError) and not is_user_error(err)):
            raise  # `dama --debug eval ...` sets DAMA_DEBUG: the traceback is wanted
        print(f"dama eval {command}: error: {err}", file=sys.stderr)
        return 2
    except JudgeError as err:  # the judge (endpoint or model) failed: not bad input, but no traceback either
        print(f"dama eval {command}: judge error: {err}", file=sys.stderr)
        return 1
