"""The per-pair hardness δ and its dataset mean δ̄: the column's name, the official δ̄, and the one rule that resolves δ̄.

δ (Eq. 5) is written by `dama hardness` and by the official-data import, and read by training; α_D divides by
σ(δ̄) (Eq. 6). δ̄ is resolved here alone: an explicit value, else the one stored with the data (`dama hardness`'s
hardness.json, `dama precompute-ref`'s dama_data.json, or the official constant for official data), else the mean of
the column (`mean_delta`, also what `dama hardness` stores). A leaf module (standard library and `dama.errors`), so
`DAMAConfig` can name the column and the constant without loading anything.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from dama.errors import DamaError, NonFiniteError, require_finite

HARDNESS_COLUMN = "dama_delta"
# δ̄ of the official release (injadlu/DAMA): the dataset mean of its δ, used as the default for official data
OFFICIAL_DELTA_MEAN = 0.0482190464911681


def official_delta_mean(setting: float | str | None) -> tuple[float | None, str]:
    """δ̄ to store with imported official data, and its source: None → the official constant ("official");
    "computed" → None, the mean of the imported δ ("computed"); a number → that number ("official" when it is the
    constant, else "override")."""
    if setting is None:
        return OFFICIAL_DELTA_MEAN, "official"
    if setting == "computed":
        return None, "computed"
    value = float(setting)
    return value, "official" if value == OFFICIAL_DELTA_MEAN else "override"


def mean_delta(values: Iterable[float], column: str = HARDNESS_COLUMN, rows: str = "row") -> float:
    """The mean of δ over `values` (exactly rounded sum, `math.fsum`); `NonFiniteError` naming the first row whose δ
    is not finite ("<rows> <i>: field <column> ..."), `DamaError` when there is no value."""
    values = list(values)
    for index, value in enumerate(values):
        if value is None or not math.isfinite(value):
            raise NonFiniteError(f"{rows} {index}: field {column!r} is not finite ({value})")
    if not values:
        raise DamaError(f"no {column!r} value to average: δ̄ cannot be computed from no pairs")
    try:
        mean = math.fsum(values) / len(values)
    except OverflowError:
        mean = math.inf
    return require_finite(mean, f"δ̄ (mean of {column!r})")


def resolve_delta_mean(
    deltas: Iterable[float] | None = None,
    *,
    override: float | None = None,
    stored: float | None = None,
    override_name: str = "delta_mean (δ̄)",
    stored_name: str = "δ̄ (delta_mean) stored with the data",
    column: str = HARDNESS_COLUMN,
    rows: str = "row",
) -> tuple[float, str]:
    """δ̄ and where it came from: `override` ("override"), else `stored` with the data ("stored": `dama hardness`'s
    hardness.json, `dama precompute-ref`'s dama_data.json, the official constant for official data), else the mean of
    `deltas` ("computed", `mean_delta`). Every value is checked finite, naming `override_name`, `stored_name` or the
    row."""
    if override is not None:
        return require_finite(override, override_name), "override"
    if stored is not None:
        return require_finite(stored, stored_name), "stored"
    if deltas is None:
        raise DamaError(f"δ̄ is not given, not stored with the data and no {column!r} values were passed to average")
    return mean_delta(deltas, column, rows), "computed"
