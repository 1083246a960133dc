"""Facts of the official DAMA release (github.com/injadlu/DAMA) that training and `dama hardness` both need.

A leaf module (standard library only): `DAMAConfig` and the data loader read these without loading the CLIP stack.
The importer of the official JSON is `dama.hardness.official`; the format is in `docs/paper_mapping.md` §2.
"""

from __future__ import annotations

import math

# δ̄ hard-coded in the official training code for its data (docs/paper_mapping.md §2 step 4).
OFFICIAL_DELTA_MEAN = 0.0482190464911681
# Per-sub-sentence CLIP scores of the chosen and the rejected response, as JSON strings in each record.
LOGIT_FIELDS = ("chosen_logits", "rejected_logits")


def official_delta(chosen_logits: list[float], rejected_logits: list[float]) -> float:
    """δ = Σ chosen_logits − Σ rejected_logits (the official code's data-aware input to Eq. 6)."""
    return math.fsum(chosen_logits) - math.fsum(rejected_logits)
