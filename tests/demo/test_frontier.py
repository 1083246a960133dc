"""Frontiers, matched-recall interpolation and its interval, the equal-lr comparison and the grid rule.

Expected values are worked by hand from the definitions in `dama.demo.frontier` and `dama.demo.regimes` (the
arithmetic is written out next to each number), never taken from the code's output.
"""

from __future__ import annotations

import math

import pytest

from dama.demo.frontier import (
    chair_at_recall,
    equal_learning_rate,
    matched_recall,
    matched_recall_outcome,
    pareto_front,
)
from dama.demo.regimes import CONSERVATIVE_POINT, frontier_grid


def runs(seed: int, points: list[tuple[float, float]], lrs=(1e-5, 2e-5, 4e-5, 8e-5)) -> list[dict]:
    return [{"seed": seed, "lr": lr, "recall": r, "CHAIR_i": c, "CHAIR_s": 2 * c} for lr, (r, c) in zip(lrs, points)]


# Seed 0 / 1 frontiers of DPO and of a treatment; (70, 19) of the treatment's seed 0 is dominated by (72, 14).
DPO = runs(0, [(80, 20), (75, 15), (70, 12)]) + runs(1, [(82, 22), (76, 16), (71, 11)])
TREATMENT = runs(0, [(78, 20), (72, 14), (66, 13), (70, 19)]) + runs(1, [(79, 19), (73, 15), (65, 12)])


def test_pareto_front_drops_dominated_and_duplicate_points():
    assert pareto_front([(78, 20), (72, 14), (66, 13), (70, 19), (72, 14)]) == [(66, 13), (72, 14), (78, 20)]
    # equal recall: only the lower CHAIR_i survives; equal CHAIR_i: only the higher recall
    assert pareto_front([(70, 12), (70, 15), (65, 12)]) == [(70, 12)]


def test_chair_at_recall_interpolates_linearly_and_never_extrapolates():
    front = [(70, 12), (75, 15), (80, 20)]
    assert chair_at_recall(front, 71) == pytest.approx(12.6)  # 12 + (15 − 12)·(71 − 70)/(75 − 70)
    assert chair_at_recall(front, 78) == pytest.approx(18.0)  # 15 + 5·3/5
    assert chair_at_recall(front, 80) == 20
    assert chair_at_recall(front, 69.9) is None and chair_at_recall(front, 80.1) is None
    assert chair_at_recall([(70, 12)], 70) == 12


def test_matched_recall_worked_by_hand():
    result = matched_recall(TREATMENT, DPO, n_points=2)
    # common range: lowest recalls 66, 70 (seed 0), 65, 71 (seed 1) → 71; highest 78, 80, 79, 82 → 78
    assert result["overlap"] and result["range"] == [71, 78] and result["recalls"] == [71, 78]
    # seed 0 at 71: treatment 13 + 1·(1/6) = 13.8333 (between (66,13) and (72,14)), DPO 12.6 → d = 1.2333
    #           at 78: treatment 20, DPO 18 → d = 2
    # seed 1 at 71: treatment 12 + 3·(6/8) = 14.25, DPO 11 → d = 3.25
    #           at 78: treatment 15 + 4·(5/6) = 18.3333, DPO 16 + 6·(2/6) = 18 → d = 0.3333
    d = {0: (13 + 1 / 6 * 5 - 12.6, 2.0), 1: (3.25, 15 + 4 * 5 / 6 - 18)}
    assert d[0][0] == pytest.approx(1.233333, abs=1e-6)
    assert result["mean"] == pytest.approx([(d[0][0] + d[1][0]) / 2, (d[0][1] + d[1][1]) / 2])  # 2.2417, 1.1667
    # 95% t-interval with n = 2: mean ± t_{0.975,1}·sd/√2, t = 12.706, sd of two values = |a − b|/√2
    half_71 = 12.706 * (abs(d[0][0] - d[1][0]) / math.sqrt(2)) / math.sqrt(2)
    assert result["low"][0] == pytest.approx(result["mean"][0] - half_71)
    assert result["high"][0] == pytest.approx(result["mean"][0] + half_71)
    # overall: seed means 1.6167 and 1.7917 → 1.7042 ± 12.706·0.12374/√2 = ± 1.1118 → [0.5924, 2.8159]
    overall = result["overall"]
    assert overall["mean"] == pytest.approx(1.704167, abs=1e-5)
    assert overall["low"] == pytest.approx(0.592392, abs=1e-5)
    assert overall["high"] == pytest.approx(2.815942, abs=1e-5)
    assert matched_recall_outcome(result, "T").startswith("T hallucinates more than DPO at matched recall")


