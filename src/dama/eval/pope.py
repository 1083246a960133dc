"""POPE (Li et al., "Evaluating Object Hallucination in Large Vision-Language Models", EMNLP 2023).

Yes/no questions "Is there a <object> in the image?" over COCO val2014, in three splits (random, popular,
adversarial). Question files are POPE's JSONL (`question_id`, `image`, `text`, `label` yes/no); responses are matched
by `question_id`. The answer is read as POPE's own evaluate.py does: keep the text before the first ".", drop commas,
split on single spaces (`text.split(' ')`, so "not\nthere" is one token); a token "no", "No" or "not" means no,
anything else yes. That rule is
case-sensitive ("NO", "Not" read as yes); answers it reads as yes without any yes word are counted in `n_unclear`.
Positive class = yes; Accuracy, Precision, Recall, F1 and yes-ratio, in percent.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from dama.eval.benchmark import Benchmark, Decoding, add_response_arguments, output_folder, write_outputs
from dama.eval.records import (
    RecordError,
    completeness,
    load_responses,
    match_ids,
    question_items,
    read_jsonl_lines,
    run_metadata,
)

SPLITS = ("random", "popular", "adversarial")
NO_TOKENS = frozenset({"no", "No", "not"})


def parse_answer(text: str) -> str:
    """POPE's reading of a free-form answer: "no" if a no/not token is in the first sentence, else "yes"."""
    first = text.split(".", 1)[0].replace(",", "")
    return "no" if NO_TOKENS & set(first.split(" ")) else "yes"


def is_unclear(text: str) -> bool:
    """True when the first sentence has no yes/no/not word at all (case-insensitive): parse_answer guessed "yes"."""
    first = text.split(".", 1)[0].lower()
    return not re.search(r"\b(yes|no|not)\b", first)


def read_questions(path: str | Path) -> list[dict]:
    """POPE question JSONL -> `[{"id", "label", "text", "image"}]`; labels must be yes/no, ids unique."""
    items, seen = [], {}
    for number, row in read_jsonl_lines(path):
        where = f"{path}:{number}"
        if row.get("question_id") in (None, ""):
            raise RecordError(f"{where}: POPE question row has no 'question_id'")
        label = str(row.get("label", "")).strip().lower()
        if label not in ("yes", "no"):
            raise RecordError(f"{where}: 'label' must be yes or no (got {row.get('label')!r})")
        key = str(row["question_id"])
        if key in seen:
            raise RecordError(f"{where}: duplicate question_id {key!r} (first at {seen[key]})")
        seen[key] = where
        items.append({"id": key, "label": label, "text": row.get("text", ""), "image": row.get("image")})
    return items


def infer_split(path: str | Path) -> str | None:
    """The split named in a POPE file name (coco_pope_adversarial.json -> adversarial), if any."""
    found = [split for split in SPLITS if split in Path(path).name.lower()]
    return found[0] if len(found) == 1 else None


def pope_metrics(labels: list[str], predictions: list[str]) -> dict:
    """Accuracy, Precision, Recall, F1 (positive = yes) and yes-ratio, in percent; None where a denominator is 0."""
    pairs = list(zip(labels, predictions, strict=True))
    tp = sum(1 for y, p in pairs if y == "yes" and p == "yes")
    fp = sum(1 for y, p in pairs if y == "no" and p == "yes")
    tn = sum(1 for y, p in pairs if y == "no" and p == "no")
    fn = sum(1 for y, p in pairs if y == "yes" and p == "no")
    n = len(pairs)
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else (0.0 if n else None)
    return {
        "accuracy": 100 * (tp + tn) / n if n else None,
        "precision": None if precision is None else 100 * precision,
        "recall": None if recall is None else 100 * recall,
        "f1": None if f1 is None else 100 * f1,
        "yes_ratio": 100 * (tp + fp) / n if n else None,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def score(responses_path: str | Path, questions_path: str | Path, split: str | None = None) -> tuple[str, dict, list]:
    """Score one POPE split; returns `(file stem, result, per-question details)`."""
    split = split or infer_split(questions_path)
    if split not in SPLITS:
        raise RecordError(
            f"{questions_path}: cannot tell the POPE split from the name; pass --split {'|'.join(SPLITS)}"
        )
    questions = read_questions(questions_path)
    responses = load_responses(responses_path)
    present = match_ids([q["id"] for q in questions], responses, responses_path, str(questions_path))
    by_id = {q["id"]: q for q in questions}
    details, labels, predictions, unclear = [], [], [], 0
    for key in present:
        text = responses[key]["response"]
        prediction = parse_answer(text)
        unclear += is_unclear(text)
        labels.append(by_id[key]["label"])
        predictions.append(prediction)
        details.append({"id": key, "label": by_id[key]["label"], "prediction": prediction, "response": text})
    result = {
        "benchmark": "pope",
        "split": split,
        **run_metadata([responses[k] for k in present], responses_path),
        "extraction": {"mode": "pope-first-sentence-no-not"},
        "annotations": {"questions_file": Path(questions_path).name},
        "responses_file": str(responses_path),
        **completeness([q["id"] for q in questions], present),
        "metrics": {**pope_metrics(labels, predictions), "n_unclear": unclear},
        "units": "percent (accuracy, precision, recall, f1, yes_ratio)",
    }
    return f"pope_{split}", result, details


def add_score_arguments(parser: argparse.ArgumentParser) -> None:
    add_response_arguments(parser)
    parser.add_argument("--questions", required=True, help="POPE question file (JSONL: question_id, text, label)")
    parser.add_argument("--split", choices=SPLITS, help="default: from the file name")


def score_command(args: argparse.Namespace) -> int:
    out = output_folder(args)
    return write_outputs([score(args.responses, args.questions, args.split)], out, args.strict)


POPE = Benchmark(
    name="pope",
    summary="POPE yes/no object existence (random, popular, adversarial)",
    # yes/no answers: a short budget suffices
    decoding=Decoding(num_beams=1, max_new_tokens=32),
    read_questions=lambda path: question_items(path, ("question_id",), "text", "image"),  # {question_id, image, text}
    add_arguments=add_score_arguments,
    score=score_command,
)
