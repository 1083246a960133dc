"""Object HalBench (RLHF-V / RLAIF-V protocol) and plain COCO CHAIR scoring, in `rule` and `llm` extraction modes.

docs/eval.md, "Object HalBench": 300 COCO val2014 images with detailed-description prompts; ground truth per image
from the user's COCO 2014 annotations (`coco.py`); metrics are CHAIR's (`chair.chair_metrics`, Rohrbach et al. 2018);
`avg_len` is RLAIF-V's `len(text.strip().split(" "))`. For Object HalBench, answers are first cleaned as RLAIF-V
loads them: every "Assistant:" removed, then whitespace stripped.
- rule: the CHAIR engine on the raw response.
- llm (the protocol behind published Object HalBench numbers), as RLAIF-V's eval/eval_gpt_obj_halbench.py: a text
  judge lists the objects as a JSON list (answers of ≤3 words yield none, without a call), and the listed names are
  reduced to CHAIR words by a POS tagger (`llm_extraction.py`: RLAIF-V's prompt, the reduction, the taggers). The
  reference tagger is spaCy's `en_core_web_trf` (`--tagger spacy`, used by `auto` when installed), else an offline
  approximation (`approx`). Which one ran is recorded as `extraction.reduction`; only
  `rlaif-v:spacy:en_core_web_trf` is the reference. Responses whose judge output is not a JSON list of strings are
  left out and counted (`n_judge_failures`, `partial: true`), never scored as "no objects".
Numbers from the two modes are written to separate files, each labelled with its mode, judge, prompt and reduction.

This module holds the scoring loop (`score_responses`), the question readers, the options and the benchmark records.
"""

from __future__ import annotations

import argparse
import base64
import binascii
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from dama.eval.benchmark import Benchmark, Decoding, UsageError, add_response_arguments, output_folder, write_outputs
from dama.eval.chair import REFINED, VERSIONS, ChairEngine, ChairItem, Lemmatizer, chair_metrics, reference_length
from dama.eval.coco import CocoGroundTruth, coco_image_id
from dama.eval.judge import build_judge
from dama.eval.llm_extraction import (
    PROMPT_SHA256,
    PROMPTS,
    REFERENCE_TAGGER_MODEL,
    REPLY_PARSERS,
    Judge,
    Tagger,
    build_tagger,
    fill_prompt,
    llm_mentions,
)
from dama.eval.nltk_reference import WordNetTokens
from dama.eval.records import (
    RecordError,
    completeness,
    load_responses,
    match_ids,
    question_items,
    read_jsonl_lines,
    read_text,
    run_metadata,
)
from dama.llm import LLMError

MODES = ("rule", "llm")


def read_questions(path: str | Path) -> list[dict]:
    """Object HalBench question JSONL (`image_id`, `question`, `image` base64) as `{"id", "image_id", "question"}`.

    The id is `id`, else `question_id`, else `image_id` — the same key `dama eval generate` gives its responses.
    """
    items, seen = [], {}
    for number, row in read_jsonl_lines(path):
        where = f"{path}:{number}"
        key = next((row[k] for k in ("id", "question_id", "image_id") if row.get(k) not in (None, "")), None)
        if key is None:
            raise RecordError(f"{where}: question row has none of 'id', 'question_id', 'image_id'")
        if row.get("image_id") in (None, ""):
            raise RecordError(f"{where}: question row has no 'image_id' (needed for the COCO ground truth)")
        if str(key) in seen:
            raise RecordError(f"{where}: duplicate question id {str(key)!r} (first at {seen[str(key)]})")
        seen[str(key)] = where
        items.append({"id": str(key), "image_id": row["image_id"], "question": row.get("question", "")})
    return items


