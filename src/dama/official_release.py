"""Facts of the official DAMA release (github.com/injadlu/DAMA) that training and `dama hardness` both need.

A leaf module (standard library and `dama.errors` only): `DAMAConfig` and the data loader read these without loading
the CLIP stack. `official_delta` is the one parser of the released `chosen_logits`/`rejected_logits` fields:
`dama hardness --official` (`dama.hardness.official_import`) and `load_preference_dataset(..., dataset_format="official")`
both call it, so both accept the same encodings and refuse the same values. The format is in
`docs/paper_mapping.md` §2. `rlaif_v_generator` and `llava15_7b_generator` select the paper's training subset of
RLAIF-V (docs/reproduce-paper.md, step 1).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Any

from dama.errors import DamaError, NonFiniteError

# δ̄ hard-coded in the official training code for its data (docs/paper_mapping.md §2 step 4).
# Per-sub-sentence CLIP scores of the chosen and the rejected response, as JSON strings in each record.
LOGIT_FIELDS = ("chosen_logits", "rejected_logits")


class OfficialDataError(DamaError, ValueError):
    """A `chosen_logits`/`rejected_logits` value the official loader could not sum; names the row and the field."""


def official_scores(value: Any, where: str, field: str) -> list[float]:
    """The CLIP scores of one `chosen_logits`/`rejected_logits` field, decoded as the official loader decodes them.

    `value` is the released encoding, a JSON string such as `"[0.41, 0.22]"` (`json.loads`, lines 839-840 of the
    official `train_dpo.py`), or a list already decoded; a bare number counts as a one-item list. `"[]"` gives `[]`,
    which sums to 0. `where` names the row (e.g. `"data.json row 3 (idx 17)"`) and `field` the column, for errors.

    Raises:
        NonFiniteError: a NaN or infinite score (`json.loads` reads `NaN`, `Infinity`).
        OfficialDataError: null, text that is not JSON, or anything but a list of numbers.
    """
    prefix = f"{where}: field {field!r}"
    if value is None:
        raise OfficialDataError(f'{prefix} is null; expected a JSON list of CLIP scores such as "[0.41, 0.22]"')
    decoded = value
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError as err:
            raise OfficialDataError(
                f'{prefix}: {value[:60]!r} is not JSON ({err.msg}); expected e.g. "[0.41, 0.22]"'
            ) from err
    if isinstance(decoded, (int, float)) and not isinstance(decoded, bool):
        decoded = [decoded]
    if not isinstance(decoded, list):
        raise OfficialDataError(
            f"{prefix}: expected a list of CLIP scores, got {type(decoded).__name__} {decoded!r:.60}"
        )
    scores = []
    for position, item in enumerate(decoded):
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise OfficialDataError(f"{prefix}: item {position} is {item!r:.40}, not a number")
        if not math.isfinite(item):
            raise NonFiniteError(f"{prefix}: item {position} is {item}, not a finite number")
        scores.append(float(item))
    return scores


def official_delta(chosen_logits: Any, rejected_logits: Any, where: str = "official data") -> float:
    """δ = Σ chosen_logits − Σ rejected_logits (the official data-aware input to Eq. 6), from either encoding.

    Sums left to right with `sum`, as the official loader does. Raises `NonFiniteError`/`OfficialDataError` (both
    `DamaError`) naming `where` and the field; the result is always finite.
    """
    chosen = official_scores(chosen_logits, where, "chosen_logits")
    rejected = official_scores(rejected_logits, where, "rejected_logits")
    delta = sum(chosen) - sum(rejected)
    if not math.isfinite(delta):  # finite scores whose sums overflow
        raise NonFiniteError(f"{where}: δ = Σ chosen_logits − Σ rejected_logits is {delta}, not a finite number")
    return delta


# LLaVA-1.5-7B as a name: "LLaVA-1.5-7B", "llava-v1.5-7b", "llava15_7b", "liuhaotian/llava-v1.5-7b", "...-7b-hf";
# never a 13B model or another LLaVA version.
_LLAVA15_7B = re.compile(r"(?:[^/]*/)?llava[-_ ]?v?1[._]?5[-_ ]?7b(?:[-_]hf)?", re.IGNORECASE)


def rlaif_v_generator(origin_split: Any) -> str:
    """The generator of an RLAIF-V pair: the `model` field of its `origin_split` value, a JSON string such as
    `{"model": "InstructBLIP-Flan-T5-xxl", "type": "detailed_description"}` (openbmb/RLAIF-V-Dataset); the raw value
    when it is not such an object."""
    try:
        value = json.loads(origin_split)
    except (TypeError, ValueError):
        return str(origin_split)
    return str(value["model"]) if isinstance(value, dict) and "model" in value else str(origin_split)


def llava15_7b_generator(names: Iterable[str]) -> str:
    """The one generator name among `names` that spells LLaVA-1.5-7B (the paper trains on its pairs: "We employ the
    LLaVA-v1.5-7B preference data from RLAIF-V Dataset", injadlu/DAMA README). `OfficialDataError` listing the names
    when none or several do, rather than a guess."""
    names = sorted(set(names))
    found = [name for name in names if _LLAVA15_7B.fullmatch(name.strip())]
    if len(found) != 1:
        which = "no generator name spells" if not found else f"{len(found)} generator names ({', '.join(found)}) spell"
        raise OfficialDataError(
            f"{which} LLaVA-1.5-7B among the {len(names)} in origin_split: {', '.join(names[:20])}"
            + (" ..." if len(names) > 20 else "")
            + "; pick the subset's name by hand (docs/reproduce-paper.md, step 1)"
        )
    return found[0]
