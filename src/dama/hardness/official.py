"""Importing the official DAMA data (github.com/injadlu/DAMA), whose CLIP scores are precomputed.

Records carry `question`, `chosen`, `rejected`, `image_path`, `chosen_logits`, `rejected_logits` (per-sub-sentence
CLIP scores) and `logps`. The hardness gap is δ = Σ chosen_logits − Σ rejected_logits (docs/paper_mapping.md §2, "Official data
format"), and δ̄ stays the constant the official training used, 0.0482190464911681, unless overridden. The output
has the same layout as a computed one; the sub-sentence columns are null (the official data does not ship them) and
the score lists are the official logits.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from dama.hardness.reader import InputError
from dama.hardness.shard import HardnessDataError, RowProblem, ShardResult, row_ids
from dama.official import LOGIT_FIELDS, official_delta


def _scores(value: Any) -> list[float] | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [float(value)]
    if isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
        return [float(v) for v in value]
    return None


class OfficialShardProcessor:
    """Reads δ from the official logits; no model, no images."""

    def __init__(self, on_error: str = "fail", source_name: str = "input") -> None:
        self.on_error = on_error
        self.source_name = source_name

    def describe(self) -> dict[str, Any]:
        return {"clip_model": "official DAMA release (precomputed)", "scorer": "official_logits_sum",
                "splitter": {"name": "official (not released)"}}

    def process(self, table: pa.Table, first_row: int) -> ShardResult:
        for column in LOGIT_FIELDS:
            if column not in table.column_names:
                raise InputError(f"{self.source_name}: no {column!r} column; is this the official DAMA JSON?")
        ids = row_ids(table, first_row)
        logits = {f: table.column(f).to_pylist() for f in LOGIT_FIELDS}
        columns: dict[str, list] = {"chosen_subsentences": [], "rejected_subsentences": [], "chosen_clip_probs": [],
                                    "rejected_clip_probs": [], "dama_delta": []}
        kept, skipped = [], []
        for i in range(table.num_rows):
            scores = {f: _scores(logits[f][i]) for f in LOGIT_FIELDS}
            bad = next((f for f in LOGIT_FIELDS if scores[f] is None), None)
            if bad is not None:
                problem = RowProblem(i, ids[i], bad, "missing, empty or non-numeric CLIP scores")
                if self.on_error == "fail":
                    raise HardnessDataError(
                        f"{self.source_name} row {problem.row_id} field {bad!r}: {problem.reason} "
                        "(fix the data, or pass --on-error skip to leave such rows out)"
                    )
                skipped.append(problem.record())
                continue
            kept.append(i)
            columns["chosen_subsentences"].append(None)
            columns["rejected_subsentences"].append(None)
            columns["chosen_clip_probs"].append(scores["chosen_logits"])
            columns["rejected_clip_probs"].append(scores["rejected_logits"])
            columns["dama_delta"].append(official_delta(scores["chosen_logits"], scores["rejected_logits"]))
        return ShardResult(kept, columns, skipped, {})