def score_responses(
    responses_path: str | Path,
    engine: ChairEngine,
    ground_truth: CocoGroundTruth,
    *,
    bench: str = "object-halbench",
    questions_path: str | Path | None = None,
    modes: Sequence[str] = ("rule",),
    judge: Judge | None = None,
    prompt: str = "rlaif-v",
    tagger: Tagger | None = None,
) -> list[tuple[str, dict, list[dict]]]:
    """Score one response file; returns `(file stem, result, per-response details)` for each mode.

    `bench` names one of the caption benchmarks (`CAPTION_BENCHMARKS`: its split and answer cleanup). Without
    `questions_path` completeness cannot be checked: the result says `"completeness_checked": false`. llm mode uses
    `prompt` (a key of `PROMPTS`) and `tagger` (default: `build_tagger("auto", engine)`).
    """
    record = CAPTION_BENCHMARKS[bench]
    if prompt not in PROMPTS:
        raise ValueError(f"unknown extraction prompt {prompt!r}; choose from {', '.join(PROMPTS)}")
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"unknown extraction mode {mode!r}; choose from {', '.join(MODES)}")
    if "llm" in modes and judge is None:
        raise ValueError("llm extraction mode needs a judge (--judge)")
    if tagger is None and "llm" in modes:
        tagger = build_tagger("auto", engine)
    responses = load_responses(responses_path)
    by_id, present, status = _present_responses(responses, responses_path, questions_path)
    image_ids = {key: _image_id(responses[key], by_id.get(key, {}), key) for key in present}
    gt = ground_truth.classes(image_ids.values())
    common = {
        "benchmark": bench,
        "split": record.split,
        **run_metadata([responses[k] for k in present], responses_path),
    }
    outputs = []
    for mode in modes:
        items, failures = [], []
        for key in tqdm(present, desc=f"{bench} {mode}", unit="response", leave=False):
            text = responses[key]["response"]
            text = record.clean_answer(text) if record.clean_answer is not None else text
            question = responses[key].get("question") or by_id.get(key, {}).get("question", "")
            mentions = _mentions(engine, mode, text, question, judge, prompt, tagger)
            if mentions is None:
                failures.append(key)
                continue
            items.append(ChairItem(key, mentions, gt[image_ids[key]], reference_length(text), image_ids[key]))
        result = {
            **common,
            "extraction": _extraction_record(engine, record, mode, judge, prompt, tagger),
            # fingerprint: the synonym lines plus the singularisation/merge tables and rules actually applied
            "synonyms": {"version": engine.version, "sha256": engine.sha256, "fingerprint": engine.fingerprint},
            "annotations": ground_truth.describe(),
            "responses_file": str(responses_path),
            **status,
            "metrics": chair_metrics(items),
            "units": "percent (CHAIR_s, CHAIR_s_refined, CHAIR_i, recall); words (avg_len)",
        }
        if failures:
            result.update(partial=True, n_judge_failures=len(failures), judge_failure_ids=failures[:50])
            result["n_items"] = len(items)
        details = [item.detail() for item in items] + [{"id": key, "judge_failure": True} for key in failures]
        outputs.append((f"{bench}_{mode}", result, details))
    return outputs


def _present_responses(
    responses: dict[str, dict], responses_path: str | Path, questions_path: str | Path | None
) -> tuple[dict[str, dict], list[str], dict]:
    """The questions by id, the ids to score, and the completeness fields of the result."""
    if questions_path is None:
        present = list(responses)
        return {}, present, {**completeness(present, present), "completeness_checked": False}
    questions = read_questions(questions_path)
    by_id = {q["id"]: q for q in questions}
    present = match_ids([q["id"] for q in questions], responses, responses_path, str(questions_path))
    return by_id, present, {**completeness(list(by_id), present), "completeness_checked": True}


def _image_id(row: dict, question: dict, key: str) -> str:
    """The COCO image id of a response: its own `image_id`, else its question's, else its id."""
    image_id = next((v for v in (row.get("image_id"), question.get("image_id")) if v not in (None, "")), key)
    return str(coco_image_id(image_id))


def _mentions(
    engine: ChairEngine, mode: str, text: str, question: str, judge: Judge | None, prompt: str, tagger: Tagger | None
) -> list | None:
    """The object mentions of one answer: the rule extractor, or the judge's list (None when its reply fails)."""
    if mode == "rule":
        return engine.extract(text)
    if len(text.split()) <= 3:
        return []
    message, role = fill_prompt(prompt, question, text)
    reply = judge.complete(message) if role == "user" else judge.complete(message, role=role)
    names = REPLY_PARSERS[prompt][1](reply)
    return None if names is None else llm_mentions(engine, names, tagger)


def _extraction_record(
    engine: ChairEngine, record: Benchmark, mode: str, judge: Judge | None, prompt: str, tagger: Tagger | None
) -> dict:
    """How the mentions were extracted, as the result records it."""
    extraction = {
        "mode": mode,
        "length": "rlaif-v: len(text.strip().split(' '))",
        # step 1 of the engine, for the reference captions and (rule mode) the responses
        "lemmatizer": engine.lemmatizer_name,
    }
    if record.answer_cleanup is not None:
        extraction["answer_cleanup"] = record.answer_cleanup
    if mode == "llm":
        extraction.update(
            judge_id=judge.judge_id,
            prompt=prompt,
            prompt_role=PROMPTS[prompt][1],
            reply_parser=REPLY_PARSERS[prompt][0],
            prompt_sha256=PROMPT_SHA256[prompt],
            reduction=f"rlaif-v:{tagger.name}",
            reference_reduction=tagger.name == f"spacy:{REFERENCE_TAGGER_MODEL}",
        )
    return extraction


