"""Judge-based scorers: MMHal-Bench, LLaVA-Bench (in-the-wild, qa90) and MM-Vet (`docs/eval-judges.md`).

Each benchmark is one record (`JudgedBenchmark`, at the end of this module): its annotation loader, prompt template,
reply parser and metrics, written in `judged_rubrics.py` with the benchmarks' papers. They share one loop, here: ask
the judge; if the reply cannot be parsed, re-ask (the previous reply is quoted and the format restated); if it still
cannot, flag the item. Flagged items are listed in the results and never averaged in. The options (`add_arguments`)
and the results file (`run`) are shared too.

The prompt templates are ours, so numbers are labelled with the judge id and `prompt_version`, and should be compared
only with numbers carrying the same labels.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from dama.eval.benchmark import Benchmark, Decoding
from dama.eval.judge import CachedJudge, Judge, build_judge
from dama.eval.judged_rubrics import (
    fill_llava,
    fill_mmhal,
    fill_mmvet,
    llava_metrics,
    load_llava_bench,
    load_mmhal,
    load_mmvet,
    mmhal_metrics,
    mmvet_metrics,
    parse_llava,
    parse_mmhal,
    parse_mmvet,
    read_mmhal_questions,
    read_mmvet_questions,
)
from dama.eval.records import (
    RecordError,
    completeness,
    match_ids,
    question_items,
    run_metadata,
    write_results,
)
from dama.eval.records import load_responses as load_responses_file
from dama.llm import LLMError, LLMSetupError


def build_prompt(bench: str, item: dict, response: str) -> str:
    return JUDGED[bench].fill(item, response)


# --- responses ---------------------------------------------------------------------------------------------------


def load_responses(path: str | Path, bench: str, items: dict[str, dict]) -> tuple[dict[str, str], dict]:
    """id -> response from a `dama eval generate` file, plus its run metadata (model, decoding).

    Duplicate ids, rows without a string `response`, ids not in the annotations and rows of another benchmark are
    errors naming the file and line; mixed models or decoding settings are refused (one run per results file).
    """
    rows = load_responses_file(path)
    for row in rows.values():
        if row.get("bench") not in (None, bench):
            raise RecordError(f"{row['_where']}: response is for bench {row['bench']!r}, but scoring {bench!r}")
    present = match_ids(list(items), rows, path, "the question/annotation file")
    return {key: rows[key]["response"] for key in present}, run_metadata(list(rows.values()), path)


# --- the shared judge loop and the metrics -------------------------------------------------------------------------


@dataclass
class Verdict:
    value: Any
    replies: list[str]
    problem: str | None


def ask(judge: Judge, bench: str, prompt: str, reasks: int) -> Verdict:
    """Ask, parse, and re-ask up to `reasks` times quoting the unreadable reply; `value` is None when flagged."""
    benchmark = JUDGED[bench]
    parse, replies, current = benchmark.parse, [], prompt
    for _ in range(reasks + 1):
        reply = judge.complete(current)
        replies.append(reply)
        parsed = parse(reply)
        if not isinstance(parsed, str):
            return Verdict(parsed, replies, None)
        current = (
            f"{prompt}\n\nYour previous reply was:\n{reply}\n\nIt could not be read ({parsed}). "
            f"Answer again and {benchmark.format_hint}."
        )
    return Verdict(None, replies, parsed)


def metrics_for(bench: str, values: dict[str, Any], items: dict[str, dict]) -> dict:
    """The benchmark's metrics from parsed judge values (flagged items already left out).

    Flat keys, `metric` overall and `metric/group` per question type, category or capability, so `dama eval compare`
    can put them in one table.
    """
    return JUDGED[bench].metrics(values, items)


def score(
    bench: str,
    items: dict[str, dict],
    responses: dict[str, str],
    judge: Judge,
    reasks: int = 2,
    progress=None,
    workers: int = 1,
) -> tuple[dict, list[dict]]:
    """Judge every answered item. Returns (result fields: counts, flags, partial, metrics; per-item detail rows).

    `workers` > 1 asks several items at once (for HTTP judges, whose latency dominates); results keep file order.
    """
    ids = list(responses)
    prompts = {qid: build_prompt(bench, items[qid], responses[qid]) for qid in ids}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        verdicts = pool.map(lambda qid: ask(judge, bench, prompts[qid], reasks), ids)
        verdicts = list(progress(verdicts) if progress else verdicts)
    values, details, flagged = {}, [], []
    for qid, verdict in zip(ids, verdicts):
        if verdict.value is None:
            flagged.append(qid)
        else:
            values[qid] = verdict.value
        details.append(
            {
                "id": qid,
                "group": items[qid]["group"],
                "value": verdict.value,
                "flagged": verdict.value is None,
                "problem": verdict.problem,
                "judge_replies": verdict.replies,
                "prompt_sha256": hashlib.sha256(prompts[qid].encode("utf-8")).hexdigest(),
            }
        )
    result = completeness(list(items), list(responses))
    # an item the judge could not rate is as absent from the metrics as a missing response
    result.update(
        partial=result["partial"] or bool(flagged),
        n_scored=len(values),
        n_flagged=len(flagged),
        flagged_ids=flagged,
        metrics=metrics_for(bench, values, items),
    )
    return result, details


# --- command line -----------------------------------------------------------------------------------------------


def _add(parser: argparse.ArgumentParser, *flags: str, **kwargs) -> None:
    """Add an option unless the calling CLI already defines it (e.g. a `--bench` shared with rule-based scorers)."""
    if not any(flag in parser._option_string_actions for flag in flags):
        parser.add_argument(*flags, **kwargs)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _add(parser, "--bench", required=True, choices=BENCHES, help="judge-based benchmark")
    _add(parser, "--responses", required=True, help="JSONL written by `dama eval generate`")
    _add(parser, "--judge", help="openai:MODEL[@BASE_URL], hf:/path/to/causal-lm, or fake[:SEED] (tests)")
    _add(
        parser,
        "--questions",
        help="annotations: MMHal response_template.json, LLaVA-Bench questions JSONL, or MM-Vet mm-vet.json",
    )
    _add(parser, "--answers", help="LLaVA-Bench: reference answers JSONL {question_id, text}")
    _add(parser, "--context", help="LLaVA-Bench: captions JSONL {image, caption|captions, instances?}")
    _add(parser, "--split", help="label for the results (LLaVA-Bench: in-the-wild, the default, or qa90)")
    _add(parser, "--out", help="folder for results (default: the folder of --responses)")
    _add(parser, "--judge-cache", help="judge cache folder (default: judge_cache/ in --out)")
    _add(parser, "--judge-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    _add(parser, "--judge-retries", type=int, default=5, help="retries on HTTP errors and timeouts (backoff 1,2,4 s)")
    _add(parser, "--judge-timeout", type=float, default=60.0, help="seconds per HTTP request")
    _add(parser, "--judge-max-tokens", type=int, default=1024, help="reply length limit for the judge")
    _add(parser, "--judge-workers", type=int, default=1, help="items judged at once (HTTP judges; replies are cached)")
    _add(parser, "--reasks", type=int, default=2, help="re-asks after an unparsable reply before the item is flagged")
    _add(parser, "--strict", action="store_true", help="exit with status 3 when the result is partial")


def run(args: argparse.Namespace) -> int:
    """`dama eval score --bench {mmhal,llava-bench,mmvet}`: writes `<out>/<bench>[_<split>].<judge>.metrics.json`."""
    bench = args.bench
    if bench not in JUDGED:
        raise RecordError(f"--bench {bench!r} is not judge-based; judge-based benchmarks: {', '.join(BENCHES)}")
    benchmark = JUDGED[bench]
    if not args.judge:
        raise RecordError(f"--bench {bench} needs --judge (e.g. openai:gpt-4o-mini, hf:/path/to/model)")
    if not args.questions:
        raise RecordError(f"--bench {bench} needs --questions (the benchmark's question/annotation file)")
    items = benchmark.load_items(args)
    responses, meta = load_responses(args.responses, bench, items)
    out = Path(args.out) if args.out else Path(args.responses).parent
    try:
        judge = build_judge(
            args.judge,
            args.judge_cache or out / "judge_cache",
            api_key_env=args.judge_key_env,
            retries=args.judge_retries,
            timeout=args.judge_timeout,
            max_tokens=args.judge_max_tokens,
        )
        result, details = score(
            bench,
            items,
            responses,
            judge,
            reasks=args.reasks,
            progress=lambda xs: tqdm(xs, total=len(responses), desc=f"judging {bench}"),
            workers=args.judge_workers,
        )
    except LLMSetupError:
        raise
    except LLMError as err:  # the endpoint could not answer (exit code 4): nothing received so far is lost
        raise LLMError(f"{err}; replies received so far are cached, so a rerun continues from there") from err
    split = args.split or benchmark.default_split
    result = {
        "benchmark": bench,
        "split": split,
        **meta,
        "judge_id": judge.judge_id,
        "prompt_version": benchmark.prompt_version,
        "units": benchmark.units,
        "annotations": {"questions_file": Path(args.questions).name, "sha256": _sha256_file(args.questions)},
        "responses_file": str(args.responses),
        **result,
    }
    if isinstance(judge, CachedJudge):
        result["judge_calls"] = {"new": judge.calls, "cached": judge.hits}
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", judge.judge_id).strip("_")[:60]
    stem = f"{bench}_{split}.{slug}" if split else f"{bench}.{slug}"
    path = write_results(out, stem, result, details)
    if result["partial"]:
        print(
            f"warning: {bench} is partial: {result['n_missing']} response(s) missing, {result['n_flagged']} judge "
            f"reply(ies) unparsable after re-asks (flagged, left out): {result['flagged_ids'][:20]}",
            file=sys.stderr,
        )
    shown = {k: round(v, 2) for k, v in result["metrics"].items() if "/" not in k and isinstance(v, float)}
    print(f"{stem}: {shown} -> {path}")
    return 3 if result["partial"] and args.strict else 0


def _sha256_file(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --- the benchmark records ------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class JudgedBenchmark(Benchmark):
    """A judge-scored benchmark: how its annotations are read, its judge prompt, reply format and metrics. The judge
    loop (`score`), the options (`add_arguments`) and the results file (`run`) are shared."""

    prompt_version: str  # recorded with every result: numbers compare only under the same prompt
    units: str
    load_items: Callable[[argparse.Namespace], dict[str, dict]]  # annotations: id -> {prompt fields, "group"}
    fill: Callable[[dict, str], str]  # (annotation item, response) -> judge prompt
    parse: Callable[[str], Any]  # judge reply -> value, or a string saying what is wrong
    format_hint: str  # restated when a reply cannot be parsed ("Answer again and ...")
    metrics: Callable[[dict[str, Any], dict[str, dict]], dict]
    default_split: str | None = None
    decoding: Decoding | None = Decoding(num_beams=1, max_new_tokens=1024)
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = add_arguments
    score: Callable[[argparse.Namespace], int] | None = run


def _llava_items(args: argparse.Namespace) -> dict[str, dict]:
    if not (args.answers and args.context):
        raise RecordError("--bench llava-bench needs --answers (reference answers) and --context (captions)")
    return load_llava_bench(args.questions, args.answers, args.context)


MMHAL = JudgedBenchmark(
    name="mmhal",
    summary="MMHal-Bench: judge rating 0-6 and hallucination rate",
    read_questions=read_mmhal_questions,
    prompt_version="dama-mmhal-v1",
    units="score: mean judge rating 0-6; hallucination_rate: fraction 0-1 of ratings below 3",
    load_items=lambda args: load_mmhal(args.questions),
    fill=fill_mmhal,
    parse=parse_mmhal,
    format_hint='end with one line "Rating: <k>", with <k> a single integer from 0 to 6',
    metrics=mmhal_metrics,
)
LLAVA_BENCH = JudgedBenchmark(
    name="llava-bench",
    summary="LLaVA-Bench (in-the-wild, qa90): judge score relative to the reference answers",
    read_questions=lambda path: question_items(path, ("question_id",), "text", "image"),  # {question_id, image, text}
    prompt_version="dama-llava-bench-v1",
    units="relative_score: percent of the reference answers' mean; *_mean: judge scores 1-10",
    load_items=_llava_items,
    fill=fill_llava,
    parse=parse_llava,
    format_hint="write the two scores (integers from 1 to 10, Assistant 1 first) separated by a space, alone on the "
    "first line",
    metrics=llava_metrics,
    default_split="in-the-wild",
)
MMVET = JudgedBenchmark(
    name="mmvet",
    summary="MM-Vet: judge correctness per capability",
    read_questions=read_mmvet_questions,
    prompt_version="dama-mmvet-v1",
    units="percent (mean correctness x 100)",
    load_items=lambda args: load_mmvet(args.questions),
    fill=fill_mmvet,
    parse=parse_mmvet,
    format_hint="reply with one number between 0.0 and 1.0 and nothing else",
    metrics=mmvet_metrics,
)
JUDGED: dict[str, JudgedBenchmark] = {benchmark.name: benchmark for benchmark in (MMHAL, LLAVA_BENCH, MMVET)}
BENCHES = tuple(JUDGED)
