"""AMBER's metrics: generative CHAIR, Cover, Hal, Cog; discriminative accuracy, precision, recall, F1 overall, per
dimension and per attribute sub-type; the yes/no normalisation of answers; the AMBER score.

AMBER (Wang et al., "AMBER: An LLM-free Multi-dimensional Benchmark for MLLMs Hallucination Evaluation", 2023).
Each metric is computed exactly and as AMBER's inference.py prints it (`*_reported`: its denominators start at
0.001, its values are rounded to one decimal), the numbers in published tables. docs/eval.md, "AMBER".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from dama.eval.pope import parse_answer

# annotations.json `type` -> (dimension, attribute sub-type). These are the type names of AMBER's released file;
# its inference.py counts "discriminative-hallucination" as existence, the three attribute types as attribute, and
# every other non-generative type ("discriminative-relation", "relation") as relation. Unknown types are an error.
DISCRIMINATIVE_TYPES: dict[str, tuple[str, str | None]] = {
    "discriminative-hallucination": ("existence", None),
    "discriminative-attribute-state": ("attribute", "attribute-state"),
    "discriminative-attribute-number": ("attribute", "attribute-number"),
    "discriminative-attribute-action": ("attribute", "attribute-action"),
    "discriminative-relation": ("relation", None),
    "relation": ("relation", None),
}
# inference.py's F1 adds this to P + R (both as fractions); existence alone uses 0.001.
F1_EPSILON = {"existence": 0.001}
F1_EPSILON_DEFAULT = 0.0001
# inference.py starts every counter's denominator at 0.001 (data/metrics.txt); the pooled attribute dimension adds
# three counters (state + number + action), so its denominators start at 0.003.
DENOMINATOR_START = {"attribute": 0.003}
DENOMINATOR_START_DEFAULT = 0.001


def _pct(num: float, den: float) -> float | None:
    return None if den == 0 else 100.0 * num / den


def generative_metrics(details: Sequence[dict]) -> dict:
    """CHAIR, Cover, Hal, Cog (percent) from `Amber.generative_item` / `reference_item` records, exact and as
    inference.py prints them (`*_reported`: denominators start at 0.001, rounded to one decimal, L259-262)."""
    mentions = sum(len(d["nouns"]) for d in details)
    hallucinated = sum(len(d["hallucinated"]) for d in details)
    covered = sum(d.get("n_covered", len(d["covered"])) for d in details)
    hit = sum(d.get("n_hit_hallu", len(d["hit_hallu"])) for d in details)
    n_truth, n_hallu = sum(d["n_truth"] for d in details), sum(d["n_hallu"] for d in details)
    clean = sum(1 for d in details if not d["hallucinated"])
    start = DENOMINATOR_START_DEFAULT
    return {
        "CHAIR": _pct(hallucinated, mentions),
        "Cover": _pct(covered, n_truth),
        "Hal": _pct(len(details) - clean, len(details)),
        "Cog": _pct(hit, n_hallu),
        "CHAIR_reported": round(hallucinated / (mentions + start) * 100, 1),
        "Cover_reported": round(covered / (n_truth + start) * 100, 1),
        "Hal_reported": round(100 - clean / (len(details) + start) * 100, 1),
        "Cog_reported": round(hit / (n_hallu + start) * 100, 1),
        "n_responses": len(details),
        "n_mentions": mentions,
        "n_hallucinated_mentions": hallucinated,
    }


def normalize_yes_no(text: str) -> tuple[str, bool]:
    """("Yes" | "No", whether the POPE fallback was needed): first word yes/no, else no/not in the first sentence."""
    match = re.match(r"\W*(\w+)", text.lower())
    if match and match.group(1) in ("yes", "no"):
        return match.group(1).capitalize(), False
    return parse_answer(text).capitalize(), True


def discriminative_metrics(
    pairs: Iterable[tuple[str, str]],
    epsilon: float = F1_EPSILON_DEFAULT,
    start: float = DENOMINATOR_START_DEFAULT,
) -> dict:
    """Accuracy, Precision, Recall, F1 in percent with "No" as the positive class, from (truth, answer) pairs.

    `f1` is exact (2PR / (P + R)); the `*_reported` values are computed as AMBER's inference.py prints them, the
    numbers in published tables: every denominator starts at `start`, each of Accuracy, P and R is rounded to one
    decimal, and F1 = round(100 · 2pr / (p + r + `epsilon`), 1) from the rounded p = P/100, r = R/100.
    """
    pairs = [(t.lower(), a.lower()) for t, a in pairs]
    n = len(pairs)
    correct = sum(1 for t, a in pairs if t == a)
    answered_no = sum(1 for _, a in pairs if a == "no")
    truth_no = sum(1 for t, _ in pairs if t == "no")
    true_no = sum(1 for t, a in pairs if t == "no" and a == "no")
    precision, recall = _pct(true_no, answered_no), _pct(true_no, truth_no)
    f1 = (
        None
        if precision is None or recall is None
        else (0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall))
    )
    p_rep = round(true_no / (answered_no + start) * 100, 1)
    r_rep = round(true_no / (truth_no + start) * 100, 1)
    f1_rep = round(2 * (p_rep / 100) * (r_rep / 100) / ((p_rep / 100) + (r_rep / 100) + epsilon) * 100, 1)
    return {
        "accuracy": _pct(correct, n),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy_reported": round(correct / (n + start) * 100, 1),
        "precision_reported": p_rep,
        "recall_reported": r_rep,
        "f1_reported": f1_rep,
        "n": n,
    }


def amber_score(chair: float, f1: float) -> float:
    """AMBER score = ((100 − CHAIR) + F1) / 2, from the generative CHAIR and the discriminative F1 (percent)."""
    return ((100.0 - chair) + f1) / 2.0