def strip_assistant(text: str) -> str:
    """RLAIF-V's `load_generated_captions`: `answer.replace("Assistant:", "").strip()`."""
    return text.replace("Assistant:", "").strip()


# --- the benchmark records -----------------------------------------------------------------------------------------


def read_generation_questions(path: Path) -> list[dict]:
    """The question JSONL {image_id, question, image: base64} as generation items, images decoded from base64 now, so
    a bad value fails before the model loads (the field is always base64 here, however short)."""
    items = question_items(path, ("id", "question_id", "image_id"), "question", "image")
    for item in items:
        try:
            item["image"] = {"bytes": base64.b64decode(item["image"], validate=True)}
        except (binascii.Error, TypeError, ValueError) as err:
            raise RecordError(f"{item['where']}: field 'image' is not base64 ({err})") from err
    return items


def add_score_arguments(parser: argparse.ArgumentParser) -> None:
    add_response_arguments(parser)
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
        choices=tuple(PROMPTS),
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
    parser.add_argument(
        "--lemmatizer",
        choices=LEMMATIZERS,
        default="auto",
        help="how words are tokenised and singularised (reference captions; responses in rule mode): wordnet "
        "(RLAIF-V's NLTK tokeniser + WordNet lemmas; needs the eval-reference extra and NLTK's data), table (offline "
        "singularisation table) or auto (wordnet for chair-refined-v1 when installed, else table; recorded)",
    )
    parser.add_argument("--cache-dir", help="ground-truth cache folder (default: ~/.cache/dama/coco)")


LEMMATIZERS = ("auto", "wordnet", "table")


def chair_lemmatizer(choice: str, synonyms: str) -> Lemmatizer | None:
    """`--lemmatizer`: RLAIF-V's NLTK + WordNet front end, or None for the singularisation table. `auto` picks
    WordNet for RLAIF-V's list (`chair-refined-v1`) when NLTK and its data are installed; the original CHAIR code
    singularised with `pattern`, so `chair-original` and custom lists keep the table."""
    if choice not in LEMMATIZERS:
        raise ValueError(f"unknown lemmatizer {choice!r}; choose from {', '.join(LEMMATIZERS)}")
    if choice == "table" or (choice == "auto" and synonyms != REFINED):
        return None
    try:
        return WordNetTokens()
    except RecordError:
        if choice == "wordnet":
            raise
        return None


def chair_engine(spec: str, lemmatizer: Lemmatizer | None = None) -> ChairEngine:
    """The engine of `--synonyms`: a shipped list by name, or a file of synonym lines."""
    if spec in VERSIONS:
        return ChairEngine(version=spec, lemmatizer=lemmatizer)
    path = Path(spec)
    if not path.is_file():
        raise RecordError(f"--synonyms {spec!r}: neither {', '.join(VERSIONS)} nor a file")
    lines = read_text(path).splitlines()
    try:
        return ChairEngine(synonym_lines=lines, lemmatizer=lemmatizer)
    except RecordError as err:  # a bad line of the user's list: name the file
        raise RecordError(f"--synonyms {spec}: {err}") from err


def score_command(args: argparse.Namespace) -> int:
    """`dama eval score --bench chair|object-halbench`: one results file per extraction mode."""
    out = output_folder(args)
    modes = ("rule", "llm") if args.mode == "both" else (args.mode,)
    if "llm" in modes and not args.judge:
        raise UsageError("--mode llm/both needs --judge")
    try:
        judge = build_judge(args.judge, args.judge_cache or str(out / "judge_cache")) if "llm" in modes else None
        engine = chair_engine(args.synonyms, chair_lemmatizer(args.lemmatizer, args.synonyms))
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
    except LLMError as err:  # the same class (and exit code: a bad spec 2, an endpoint down 4), naming the judge
        raise type(err)(f"judge {args.judge!r}: {err}") from err
    return write_outputs(outputs, out, args.strict)


# RLHF-V/RLAIF-V protocol: temperature 0, 3 beams, 1024 tokens.
OBJECT_HALBENCH = Benchmark(
    name="object-halbench",
    summary="Object HalBench: CHAIR on 300 COCO val2014 descriptions (rule or llm extraction)",
    decoding=Decoding(num_beams=3, max_new_tokens=1024),
    read_questions=read_generation_questions,
    add_arguments=add_score_arguments,
    score=score_command,
    split="val2014",
    clean_answer=strip_assistant,
    answer_cleanup="rlaif-v: remove 'Assistant:', strip",
)
CHAIR = Benchmark(
    name="chair",
    summary="CHAIR on any COCO 2014 captions (rule or llm extraction)",
    add_arguments=add_score_arguments,
    score=score_command,
    split="coco2014",
)
CAPTION_BENCHMARKS = {record.name: record for record in (OBJECT_HALBENCH, CHAIR)}  # what `score_responses` scores
