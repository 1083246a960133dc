"""The demo's protocol rules, fixed before any method was compared (docs/demo.md, "Order of decisions"): how a
run is summarised, how the learning-rate sweep picks a value, whether CLIP's δ is a hardness signal, the validity
checks under which "does DAMA beat DPO?" is answerable, and the paired comparison with DPO.

Pure functions of the run's numbers; `dama.demo.experiment` calls them, `dama.demo.report` words their outcome.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from datasets import Dataset

from dama.delta import HARDNESS_COLUMN
from dama.demo.stats import paired_interval, pearson
from dama.row_fields import response_text


def summarise(values: list[float | None]) -> dict[str, float | None]:
    clean = [v for v in values if v is not None and math.isfinite(v)]
    if not clean:
        return {"mean": None, "std": None}
    return {"mean": statistics.fmean(clean), "std": statistics.stdev(clean) if len(clean) > 1 else 0.0}


def training_summary(history: list[dict]) -> dict[str, float]:
    """Reward accuracy and margin (TRL's definitions, β-scaled) averaged over the last 10% of logged steps, and the
    loss there: how far alignment went, to compare with real runs (margins of a few nats, not tens)."""
    logged = [h for h in history if "rewards/margins" in h]
    tail = logged[-max(1, len(logged) // 10) :]
    if not tail:
        return {}
    return {
        key.split("/")[-1]: statistics.fmean(h[key] for h in tail)
        for key in ("rewards/margins", "rewards/accuracies", "loss")
        if key in tail[0]
    }


def select_learning_rate(candidates: list[dict], base_recall: float) -> float:
    """The sweep's rule, fixed before any method was compared: the lowest validation CHAIR_i among the learning
    rates that keep validation recall ≥ 0.9 × the base model's; if none does, the one with the highest recall.
    Ties go to the smaller learning rate."""
    ok = [c for c in candidates if c["val"]["recall"] is not None and c["val"]["recall"] >= 0.9 * base_recall]
    if ok:
        best = min(ok, key=lambda c: (c["val"]["CHAIR_i"], c["lr"]))
    else:
        best = max(candidates, key=lambda c: (c["val"]["recall"] or 0.0, -c["lr"]))
    return best["lr"]


def hardness_signal(data: Dataset, extra_deltas: dict[str, list[float]] | None = None) -> dict[str, Any]:
    """Is δ a hardness signal? Its correlation with the ground-truth gap and with the length difference."""
    gaps = [int(r) - int(c) for r, c in zip(data["n_hall_rejected"], data["n_hall_chosen"])]
    lengths = [
        len(response_text(c).split()) - len(response_text(r).split()) for c, r in zip(data["chosen"], data["rejected"])
    ]
    signals = {"union_softmax": [float(d) for d in data[HARDNESS_COLUMN]], **(extra_deltas or {})}
    return {
        name: {
            "corr_gap": pearson(deltas, gaps),
            "corr_length_difference": pearson(deltas, lengths),
            "mean": statistics.fmean(deltas),
            "positive_fraction": sum(d > 0 for d in deltas) / len(deltas),
        }
        for name, deltas in signals.items()
    }


def dpo_working_point(dpo_by_lr: dict[float, dict], base_recall: float | None) -> float:
    """The grid lr at which DPO is judged (frontier protocol): among the lrs whose mean test recall over seeds is
    ≥ 0.9 × the base model's, the lowest mean CHAIR_i; if none, the highest mean recall. Ties go to the smaller lr.
    `dpo_by_lr` maps lr → summary row (`summarise` of CHAIR_i and recall)."""

    def mean(row: dict, key: str) -> float:
        value = row[key]["mean"]
        return math.inf if value is None else value

    floor = -math.inf if base_recall is None else 0.9 * base_recall
    ok = [lr for lr, row in dpo_by_lr.items() if row["recall"]["mean"] is not None and row["recall"]["mean"] >= floor]
    if ok:
        return min(ok, key=lambda lr: (mean(dpo_by_lr[lr], "CHAIR_i"), lr))
    return max(dpo_by_lr, key=lambda lr: (dpo_by_lr[lr]["recall"]["mean"] or 0.0, -lr))


def validity_checks(base: dict, dpo: dict, balance: dict, signal: dict, where: str = "") -> dict[str, dict[str, Any]]:
    """The conditions under which "does DAMA beat DPO?" is answerable here, each with its value; `dpo` is DPO's
    summary row at the point it is judged at, `where` says which (appended to the DPO rules)."""

    def check(value: float | None, ok: bool, rule: str) -> dict[str, Any]:
        return {"value": value, "ok": bool(ok), "rule": rule}

    base_i, base_s, base_r = base["CHAIR_i"], base["CHAIR_s"], base["recall"]
    dpo_i, dpo_r = dpo["CHAIR_i"]["mean"], dpo["recall"]["mean"]
    rel_len = balance["relative_length_difference"]
    corr = signal["union_softmax"]["corr_gap"]
    return {
        "base recall": check(base_r, base_r is not None and base_r >= 60, "≥ 60%: the base model sees"),
        "base CHAIR_i": check(
            base_i, base_i is not None and 10 <= base_i <= 40, "in [10%, 40%]: it hallucinates, but not blindly"
        ),
        "base CHAIR_s": check(base_s, base_s is not None and base_s >= 30, "≥ 30%"),
        "pair length balance": check(
            100 * rel_len,
            abs(rel_len) <= 0.10,
            "mean chosen − mean rejected words within ±10% of the mean length (value in %)",
        ),
        "corr(δ, gap)": check(corr, corr >= 0.3, "≥ 0.3: CLIP's δ tracks the true hallucination gap"),
        "DPO CHAIR_i": check(
            dpo_i, None not in (dpo_i, base_i) and dpo_i <= 0.75 * base_i, "≤ 0.75 × base: DPO works" + where
        ),
        "DPO recall": check(
            dpo_r, None not in (dpo_r, base_r) and dpo_r >= 0.9 * base_r, "≥ 0.9 × base: without blinding" + where
        ),
    }


def compare(results: dict[str, list[dict]], treatment: str, control: str = "DPO") -> dict[str, dict]:
    """Paired (by seed) differences treatment − control of CHAIR_i, CHAIR_s, recall and length, with 95% intervals."""
    return {
        key: paired_interval([m[key] for m in results[treatment]], [m[key] for m in results[control]])
        for key in ("CHAIR_i", "CHAIR_s", "recall", "avg_len")
    }
