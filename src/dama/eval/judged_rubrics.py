"""What each judge-scored benchmark brings to the shared judge loop of `judged.py`: how its questions and annotations
are read, the prompt the judge gets, how the judge's reply is parsed, and the metrics (`docs/eval-judges.md`).

- MMHal-Bench (Sun et al., "Aligning Large Multimodal Models with Factually Augmented RLHF", 2023): a rating 0-6
  against the image contents and a reference answer; score and hallucination rate (ratings below 3), per question
  type.
- LLaVA-Bench in-the-wild and qa90 (Liu et al., "Visual Instruction Tuning", NeurIPS 2023): the judge scores the
  reference answer and the model's answer 1-10 from captions; the relative score is 100 · model / reference, per
  category.
- MM-Vet (Yu et al., "MM-Vet: Evaluating Large Multimodal Models for Integrated Capabilities", 2023): correctness
  0-1 against the ground truth (`<AND>`, `<OR>`); total and per capability and capability combination.

The prompt templates are ours. They paraphrase each benchmark's criteria; MMHal's rating scale follows its
Apache-2.0 template. Because the wording differs from the original GPT-4 prompts, numbers are labelled with the
judge id and `prompt_version`, and should be compared only with numbers carrying the same labels.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from dama.eval.records import RecordError, read_json, read_jsonl_lines, require_field

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


def _context_text(row: dict, where: str) -> str:
    captions = row.get("caption", row.get("captions", ""))
    lines = [captions] if isinstance(captions, str) else [str(c) for c in captions]
    for k, inst in enumerate(row.get("instances", [])):
        bbox = inst.get("bbox", []) if isinstance(inst, dict) else None
        if not isinstance(bbox, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox
        ):
            raise RecordError(
                f"{where}: field 'instances' item {k}: 'bbox' must be a list of numbers, got {bbox!r:.60}"
            )
        box = ", ".join(f"{v:.3f}" for v in bbox)
        lines.append(f"{inst.get('category', 'object')}: [{box}]")
    return "\n".join(line for line in lines if line)


def load_llava_bench(questions: str | Path, answers: str | Path, context: str | Path) -> dict[str, dict]:
    """Questions JSONL {question_id, image, text, category}, reference answers JSONL {question_id, text}, and a
    context JSONL {image, caption|captions, instances?} (one row per image)."""
    contexts = {}
    for line, row in read_jsonl_lines(context):
        contexts[str(_field(row, "image", f"{context}:{line}"))] = _context_text(row, f"{context}:{line}")
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


# --- metrics: flat keys, `metric` overall and `metric/group` per group -----------------------------------------------


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


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


# --- generation questions (`dama eval generate`) ---------------------------------------------------------------------


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
