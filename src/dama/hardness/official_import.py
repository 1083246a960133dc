"""Importing the official DAMA data (github.com/injadlu/DAMA), whose CLIP scores are precomputed.

Records carry `idx`, `question`, `chosen`, `rejected`, `image_path`, `origin_dataset`, `origin_split`,
`chosen_logits`, `rejected_logits` (per-sub-sentence CLIP scores) and `logps`. The official loader
(injadlu/DAMA `llava/train/train_dpo.py`, `RLAIFVDataset.__getitem__`) reads them as JSON *strings*:

    logps = json.loads(sample['logps'])                                     # line 831
    ... = logps            if a list, else logps['logps']                   # lines 833-838 (six items)
    data_dict['vlm_rej_logits'] = sum(json.loads(sample['rejected_logits']))  # line 839
    data_dict['vlm_win_logits'] = sum(json.loads(sample['chosen_logits']))    # line 840

and its loss (`dpo_loss`, lines 1251-1255) uses σ(vlm_win − vlm_rej) / σ(0.0482190464911681). So the hardness gap is
δ = Σ chosen_logits − Σ rejected_logits, an empty list `"[]"` sums to 0 as `sum([])` does, and δ̄ stays the official
constant unless overridden. `dama.official_release.official_delta` is the one parser of these fields: `dama hardness
--official` (this module) and `load_preference_dataset(..., dataset_format="official")` both call it, so both
accept the same encodings (a JSON string, or an already decoded list) and refuse the same values (null, not JSON, not
numbers, NaN/Infinity — which `json.loads` accepts — naming the row and the field). The output of an import has the
same layout as a computed one; the sub-sentence columns are null (the official data does not ship them) and the score
lists are the official logits. The format is in docs/paper_mapping.md §2, "Official data format".
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from dama.delta import HARDNESS_COLUMN
from dama.errors import DamaError
from dama.hardness.output import NEW_COLUMNS
from dama.hardness.reader import InputError
from dama.hardness.shard import HardnessDataError, RowProblem, ShardResult, row_ids
from dama.official_release import LOGIT_FIELDS, official_delta, official_scores


class OfficialShardProcessor:
    """Reads δ from the official logits; no model, no images."""

    def __init__(self, on_error: str = "fail", source_name: str = "input") -> None:
        self.on_error = on_error
        self.source_name = source_name

    def describe(self) -> dict[str, Any]:
        return {
            "clip_model": "official DAMA release (precomputed)",
            "scorer": "official_logits_sum",
            "splitter": {"name": "official (not released)"},
        }

    def process(self, table: pa.Table, first_row: int) -> ShardResult:
        for column in LOGIT_FIELDS:
            if column not in table.column_names:
                raise InputError(f"{self.source_name}: no {column!r} column; is this the official DAMA JSON?")
        ids = row_ids(table, first_row)
        logits = {f: table.column(f).to_pylist() for f in LOGIT_FIELDS}
        columns: dict[str, list] = {c: [] for c in NEW_COLUMNS}
        kept, skipped = [], []
        for i in range(table.num_rows):
            where = f"{self.source_name} row {ids[i]}"
            problem, scores = None, {}
            for name in LOGIT_FIELDS:
                try:
                    scores[name] = official_scores(logits[name][i], where, name)
                except DamaError as err:
                    problem = RowProblem(i, ids[i], name, str(err))
                    break
            if problem is None:
                try:
                    delta = official_delta(scores["chosen_logits"], scores["rejected_logits"], where)
                except DamaError as err:
                    problem = RowProblem(i, ids[i], HARDNESS_COLUMN, str(err))
            if problem is not None:
                if self.on_error == "fail":
                    raise HardnessDataError(
                        f"{problem.reason} (fix the data, or pass --on-error skip to leave such rows out)"
                    )
                skipped.append(problem.record())
                continue
            kept.append(i)
            columns["chosen_subsentences"].append(None)
            columns["rejected_subsentences"].append(None)
            columns["chosen_clip_probs"].append(scores["chosen_logits"])
            columns["rejected_clip_probs"].append(scores["rejected_logits"])
            columns[HARDNESS_COLUMN].append(delta)
        return ShardResult(kept, columns, skipped, {})
