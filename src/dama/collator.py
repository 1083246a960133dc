"""The collator wrapper that carries DAMA's per-pair float columns through TRL's collator.

The hardness δ (`config.hardness_column`) and the precomputed reference log-probs (`REF_COLUMNS`) must reach the
loss; TRL's collators return model inputs only, so `ExtraColumnsCollator` adds them back as `(B,)` float tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")


class ExtraColumnsCollator:
    """Wrap a TRL collator so per-pair float columns survive it (TRL's collators return only model inputs)."""

    def __init__(self, inner: Callable[[list[dict[str, Any]]], dict[str, Any]], columns: tuple[str, ...]) -> None:
        self.inner = inner
        self.columns = columns

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        extras = {
            name: torch.tensor([float(example[name]) for example in examples], dtype=torch.float32)
            for name in self.columns
            if name in examples[0]
        }
        batch = self.inner(examples)
        batch.update(extras)
        return batch


def dataset_columns(dataset: Any) -> list[str]:
    """Column names of a `Dataset`, or the keys of an iterable dataset's first row."""
    names = getattr(dataset, "column_names", None)
    if names is None:
        names = list(next(iter(dataset)).keys())
    return list(names)
