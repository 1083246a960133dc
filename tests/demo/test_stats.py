"""The demo's verdict statistics, against values worked by hand from the definitions."""

import math

import pytest

from dama.demo.stats import paired_interval, pearson, t_quantile_975


def test_paired_interval_by_hand():
    # differences (2, 4, 6, 8, 10) - (1, 1, 1, 1, 1) = (1, 3, 5, 7, 9): mean 5, sd = sqrt(40 / 4) = sqrt(10);
    # half-width = t_{0.975, 4} * sqrt(10) / sqrt(5) = 2.776 * sqrt(2) = 3.9259.
    got = paired_interval([2, 4, 6, 8, 10], [1, 1, 1, 1, 1])
    assert got["mean"] == pytest.approx(5.0)
    assert got["sd"] == pytest.approx(math.sqrt(10))
    assert got["low"] == pytest.approx(5 - 2.776 * math.sqrt(2))
    assert got["high"] == pytest.approx(5 + 2.776 * math.sqrt(2))
    assert got["n"] == 5


def test_paired_interval_is_paired_not_pooled():
    # A constant shift under large seed-to-seed spread: the paired differences have sd 0, so the interval is a point.
    got = paired_interval([10.0, 50.0, 90.0], [9.0, 49.0, 89.0])
    assert (got["mean"], got["low"], got["high"]) == pytest.approx((1.0, 1.0, 1.0))


def test_one_pair_has_no_interval_and_bad_input_is_refused():
    assert paired_interval([3.0], [1.0]) == {"mean": 2.0, "low": None, "high": None, "sd": None, "n": 1}
    with pytest.raises(ValueError):
        paired_interval([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        t_quantile_975(0)


def test_t_quantiles_from_the_table():
    assert t_quantile_975(1) == 12.706
    assert t_quantile_975(4) == 2.776
    assert t_quantile_975(30) == 2.042
    assert t_quantile_975(100) == 1.960


def test_pearson():
    # x deviations (-1, 0, 1), y = (2, 4, 6) deviations (-2, 0, 2): r = 4 / sqrt(2 * 8) = 1.
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [5, 5, 5]) == 0.0
    assert pearson([1], [2]) == 0.0
