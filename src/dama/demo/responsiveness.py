"""The paper's imbalanced-responsiveness picture (Fig. 1): fixed easy and hard preference pairs, chosen by CLIP's δ
(what DAMA sees) and by the ground-truth hallucination gap (what is true), and their mean reward margin measured
every few steps of training.
"""

from __future__ import annotations

import torch
from datasets import Dataset
from transformers import TrainerCallback

from dama.delta import HARDNESS_COLUMN
from dama.trainer import DAMATrainer


def easy_and_hard(data: Dataset, n: int) -> dict[str, Dataset]:
    """Fixed pairs for the responsiveness curves: the `n` easiest and hardest by δ (what DAMA sees) and by the
    ground-truth gap (what is true: easy = the largest hallucination gaps, hard = a gap of one; ties by δ)."""
    deltas = list(data[HARDNESS_COLUMN])  # the column alone: indexing rows would decode every image
    gaps = [int(r) - int(c) for r, c in zip(data["n_hall_rejected"], data["n_hall_chosen"])]
    n = min(n, len(deltas) // 2)
    by_delta = sorted(range(len(deltas)), key=deltas.__getitem__)
    by_gap = sorted(range(len(deltas)), key=lambda i: (gaps[i], deltas[i]))
    return {
        "hard (δ)": data.select(by_delta[:n]),
        "easy (δ)": data.select(by_delta[-n:]),
        "hard (gap)": data.select(by_gap[:n]),
        "easy (gap)": data.select(by_gap[-n:]),
    }


@torch.no_grad()
def pair_margins(trainer: DAMATrainer, data: Dataset) -> torch.Tensor:
    """`(n,)` margins h_i = [log π(y_w) − log π_ref(y_w)] − [log π(y_l) − log π_ref(y_l)] of the policy in
    `trainer` on the pairs of `data` (with precomputed reference log-probs), in eval mode, one batch."""
    batch = trainer.data_collator([dict(r) for r in data])
    # the stored reference log-probs ride in the batch when the trainer reads them from the data; a trainer with a
    # live reference model (mDPO) does not carry those columns, so they are read from `data` (same order)
    ref_chosen = batch.pop("ref_chosen_logps", None)
    ref_rejected = batch.pop("ref_rejected_logps", None)
    if ref_chosen is None or ref_rejected is None:
        ref_chosen = torch.tensor(data["ref_chosen_logps"], dtype=torch.float32)
        ref_rejected = torch.tensor(data["ref_rejected_logps"], dtype=torch.float32)
    batch.pop(trainer.args.hardness_column, None)
    batch = trainer._prepare_inputs(batch)
    was_training = trainer.model.training
    trainer.model.eval()
    chosen, rejected = trainer.pair_logps(trainer.model, batch)  # the policy's own log-probs
    trainer.model.train(was_training)
    return (chosen.cpu() - ref_chosen) - (rejected.cpu() - ref_rejected)


class MarginTracker(TrainerCallback):
    """Mean reward margin h of fixed easy and hard pairs, every `every` steps (the paper's responsiveness picture)."""

    def __init__(self, trainer: DAMATrainer, groups: dict[str, Dataset], every: int) -> None:
        self.trainer, self.groups, self.every = trainer, groups, every
        self.history: list[dict[str, float]] = []

    def measure(self, step: int) -> None:
        row: dict[str, float] = {"step": step}
        for name, data in self.groups.items():
            row[name] = float(pair_margins(self.trainer, data).mean())
        self.history.append(row)

    def on_train_begin(self, args, state, control, **kwargs):
        self.measure(0)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0:
            self.measure(state.global_step)
