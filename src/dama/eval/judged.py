"""Judge-based scorers: MMHal-Bench, LLaVA-Bench (in-the-wild, qa90) and MM-Vet (`docs/eval-judges.md`).

Each benchmark is one record (`JudgedBenchmark`, at the end of this module): its annotation loader, prompt template,
reply parser and metrics. They share one loop: ask the judge; if the reply cannot be parsed, re-ask (the previous reply is quoted and the format restated);
if it still cannot, flag the item. Flagged items are listed in the results and never averaged in.

The prompt templates are ours. They paraphrase each benchmark's criteria; MMHal's rating scale follows its
Apache-2.0 template. Because the wording differs from the original GPT-4 prompts, numbers are labelled with the
judge id and `prompt_version`, and should be compared only with numbers carrying the same labels.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dama.eval.benchmark import Benchmark, Decoding
from dama.eval.judge import CachedJudge, Judge, build_judge
from dama.eval.records import (
    RecordError,
    completeness,
    match_ids,
    question_items,
    read_json,
    read_jsonl_lines,
    require_field,
    run_metadata,
    write_results,
)
from dama.eval.records import load_responses as load_responses_file
from dama.llm import LLMError

MMHAL_TEMPLATE = """\
You are an impartial judge. An AI assistant answered a question about an image; decide how informative its answer \
is and whether it hallucinates. You cannot see the image. Instead you get a list of what the image contains, the \
question, and a reference answer written by a person.

A hallucination is a claim about the image that the image contents and the reference answer contradict or do not \
support. Plausible details that the given information neither supports nor contradicts are not hallucinations. \
Comparisons and judgements in the answer should be checked against the reference answer.

Rate the answer on this scale:
6 - very informative, with good analysis or reasoning, and no hallucination
5 - very informative, no hallucination
4 - somewhat informative, no hallucination
3 - not informative, no hallucination
2 - very informative, with hallucination
1 - somewhat informative, with hallucination
0 - not informative, with hallucination

Image contents: {image_content}
Question: {question}
Reference answer: {reference}
Answer to rate: {response}

Explain your judgement in a few sentences, then end with one line of the form "Rating: <k>", where <k> is a \
single integer from 0 to 6."""

LLAVA_TEMPLATE = """\
You compare two AI assistants' answers to a user's question about an image. You cannot see the image; it is \
described below by captions (and object boxes as [x1, y1, x2, y2] in relative coordinates, when given).

[Image description]
{context}

[Question]
{question}

[Assistant 1]
{reference}
[End of Assistant 1]

[Assistant 2]
{response}
[End of Assistant 2]

Rate each answer for helpfulness, relevance, accuracy and level of detail, on a scale from 1 to 10 (higher is \
better). Judge content only: not the order in which the answers appear, and not their length as such.
On the first line write only the two scores, for Assistant 1 and then Assistant 2, separated by a space. From the \
second line on, explain your evaluation."""

MMVET_TEMPLATE = """\
Grade a model's answer to a question about an image against the ground-truth answer. Give a correctness score \
between 0.0 and 1.0: 0.0 for a wrong answer, 1.0 for a fully correct one, and values in between for answers that are \
partly correct or incomplete. In a ground truth, "<AND>" separates parts that must all be present, and "<OR>" \
separates alternatives of which any one is enough. Wording, format and extra explanation do not matter unless they \
contradict the ground truth.

Examples (question | ground truth | answer | correctness):
How many apples are on the plate? | 3 | There are three apples. | 1.0
Which two cities are marked on the map? | Lyon <AND> Paris | Paris is marked. | 0.5
What colour is the sign? | red <OR> dark red | The sign is blue. | 0.0
What is the total on the receipt? | 12.50 | The total is 12.50 dollars, paid in cash. | 1.0

Now grade:
{question} | {reference} | {response} |

