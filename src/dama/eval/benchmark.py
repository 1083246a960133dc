"""The one interface of a benchmark (`Benchmark`), and what the scorers share; the registry is `dama.eval.registry`.

A benchmark is one record: its `--bench` name; for `dama eval generate`, its decoding preset and the reader of its
question file; for `dama eval score`, the options it adds to the command line and the command that scores a
response file and writes the results. A benchmark that only generates (AMBER's query files, `generic`) or only scores
(CHAIR, the two AMBER halves) leaves the other half unset. docs/eval.md, "Adding a benchmark", walks through a new one.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from dama.errors import EXIT_PARTIAL
from dama.eval.records import question_items, write_results
from dama.io import check_writable


@dataclass(frozen=True)
class Decoding:
    """Deterministic decoding: greedy when `num_beams` is 1, beam search otherwise (no sampling: reproducible)."""

    num_beams: int = 1
    max_new_tokens: int = 1024

    def to_record(self) -> dict:
        return {"do_sample": False, "temperature": 0, **asdict(self)}


class UsageError(Exception):
    """Options that do not go together (argparse cannot say so); `dama eval score` reports it as argparse does."""


# A question file -> items {"id": str, "question": str, "image": path | base64 | {"bytes"}, "image_id"?, "where"},
# in file order; "where" ("file:line") names the item in errors.
QuestionReader = Callable[[Path], list[dict]]
# Scoring: writes the results files and returns the exit status (0, or EXIT_PARTIAL under --strict).
ScoreCommand = Callable[[argparse.Namespace], int]


@dataclass(frozen=True, kw_only=True)
class Benchmark:
    """One benchmark of `dama eval`. `decoding` and `read_questions` come together (generation), as do
    `add_arguments` and `score` (scoring)."""

    name: str  # the --bench value; also the response file name `<out>/<name>.jsonl` of `dama eval generate`
    summary: str  # one line, for --help
    decoding: Decoding | None = None  # the benchmark's reference decoding for `dama eval generate`
    read_questions: QuestionReader | None = None
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None  # the options of `dama eval score`
    score: ScoreCommand | None = None
    split: str | None = None  # the data split its results name (e.g. COCO val2014), when the scorer records one
    # the reference scorer's cleanup of an answer before scoring, and its description for the result record
    clean_answer: Callable[[str], str] | None = None
    answer_cleanup: str | None = None

    def __post_init__(self) -> None:
        if (self.decoding is None) != (self.read_questions is None):
            raise TypeError(f"benchmark {self.name!r}: decoding and read_questions go together")
        if (self.add_arguments is None) != (self.score is None):
            raise TypeError(f"benchmark {self.name!r}: add_arguments and score go together")

    @property
    def generates(self) -> bool:
        return self.read_questions is not None

    @property
    def scores(self) -> bool:
        return self.score is not None


# --- what the rule-based scorers share ---------------------------------------------------------------------------


def add_response_arguments(parser: argparse.ArgumentParser) -> None:
    """--responses, --out and --strict: every rule-based scorer takes them."""
    parser.add_argument("--responses", required=True, help="response JSONL written by `dama eval generate`")
    parser.add_argument("--out", help="folder for results (default: the folder of --responses)")
    parser.add_argument("--strict", action="store_true", help="exit with status 3 when a result is partial")


def output_folder(args: argparse.Namespace) -> Path:
    """`--out`, else the folder of `--responses`; checked writable before any scoring."""
    out = Path(args.out) if args.out else Path(args.responses).parent
    check_writable(out, "--out")
    return out


def write_outputs(outputs: list[tuple[str, dict, list[dict]]], out: Path, strict: bool) -> int:
    """Write each `(stem, result, details)`, print its headline metrics; EXIT_PARTIAL under `strict` if one is partial."""
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
    return EXIT_PARTIAL if partial and strict else 0


# --- a benchmark of its own: any question file in dama's JSONL -----------------------------------------------------

GENERIC = Benchmark(
    name="generic",
    summary="any questions: JSONL {id, question, image}",
    decoding=Decoding(num_beams=1, max_new_tokens=1024),
    read_questions=lambda path: question_items(path, ("id",), "question", "image"),
)
