"""What `DAMATrainer` needs of the training data beyond TRL's columns (next to `dama.data`, which reads and checks it).

- The per-pair float columns that must reach the loss: the hardness δ (`config.hardness_column`) and the
  precomputed reference log-probs (`REF_COLUMNS`). TRL's collators return model inputs only, so
  `ExtraColumnsCollator` carries them through as `(B,)` float tensors.
- δ̄ for training (`training_delta_mean`): the hardness column must be there when `data_aware` is on, and δ̄ is
  `dama.rows.resolve_delta_mean` of the recipe's `delta_mean`, the value stored with the data, or the column's mean.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from datasets import Dataset

from dama.config import DAMAConfig, RecipeError
from dama.rows import resolve_delta_mean

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


def training_delta_mean(config: DAMAConfig, dataset: Any, columns: list[str], stored: float | None) -> float | None:
    """δ̄ for α_D (None when `data_aware` is off); `RecipeError` when the hardness column is missing, or when δ̄ must be
    computed from a streaming dataset."""
    if not config.data_aware:
        return None
    if config.hardness_column not in columns:
        raise RecipeError(
            f"data_aware=True needs the per-pair hardness column {config.hardness_column!r}, which the training "
            f"dataset does not have (columns: {columns}). Produce it with `dama hardness --data <your data> "
            "--clip <CLIP model> --out <dir>` and train on <dir>, import official DAMA JSON (it carries "
            "chosen_logits/rejected_logits), or set data_aware=False."
        )
    given = config.delta_mean is not None or stored is not None
    if not given and not isinstance(dataset, Dataset):
        raise RecipeError("delta_mean is required with a streaming dataset (set --delta_mean).")
    value, _ = resolve_delta_mean(
        None if given else dataset[config.hardness_column],
        override=config.delta_mean,
        stored=stored,
        stored_name="δ̄ (delta_mean) stored with the training data",
        column=config.hardness_column,
        rows="training row",
    )
    return value
