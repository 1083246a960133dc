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

Exit codes (docs/errors.md): 0 done, 2 bad input or options, 3 a partial result under `score --strict`, 4 a judge
that could not answer (its replies so far are cached: a rerun continues).
"""

from __future__ import annotations

import argparse
import sys

from dama.errors import EXIT_USER_ERROR
from dama.eval.benchmark import UsageError, add_response_arguments
from dama.eval.registry import BENCHMARKS, score_names
from dama.io import atomic_write_text


def _score_parser(bench: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dama eval score", description="score a response file on one benchmark")
    parser.add_argument("--bench", required=True, choices=score_names(), help="benchmark to score")
    if bench is None:  # no (valid) --bench yet: the options every scorer has, for the usage message
        add_response_arguments(parser)
    else:
        BENCHMARKS[bench].add_arguments(parser)
    return parser


def _score(argv: list[str]) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--bench", choices=score_names())
    known, _ = pre.parse_known_args(argv)
    parser = _score_parser(known.bench)
    args = parser.parse_args(argv)
    try:
        return int(BENCHMARKS[args.bench].score(args) or 0)
    except UsageError as err:
        parser.error(str(err))


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


# the dispatcher (`dama.cli`) names the subcommand in its error line: `dama eval score: error: ...`
SUBCOMMANDS = {"generate": _generate, "score": _score, "compare": _compare}


def main(argv: list[str]) -> int:
    """Entry point of `dama eval`; returns the exit status (0, or 3 for a partial result under `score --strict`).

    Errors are not caught here: a user error (a `DamaError`, e.g. `RecordError` naming the file and line, or the
    judge's `LLMError`) reaches the dispatcher in `dama.cli`, which prints it with the error's exit code; anything
    else is a bug and keeps its traceback.
    """
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in SUBCOMMANDS:
        print(f"dama eval: unknown subcommand {command!r}; choose from {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return EXIT_USER_ERROR
    return SUBCOMMANDS[command](rest)
