"""Object HalBench (RLHF-V / RLAIF-V protocol) and plain COCO CHAIR scoring, in `rule` and `llm` extraction modes.

docs/eval.md, "Object HalBench": 300 COCO val2014 images with detailed-description prompts; ground truth per image from
the user's COCO 2014 annotations (`coco.py`); metrics are CHAIR's (`chair.chair_metrics`, Rohrbach et al. 2018).
- rule: the CHAIR engine on the raw response.
- llm: a text judge lists the objects the answer mentions as a JSON list (answers of ≤3 words yield none); each name is
  reduced to its singular head noun, names are de-duplicated per response, then the toilet/seat rule and the synonym
  mapping apply. Responses whose judge output is not a JSON list of strings are left out and counted
  (`n_judge_failures`, `partial: true`), never scored as "no objects".
Numbers from the two modes are written to separate files, each labelled with its mode (and judge id).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from tqdm import tqdm

from dama.eval.chair import ChairEngine, ChairItem, Mention, chair_metrics, reference_length
from dama.eval.coco import CocoGroundTruth, coco_image_id
from dama.eval.records import RecordError, completeness, load_responses, match_ids, read_jsonl_lines, run_metadata


class Judge(Protocol):
    """What llm mode needs of a judge (`dama.eval.judge.build_judge` returns one)."""

    judge_id: str

    def complete(self, prompt: str) -> str: ...


EXTRACTION_PROMPT = """You extract object names from an answer about an image.

Question: {question}

Answer: {answer}

List every physical object the answer says is visible in the image. Rules:
1. Only objects the answer explicitly mentions; do not add any.
2. Give object names only, without attributes (no colours, materials, sizes or counts).
3. Reply with a JSON list of strings and nothing else, for example ["dog", "frisbee", "tree"].
4. Reply [] if the answer mentions no visible object.
"""
PROMPT_SHA256 = hashlib.sha256(EXTRACTION_PROMPT.encode()).hexdigest()
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


def parse_object_list(text: str) -> list[str] | None:
    """The JSON list of strings in a judge's reply (the first `[...]`), or None if there is none."""
    match = re.search(r"\[.*?\]", text, flags=re.DOTALL)
    if match is None:
        return None
    try:
        names = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        return None
    return names


def llm_mentions(engine: ChairEngine, names: Sequence[str]) -> list[Mention]:
    """Judge-listed names -> mentions: singular head nouns, de-duplicated, then toilet/seat and the synonym map."""
    reduced = [word for word in (engine.reduce_name(name) for name in names) if word]
    unique = list(dict.fromkeys(reduced))
    return engine.select([(word, position) for position, word in enumerate(unique)])


def score_responses(
    responses_path: str | Path,
    engine: ChairEngine,
    ground_truth: CocoGroundTruth,
    *,
    bench: str = "object-halbench",
    questions_path: str | Path | None = None,
    modes: Sequence[str] = ("rule",),
    judge: Judge | None = None,
) -> list[tuple[str, dict, list[dict]]]:
    """Score one response file; returns `(file stem, result, per-response details)` for each mode.

    Without `questions_path` completeness cannot be checked: the result says `"completeness_checked": false`.
    """
    responses = load_responses(responses_path)
    if questions_path is not None:
        questions = read_questions(questions_path)
        by_id = {q["id"]: q for q in questions}
        present = match_ids([q["id"] for q in questions], responses, responses_path, str(questions_path))
        status = {**completeness(list(by_id), present), "completeness_checked": True}
    else:
        by_id = {}
        present = list(responses)
        status = {**completeness(present, present), "completeness_checked": False}
    image_ids = {}
    for key in present:
        row = responses[key]
        image_id = next(
            (v for v in (row.get("image_id"), by_id.get(key, {}).get("image_id")) if v not in (None, "")), key
        )
        image_ids[key] = str(coco_image_id(image_id))
    gt = ground_truth.classes(image_ids.values())
    meta = run_metadata([responses[k] for k in present], responses_path)

    outputs = []
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"unknown extraction mode {mode!r}; choose from {', '.join(MODES)}")
        if mode == "llm" and judge is None:
            raise ValueError("llm extraction mode needs a judge (--judge)")
        items, failures = [], []
        for key in tqdm(present, desc=f"{bench} {mode}", unit="response", leave=False):
            row = responses[key]
            text = row["response"]
            if mode == "rule":
                mentions = engine.extract(text)
            elif len(text.split()) <= 3:
                mentions = []
            else:
                question = row.get("question") or by_id.get(key, {}).get("question", "")
                names = parse_object_list(judge.complete(EXTRACTION_PROMPT.format(question=question, answer=text)))
                if names is None:
                    failures.append(key)
                    continue
                mentions = llm_mentions(engine, names)
            items.append(ChairItem(key, mentions, gt[image_ids[key]], reference_length(text), image_ids[key]))
        extraction = {"mode": mode}
        if mode == "llm":
            extraction.update(judge_id=judge.judge_id, prompt_sha256=PROMPT_SHA256)
        result = {
            "benchmark": bench,
            "split": "val2014" if bench == "object-halbench" else "coco2014",
            **meta,
            "extraction": extraction,
            "synonyms": {"version": engine.version, "sha256": engine.sha256},
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