Reply with the correctness score only: one number between 0.0 and 1.0."""

# MMHal-Bench's eight question types, in the order of its questions (index % 8).
MMHAL_TYPES = ("attribute", "adversarial", "comparison", "counting", "relation", "environment", "holistic", "other")


# --- reply parsers: return the parsed value, or a string saying what is wrong ----------------------------------


def parse_mmhal(reply: str) -> int | str:
    values = {int(k) for k in re.findall(r"rating\s*:\s*\**\s*([0-6])(?![\d.])", reply, flags=re.IGNORECASE)}
    if len(values) != 1:
        return "no 'Rating: k' line" if not values else f"several ratings {sorted(values)}"
    return values.pop()


def parse_llava(reply: str) -> tuple[float, float] | str:
    lines = [line for line in reply.strip().splitlines() if line.strip()]
    if not lines:
        return "empty reply"
    parts = lines[0].replace(",", " ").split()
    try:
        scores = [float(part) for part in parts]
    except ValueError:
        return f"first line is not two numbers: {lines[0][:80]!r}"
    if len(scores) != 2 or not all(1 <= s <= 10 for s in scores):
        return f"first line is not two scores from 1 to 10: {lines[0][:80]!r}"
    return scores[0], scores[1]


def parse_mmvet(reply: str) -> float | str:
    lines = [line for line in reply.strip().splitlines() if line.strip()]
    numbers = re.findall(r"(?<![\w.])(\d*\.?\d+)(?![\w.])", lines[0]) if lines else []
    if len(numbers) != 1 or not 0 <= float(numbers[0]) <= 1:
        return f"expected one number in [0, 1], got {reply.strip()[:80]!r}"
    return float(numbers[0])


# --- annotation loaders: id -> {"prompt fields", "group"} --------------------------------------------------------


def _field(row: Any, key: str, where: str) -> Any:
    return require_field(row, key, where, allow_empty=True)


def load_mmhal(path: str | Path) -> dict[str, dict]:
    """MMHal-Bench's `response_template.json`: a list of {question_type, question, gt_answer, image_content}.

    Ids are list positions as strings ("0".."95"), as `dama eval generate --bench mmhal` writes them.
    """
    rows = read_json(path)
    if not isinstance(rows, list):
        raise RecordError(f"{path}: expected a JSON list of MMHal-Bench questions")
    items = {}
    for index, row in enumerate(rows):
        where = f"{path} item {index}"
        content = _field(row, "image_content", where)
        items[str(index)] = {
            "group": str(row.get("question_type") or MMHAL_TYPES[index % 8]),
            "question": _field(row, "question", where),
            "reference": _field(row, "gt_answer", where),
            "image_content": ", ".join(content) if isinstance(content, list) else str(content),
        }
    return items


def _context_text(row: dict) -> str:
    captions = row.get("caption", row.get("captions", ""))
    lines = [captions] if isinstance(captions, str) else [str(c) for c in captions]
    for inst in row.get("instances", []):
        box = ", ".join(f"{v:.3f}" for v in inst.get("bbox", []))
        lines.append(f"{inst.get('category', 'object')}: [{box}]")
    return "\n".join(line for line in lines if line)


def load_llava_bench(questions: str | Path, answers: str | Path, context: str | Path) -> dict[str, dict]:
    """Questions JSONL {question_id, image, text, category}, reference answers JSONL {question_id, text}, and a
    context JSONL {image, caption|captions, instances?} (one row per image)."""
    contexts = {}
    for line, row in read_jsonl_lines(context):
        contexts[str(_field(row, "image", f"{context}:{line}"))] = _context_text(row)
    references = {}
    for line, row in read_jsonl_lines(answers):
        references[str(_field(row, "question_id", f"{answers}:{line}"))] = _field(row, "text", f"{answers}:{line}")
    items = {}
    for line, row in read_jsonl_lines(questions):
        where = f"{questions}:{line}"
        qid, image = str(_field(row, "question_id", where)), str(_field(row, "image", where))
        if qid in items:
            raise RecordError(f"{where}: duplicate question_id {qid!r}")
        if qid not in references:
            raise RecordError(f"{where}: question_id {qid!r} has no reference answer in {answers}")
        if image not in contexts:
            raise RecordError(f"{where}: image {image!r} has no caption row in {context}")
        items[qid] = {
            "group": str(_field(row, "category", where)),
            "question": _field(row, "text", where),
            "reference": references[qid],
            "context": contexts[image],
        }
    return items


def load_mmvet(path: str | Path) -> dict[str, dict]:
    """MM-Vet's `mm-vet.json`: {id: {question, answer, capability: [...]}}."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise RecordError(f"{path}: expected a JSON object mapping question id -> question")
    items = {}
    for qid, row in data.items():
        where = f"{path} item {qid!r}"
        caps = _field(row, "capability", where)
        items[str(qid)] = {
            "group": sorted(caps) if isinstance(caps, list) else [str(caps)],
            "question": _field(row, "question", where),
            "reference": _field(row, "answer", where),
        }
    return items


def fill_mmhal(item: dict, response: str) -> str:
    return MMHAL_TEMPLATE.format(response=response, **{k: v for k, v in item.items() if k != "group"})


