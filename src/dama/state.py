"""Training state of the model-aware strategy: the running reward-gap estimate R̄ (docs/paper_mapping.md §4, Eq. 14).

It is a small object with `state_dict()` / `load_state_dict()` so the trainer saves it with every checkpoint and a
resumed run continues from the exact R̄ (and the exact sampling stream of the outlier filter).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import torch


class RewardGapEMA:
    """R̄ ← γ·R̄ + (1−γ)·stat, R̄₀ = 0 (Eq. 14), plus an optional running std for the std-normalised filter.

    `stat` is the mean of all N gathered reward gaps in the official code (`ema_input="all"`) or the mean of the kept
    ones (paper reading, `ema_input="kept"`); the trainer chooses. Because every rank feeds the same gathered vector,
    every rank holds the same R̄; `num_updates` also seeds the filter's draw, so all ranks draw the same mask.
    """

    def __init__(self, gamma: float = 0.9, initial: float = 0.0, track_std: bool = False) -> None:
        if not 0.0 <= gamma < 1.0:
            raise ValueError(f"gamma must be in [0, 1), got {gamma}")
        self.gamma = gamma
        self.mean = float(initial)
        self.var = 1.0
        self.track_std = track_std
        self.num_updates = 0

    @property
    def std(self) -> float | None:
        return math.sqrt(self.var) if self.track_std else None

    def update(self, values: torch.Tensor) -> float:
        """Fold a batch of reward gaps `(N,)` into R̄ (and the running variance); returns the new R̄."""
        values = values.detach().float()
        values = values[torch.isfinite(values)]
        if values.numel() > 0:
            stat = values.mean().item()
            self.mean = self.gamma * self.mean + (1.0 - self.gamma) * stat
            if self.track_std:
                spread = (values - self.mean).square().mean().item()
                self.var = self.gamma * self.var + (1.0 - self.gamma) * spread
        self.num_updates += 1
        return self.mean

    def generator(self, seed: int) -> torch.Generator:
        """A CPU generator seeded from (seed, num_updates): identical on every rank, reproducible across a resume."""
        digest = hashlib.sha256(f"dama-filter:{seed}:{self.num_updates}".encode()).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))

    def state_dict(self) -> dict[str, Any]:
        return {
            "gamma": self.gamma,
            "mean": self.mean,
            "var": self.var,
            "track_std": self.track_std,
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = {"mean", "num_updates"} - set(state)
        if missing:
            raise KeyError(f"RewardGapEMA state is missing {sorted(missing)}")
        self.gamma = float(state.get("gamma", self.gamma))
        self.mean = float(state["mean"])
        self.var = float(state.get("var", 1.0))
        self.track_std = bool(state.get("track_std", self.track_std))
        self.num_updates = int(state["num_updates"])

    def __repr__(self) -> str:
        return f"RewardGapEMA(mean={self.mean:.6g}, gamma={self.gamma}, num_updates={self.num_updates})"


class MarginMomentsEMA(RewardGapEMA):
    """β-DPO's running statistics M₀ and σ̄ (junkangwu/beta-DPO `trainers.py::update_and_sync_tensor_mean`, L241-261).

    M₀ ← γ·M₀ + (1−γ)·mean(A) and σ̄ ← γ·σ̄ + (1−γ)·std(A), both from 0, over all N gathered margins A of the
    micro-batch, with `std` the unbiased (N − 1) estimate as `torch.Tensor.std` computes it. β-DPO updates them
    *before* the loss of the step (DAMA's R̄: after). Every rank feeds the same gathered vector, so every rank holds
    the same values (the official code averages identical values over ranks with an all-reduce). A batch of one
    pair has no std: σ̄ is then left as it is (the official code would turn it into NaN for the rest of training).
    """

    def __init__(self, gamma: float = 0.9) -> None:
        super().__init__(gamma=gamma, initial=0.0, track_std=False)
        self.std_ema = 0.0

    @property
    def std(self) -> float:  # σ̄, used by the filter (RewardGapEMA.std is the optional DAMA running std)
        return self.std_ema

    def update(self, values: torch.Tensor) -> float:
        values = values.detach().float()
        values = values[torch.isfinite(values)]
        if values.numel() > 0:
            self.mean = self.gamma * self.mean + (1.0 - self.gamma) * values.mean().item()
            if values.numel() > 1:
                self.std_ema = self.gamma * self.std_ema + (1.0 - self.gamma) * values.std().item()
        self.num_updates += 1
        return self.mean

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "std_ema": self.std_ema}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "std_ema" not in state:
            raise KeyError("MarginMomentsEMA state is missing ['std_ema'] (σ̄ of β-DPO)")
        super().load_state_dict(state)
        self.std_ema = float(state["std_ema"])

    def __repr__(self) -> str:
        return f"MarginMomentsEMA(mean={self.mean:.6g}, std={self.std_ema:.6g}, num_updates={self.num_updates})"
