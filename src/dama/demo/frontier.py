"""Recall–hallucination frontiers and the comparison of two methods at matched recall.

A method trained along a learning-rate grid gives, per seed, one (recall, CHAIR_i) point per learning rate. Its
*frontier* for that seed is the set of points no other point of the same seed dominates (a point dominates another
when its recall is at least as high and its CHAIR_i at least as low, one of them strictly). Along the frontier,
sorted by recall, CHAIR_i is non-decreasing; between two frontier points it is interpolated linearly.

Matched recall (`matched_recall`): the recalls that every seed's frontier of both methods reaches form the common
range [max of the frontiers' lowest recalls, min of their highest recalls]. At `n_points` evenly spaced recalls in
it, the per-seed difference d_s(r) = CHAIR_i(method, s, r) − CHAIR_i(DPO, s, r) is paired by seed (same data order
and initial model), with its 95% Student-t interval over seeds (`dama.demo.stats.paired_interval`). The overall
difference is each seed's mean of d_s over those recalls (the area between the two curves divided by the range's
width, on the grid), again with its interval over seeds. Outside the common range nothing is extrapolated: when it
is empty the frontiers do not overlap and no matched-recall difference exists.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from dama.demo.stats import paired_interval

Point = tuple[float, float]  # (recall, CHAIR_i), percent


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """The non-dominated (recall, CHAIR_i) points, sorted by recall (ascending; CHAIR_i then non-decreasing).
    Duplicates collapse to one point."""
    unique = sorted(set(points))
    front = [p for p in unique if not any(q != p and q[0] >= p[0] and q[1] <= p[1] for q in unique)]
    return sorted(front)


def chair_at_recall(front: Sequence[Point], recall: float) -> float | None:
    """CHAIR_i of `front` (from `pareto_front`) at `recall`, linear between its points; None outside its range."""
    if not front or recall < front[0][0] or recall > front[-1][0]:
        return None
    for (r0, c0), (r1, c1) in zip(front, front[1:]):
        if r0 <= recall <= r1:
            return c0 if r1 == r0 else c0 + (c1 - c0) * (recall - r0) / (r1 - r0)
    return front[-1][1]  # a one-point front at exactly its recall


def _points(runs: Sequence[dict]) -> dict[int, list[Point]]:
    by_seed: dict[int, list[Point]] = {}
    for run in runs:
        if run["recall"] is not None and run["CHAIR_i"] is not None:
            by_seed.setdefault(run["seed"], []).append((run["recall"], run["CHAIR_i"]))
    return by_seed


def matched_recall(treatment: Sequence[dict], control: Sequence[dict], n_points: int = 5) -> dict[str, Any]:
    """Treatment − control CHAIR_i at matched recall, paired by seed (module docstring).

    Args:
        treatment, control: frontier records, each with `seed`, `recall` and `CHAIR_i` (one per learning rate and
            seed); only seeds present in both count.
        n_points: recalls evenly spaced over the common range (one when the range is a single point).

    Returns:
        `recalls`, and per recall `mean`, `low`, `high` (lists; low/high None with one seed); `overall` (the paired
        interval of each seed's mean difference); `overlap` (False: no common range, every list empty and `overall`
        None); `range` ([low, high] or None); `seeds`.
    """
    if n_points < 1:
        raise ValueError(f"n_points must be ≥ 1, got {n_points}")
    a, b = _points(treatment), _points(control)
    seeds = sorted(set(a) & set(b))
    fronts = {s: (pareto_front(a[s]), pareto_front(b[s])) for s in seeds}
    empty = {
        "recalls": [],
        "mean": [],
        "low": [],
        "high": [],
        "overall": None,
        "overlap": False,
        "range": None,
        "seeds": seeds,
    }
    if not seeds:
        return empty
    lo = max(f[0][0] for pair in fronts.values() for f in pair)
    hi = min(f[-1][0] for pair in fronts.values() for f in pair)
    if lo > hi:
        return empty
    recalls = [lo] if n_points == 1 or hi == lo else [lo + (hi - lo) * k / (n_points - 1) for k in range(n_points)]
    diffs = {
        s: [chair_at_recall(fa, r) - chair_at_recall(fb, r) for r in recalls]  # type: ignore[operator]
        for s, (fa, fb) in fronts.items()
    }
    per_recall = [paired_interval([diffs[s][k] for s in seeds], [0.0] * len(seeds)) for k in range(len(recalls))]
    overall = paired_interval([statistics.fmean(diffs[s]) for s in seeds], [0.0] * len(seeds))
    return {
        "recalls": recalls,
        "mean": [p["mean"] for p in per_recall],
        "low": [p["low"] for p in per_recall],
        "high": [p["high"] for p in per_recall],
        "overall": overall,
        "overlap": True,
        "range": [lo, hi],
        "seeds": seeds,
    }


def equal_learning_rate(treatment: Sequence[dict], control: Sequence[dict]) -> list[dict[str, Any]]:
    """Treatment − control at each learning rate both were run at, paired by seed: CHAIR_i, CHAIR_s and recall."""

    def index(runs: Sequence[dict]) -> dict[tuple[float, int], dict]:
        return {(r["lr"], r["seed"]): r for r in runs}

    a, b = index(treatment), index(control)
    rows = []
    for lr in sorted({lr for lr, _ in a} & {lr for lr, _ in b}):
        seeds = sorted(s for (l_, s) in a if l_ == lr and (lr, s) in b)
        row: dict[str, Any] = {"lr": lr, "n": len(seeds)}
        for key in ("CHAIR_i", "CHAIR_s", "recall"):
            pairs = [(a[lr, s][key], b[lr, s][key]) for s in seeds]
            pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
            row[key] = paired_interval([x for x, _ in pairs], [y for _, y in pairs]) if pairs else None
        rows.append(row)
    return rows


def interval_text(stat: dict[str, Any] | None, digits: int = 1) -> str:
    """'mean [low, high]' with signs; 'n/a' when absent; the mean alone for one seed."""
    if stat is None:
        return "n/a"
    if stat["low"] is None:
        return f"{stat['mean']:+.{digits}f} (one seed: no interval)"
    return f"{stat['mean']:+.{digits}f} [{stat['low']:+.{digits}f}, {stat['high']:+.{digits}f}]"


def matched_recall_outcome(result: dict[str, Any], method: str, control: str = "DPO") -> str:
    """The sentence for one method's matched-recall comparison, decided by the overall interval alone."""
    if not result["overlap"]:
        return (
            f"{method} and {control} cannot be compared at matched recall: their frontiers reach no common "
            "recall on every seed"
        )
    overall = result["overall"]
    lo, hi = result["range"]
    where = f"recall {lo:.1f}–{hi:.1f}"
    text = (
        f"{method} − {control} CHAIR_i at matched recall ({where}, {len(result['seeds'])} seeds): "
        f"{interval_text(overall)}"
    )
    if overall["low"] is None:
        return f"{text}; one seed gives no interval"
    if overall["high"] < 0:
        return f"{method} hallucinates less than {control} at matched recall: {text}"
    if overall["low"] > 0:
        return f"{method} hallucinates more than {control} at matched recall: {text}"
    return f"{method} and {control} cannot be told apart at matched recall (the interval contains 0): {text}"