def fill_llava(item: dict, response: str) -> str:
    return LLAVA_TEMPLATE.format(response=response, **{k: v for k, v in item.items() if k != "group"})


def fill_mmvet(item: dict, response: str) -> str:
    # MM-Vet's table row is one line: newlines inside the answer would break it
    return MMVET_TEMPLATE.format(
        question=item["question"], reference=item["reference"], response=" ".join(response.split())
    )


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


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def metrics_for(bench: str, values: dict[str, Any], items: dict[str, dict]) -> dict:
    """The benchmark's metrics from parsed judge values (flagged items already left out).

    Flat keys, `metric` overall and `metric/group` per question type, category or capability, so `dama eval compare`
    can put them in one table.
    """
    return JUDGED[bench].metrics(values, items)


def _by_group(values: dict[str, Any], items: dict[str, dict]) -> dict[str, list]:
    """Values overall (group "") and per item group, groups sorted."""
    groups: dict[str, list] = defaultdict(list)
    for qid, value in values.items():
        groups[""].append(value)
        groups[items[qid]["group"]].append(value)
    return {group: groups[group] for group in sorted(groups)}


def mmhal_metrics(values: dict[str, int], items: dict[str, dict]) -> dict:
    metrics: dict[str, float | None] = {}
    for group, ratings in _by_group(values, items).items():
        suffix = f"/{group}" if group else ""
        metrics[f"score{suffix}"] = _mean(ratings)
        metrics[f"hallucination_rate{suffix}"] = _mean([float(r < 3) for r in ratings])
    return metrics or {"score": None, "hallucination_rate": None}


def llava_metrics(values: dict[str, tuple[float, float]], items: dict[str, dict]) -> dict:
    metrics: dict[str, float | None] = {}
    for group, pairs in _by_group(values, items).items():
        suffix = f"/{group}" if group else ""
        ref, model = _mean([p[0] for p in pairs]), _mean([p[1] for p in pairs])
        metrics[f"relative_score{suffix}"] = 100 * model / ref if ref else None
        metrics[f"model_mean{suffix}"], metrics[f"reference_mean{suffix}"] = model, ref
    return metrics or {"relative_score": None, "model_mean": None, "reference_mean": None}


def mmvet_metrics(values: dict[str, float], items: dict[str, dict]) -> dict:
    groups: dict[str, list] = defaultdict(list)
    combos: dict[str, list] = defaultdict(list)
    metrics: dict[str, float | None] = {}
    for qid, value in values.items():
        for cap in ["", *items[qid]["group"]]:
            groups[cap].append(value)
        combos["+".join(items[qid]["group"])].append(value)
    # total and per capability (an item counts for each of its capabilities), then per capability combination
    for cap in sorted(groups):
        metrics[f"total/{cap}" if cap else "total"] = 100 * _mean(groups[cap])
    for combo in sorted(combos):
        metrics[f"combination/{combo}"] = 100 * _mean(combos[combo])
    return metrics or {"total": None}


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
        from tqdm import tqdm

        result, details = score(
            bench,
            items,
            responses,
            judge,
            reasks=args.reasks,
            progress=lambda xs: tqdm(xs, total=len(responses), desc=f"judging {bench}"),
            workers=args.judge_workers,
        )
    except LLMError as err:
        raise RecordError(f"{err}; replies received so far are cached, so a rerun continues from there") from err
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


def read_mmhal_questions(path: Path) -> list[dict]:
    """MMHal-Bench's response_template.json as generation items; ids are list positions, as the scorer expects."""
    data = read_json(path)
    if not isinstance(data, list):
        raise RecordError(f"{path}: expected MMHal-Bench's response_template.json (a JSON list)")
    items = []
    for i, row in enumerate(data):
        where = f"{path} item {i}"
        image = row.get("image_path") or Path(str(require_field(row, "image_src", where))).name
        items.append({"id": str(i), "question": require_field(row, "question", where), "image": image, "where": where})
        if "image_id" in row:
            items[-1]["image_id"] = row["image_id"]
    return items


def read_mmvet_questions(path: Path) -> list[dict]:
    """MM-Vet's mm-vet.json ({id: {imagename, question, ...}}) as generation items."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise RecordError(f"{path}: expected MM-Vet's mm-vet.json (a JSON object id -> question)")
    items = []
    for key, row in data.items():
        where = f"{path} item {key!r}"
        question, image = require_field(row, "question", where), require_field(row, "imagename", where)
        items.append({"id": str(key), "question": question, "image": image, "where": where})
    return items


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
