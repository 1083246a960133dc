"""The demo's protocol rules (docs/demo.md): the learning-rate rule, the validity checks and the verdict sentence.

Expected values are worked by hand from the rules as docs/demo.md states them, at and around each threshold.
"""

from __future__ import annotations

import pytest

from dama.demo.protocol import select_learning_rate, summarise, training_summary, validity_checks
from dama.demo.report import verdict


def cand(lr: float, chair_i: float, recall: float | None) -> dict:
    return {"lr": lr, "val": {"CHAIR_i": chair_i, "recall": recall}}


def test_select_learning_rate_lowest_chair_i_among_those_keeping_recall():
    # base recall 80 -> the floor is 72. 1e-4 has the lowest CHAIR_i but recall 71.9 < 72: excluded.
    candidates = [cand(2e-5, 20.0, 79.0), cand(5e-5, 15.0, 72.0), cand(1e-4, 9.0, 71.9)]
    assert select_learning_rate(candidates, base_recall=80.0) == 5e-5
    # A tie on CHAIR_i goes to the smaller learning rate.
    assert select_learning_rate([cand(1e-4, 15.0, 75.0), cand(5e-5, 15.0, 75.0)], base_recall=80.0) == 5e-5


def test_select_learning_rate_falls_back_to_the_highest_recall():
    # Nobody keeps 0.9 x 80 = 72: the highest recall wins (70 at 2e-5), whatever its CHAIR_i; None counts as 0.
    candidates = [cand(2e-5, 30.0, 70.0), cand(5e-5, 10.0, 60.0), cand(1e-4, 5.0, None)]
    assert select_learning_rate(candidates, base_recall=80.0) == 2e-5


def checks(base_i=20.0, base_s=35.0, base_r=70.0, dpo_i=15.0, dpo_r=63.0, rel_len=0.1, corr=0.3) -> dict:
    base = {"CHAIR_i": base_i, "CHAIR_s": base_s, "recall": base_r}
    dpo = {"CHAIR_i": {"mean": dpo_i}, "recall": {"mean": dpo_r}}
    return validity_checks(base, dpo, {"relative_length_difference": rel_len}, {"union_softmax": {"corr_gap": corr}})


def failed(result: dict) -> set[str]:
    return {name for name, c in result.items() if not c["ok"]}


def test_validity_checks_pass_exactly_at_their_thresholds():
    # DPO CHAIR_i 15 = 0.75 x 20, recall 63 = 0.9 x 70, length difference 10%, corr 0.3: all on the boundary.
    result = checks()
    assert failed(result) == set()
    assert result["pair length balance"]["value"] == pytest.approx(10.0)
    assert failed(checks(base_i=10.0, dpo_i=7.5, base_r=60.0, dpo_r=54.0, base_s=30.0)) == set()
    assert failed(checks(base_i=40.0, dpo_i=30.0)) == set()


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"base_r": 59.9, "dpo_r": 59.9}, "base recall"),
        ({"base_i": 9.9, "dpo_i": 5.0}, "base CHAIR_i"),
        ({"base_i": 40.1, "dpo_i": 20.0}, "base CHAIR_i"),
        ({"base_s": 29.9}, "base CHAIR_s"),
        ({"rel_len": 0.101}, "pair length balance"),
        ({"rel_len": -0.101}, "pair length balance"),
        ({"corr": 0.299}, "corr(δ, gap)"),
        ({"dpo_i": 15.01}, "DPO CHAIR_i"),  # 0.75 x 20 = 15
        ({"dpo_r": 62.9}, "DPO recall"),  # 0.9 x 70 = 63
        ({"dpo_i": None}, "DPO CHAIR_i"),  # no mention at all: not a pass
    ],
)
def test_each_validity_check_fails_just_past_its_threshold(kwargs, name):
    assert failed(checks(**kwargs)) == {name}


def summary(ci: tuple[float, float, float] | None, recall_high: float | None = 1.0, ok: bool = True) -> dict:
    mean, low, high = ci
    return {
        "validity": {"DPO CHAIR_i": {"ok": ok}, "base recall": {"ok": True}},
        "comparison": {
            "DAMA": {
                "CHAIR_i": {"mean": mean, "low": low, "high": high, "n": 5},
                "recall": {"mean": -1.0, "low": -3.0, "high": recall_high, "n": 5},
            }
        },
    }


def test_verdict_follows_the_interval_and_the_checks():
    assert verdict(summary((-2.0, -3.0, -0.5))).startswith("DAMA hallucinates less than DPO: DAMA − DPO CHAIR_i -2.0")
    assert "but it also recalls fewer objects" in verdict(summary((-2.0, -3.0, -0.5), recall_high=-0.2))
    assert verdict(summary((2.0, 0.5, 3.0))).startswith("DAMA hallucinates more than DPO")
    assert verdict(summary((0.1, -1.0, 1.2))).startswith("DAMA and DPO cannot be told apart")
    assert verdict(summary((-0.1, None, None))).startswith("No verdict: one seed")
    # A failed validity check overrides any interval, and is named.
    text = verdict(summary((-2.0, -3.0, -0.5), ok=False))
    assert text.startswith("No verdict") and "DPO CHAIR_i" in text


def test_summaries():
    assert summarise([1.0, None, float("nan"), 3.0]) == {"mean": 2.0, "std": pytest.approx(2**0.5)}
    assert summarise([None]) == {"mean": None, "std": None}
    # 20 logged steps -> the last 2 are averaged.
    history = [{"rewards/margins": float(k), "rewards/accuracies": 0.5, "loss": 1.0} for k in range(20)] + [{"x": 1}]
    assert training_summary(history) == {"margins": 18.5, "accuracies": 0.5, "loss": 1.0}


def _row(chair_i, recall):
    return {"CHAIR_i": {"mean": chair_i, "std": 0.0}, "recall": {"mean": recall, "std": 0.0}}


def test_dpo_working_point_is_the_lowest_chair_i_above_the_recall_floor():
    from dama.demo.protocol import dpo_working_point

    # base recall 82.1 → floor 73.89: 5.66e-5 (recall 73.6) is below it, so 4e-5 (CHAIR_i 14.0) is the point
    by_lr = {2e-5: _row(19.5, 80.3), 4e-5: _row(14.0, 76.0), 5.66e-5: _row(12.3, 73.6), 8e-5: _row(16.7, 70.1)}
    assert dpo_working_point(by_lr, 82.1) == 4e-5
    # none above the floor: the highest recall
    assert dpo_working_point({1e-4: _row(10.0, 60.0), 2e-4: _row(9.0, 61.0)}, 82.1) == 2e-4
    # ties in CHAIR_i go to the smaller lr
    assert dpo_working_point({1e-4: _row(10.0, 80.0), 5e-5: _row(10.0, 79.0)}, 82.1) == 5e-5