def test_matched_recall_grid_is_evenly_spaced_over_the_common_range():
    result = matched_recall(TREATMENT, DPO, n_points=5)
    assert result["recalls"] == pytest.approx([71, 72.75, 74.5, 76.25, 78])


def test_frontiers_that_do_not_overlap_give_no_comparison():
    low = runs(0, [(60, 5), (65, 8)]) + runs(1, [(61, 5), (64, 8)])
    high = runs(0, [(70, 10), (80, 20)]) + runs(1, [(70, 10), (80, 20)])
    result = matched_recall(high, low)
    assert not result["overlap"] and result["overall"] is None and result["recalls"] == []
    assert "cannot be compared at matched recall" in matched_recall_outcome(result, "T")
    # seeds present in only one method do not count
    assert matched_recall(runs(3, [(70, 10)]), runs(4, [(70, 10)]))["seeds"] == []


def test_an_interval_containing_zero_is_no_verdict():
    a = runs(0, [(70, 10), (80, 20)]) + runs(1, [(70, 11), (80, 21)])
    b = runs(0, [(70, 11), (80, 21)]) + runs(1, [(70, 10), (80, 20)])
    result = matched_recall(a, b, n_points=3)
    # d = −1 on seed 0 and +1 on seed 1 at every recall → mean 0, the interval contains 0
    assert result["overall"]["mean"] == pytest.approx(0.0)
    assert "cannot be told apart" in matched_recall_outcome(result, "T")


def test_equal_learning_rate_pairs_by_seed():
    rows = equal_learning_rate(TREATMENT, DPO)
    assert [r["lr"] for r in rows] == [1e-5, 2e-5, 4e-5]  # 8e-5 only in the treatment
    first = rows[0]  # treatment − DPO CHAIR_i at 1e-5: seed 0: 20 − 20 = 0, seed 1: 19 − 22 = −3
    assert first["n"] == 2 and first["CHAIR_i"]["mean"] == pytest.approx(-1.5)
    assert first["recall"]["mean"] == pytest.approx(((78 - 80) + (79 - 82)) / 2)


def test_grid_rule_centres_five_points_on_the_knee():
    # drops from the base's 23.6: 0.6, 0.8, 6.6, 11.6, 12.6; half the largest is 6.3, first reached at 4e-5
    pilot = {1e-5: 23.0, 2e-5: 22.8, 4e-5: 17.0, 8e-5: 12.0, 1.6e-4: 11.0}
    grid, knee = frontier_grid(pilot, 23.6)
    assert knee == 4e-5
    assert grid == [2e-5, 2.83e-5, 4e-5, 5.66e-5, 8e-5]  # 4e-5 · 2^(j/2), three significant digits
    # DPO never drops a point: the knee is the largest pilot lr
    assert frontier_grid({1e-5: 23.5, 2e-5: 23.0}, 23.6, points=3) == ([1.41e-5, 2e-5, 2.83e-5], 2e-5)


def test_conservative_point_is_where_a_larger_beta_stops_speeding_a_pair_up():
    x = CONSERVATIVE_POINT
    assert x / (1 + math.exp(-x)) == pytest.approx(1.0, abs=1e-12)  # x·σ(x) = 1
    assert 1.278 < x < 1.279

    def grad(beta: float, h: float) -> float:  # |∂L/∂h| of −log σ(β·h)
        return beta / (1 + math.exp(beta * h))

    h = 1.0
    below, above = (x - 0.05) / h, (x + 0.05) / h  # β·h just below / above the point
    assert grad(below * 1.01, h) > grad(below, h)  # a larger β moves the pair faster below the point ...
    assert grad(above * 1.01, h) < grad(above, h)  # ... and slower above it
