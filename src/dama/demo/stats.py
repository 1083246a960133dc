"""The statistics the demo's verdict rests on: paired differences with a Student-t interval, and correlations.

DAMA and DPO are trained with the same seeds (same data order, same initial state), so the comparison is paired:
d_s = metric(DAMA, seed s) − metric(DPO, seed s), and the 95% interval of the mean difference is
mean(d) ± t_{0.975, n−1} · sd(d) / √n (Student 1908; any statistics text, e.g. Wasserman, *All of Statistics*, §10).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

# t_{0.975, df}: the two-sided 95% quantiles of Student's t distribution for df = 1..30 (standard table values).
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}; for df > 30 the normal quantile 1.960 (the table's error there is below 2%)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be ≥ 1, got {df}")
    return _T975[df - 1] if df <= len(_T975) else 1.960


def paired_interval(treatment: Sequence[float], control: Sequence[float]) -> dict[str, float | int | None]:
    """Mean of the paired differences treatment − control with its 95% Student-t interval.

    Returns `mean`, `low`, `high`, `sd` and `n`; with one pair the interval is undefined (`low`/`high`/`sd` None).
    """
    if len(treatment) != len(control) or not treatment:
        raise ValueError(f"paired samples need equal, non-zero lengths, got {len(treatment)} and {len(control)}")
    diffs = [a - b for a, b in zip(treatment, control)]
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return {"mean": mean, "low": None, "high": None, "sd": None, "n": 1}
    sd = statistics.stdev(diffs)
    half = t_quantile_975(len(diffs) - 1) * sd / math.sqrt(len(diffs))
    return {"mean": mean, "low": mean - half, "high": mean + half, "sd": sd, "n": len(diffs)}


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation; 0.0 when fewer than two points or either side is constant (nothing to measure)."""
    if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return 0.0
    return statistics.correlation(x, y)
