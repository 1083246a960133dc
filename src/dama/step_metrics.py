"""The step metrics of `DAMATrainer`: TRL's DPO metrics (same definitions, `docs/metrics.md`) plus `dama/*`.

Plain functions of tensors and an accelerator, so they can be tested without a trainer: `step_fractions` gives each
metric as a (local numerator, local denominator) pair, `reduce_step_metrics` reduces them over data-parallel ranks
with one gather and reads them with one host sync (the same sync carries the loss and Σ β_C), and
`check_finite_step` stops every rank at the same step when any rank's loss or β is not finite. `DAMATrainer`
writes the result into TRL's metric store.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch

from dama.errors import NonFiniteError


class StepMetrics(NamedTuple):
    """One step's metrics, reduced over ranks."""

    fractions: dict[str, float]  # Σ numerators / Σ denominators of every rank (0 when the denominator is 0)
    stats: dict[str, float]  # the global statistics as given (already equal on every rank)
    n_tokens: float  # Σ attention mask over ranks
    guard: tuple[float, float] | None  # (Σ loss, Σ β) over ranks, when a guard was given


def step_fractions(
    inputs: dict[str, torch.Tensor],
    outputs: Any,
    seq_len: int,
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
) -> dict[str, tuple[torch.Tensor | float, torch.Tensor | float]]:
    """TRL's DPO metrics of this rank as `name -> (numerator, denominator)`; the global value is Σ num / Σ den.

    `outputs` is the fused-head output of the policy forward (`entropy`, `mean_logits`, `is_top1` per token) on the
    collated rows `[chosen, rejected]`; rewards are β-scaled with the β the loss used.
    """
    mask = inputs["completion_mask"][..., 1:]
    chosen_mask, rejected_mask = mask.bool().chunk(2, dim=0)
    chosen_mean_logits, rejected_mean_logits = outputs.mean_logits[:, -seq_len:].chunk(2, dim=0)
    chosen_is_top1, _ = outputs.is_top1[:, -seq_len:].chunk(2, dim=0)
    b = float(chosen_rewards.numel())
    # masked sums, not boolean indexing: indexing has a data-dependent shape, i.e. a host sync on GPU
    return {
        "entropy": ((outputs.entropy[:, -seq_len:] * mask).sum(), mask.sum()),
        "logits/chosen": (torch.where(chosen_mask, chosen_mean_logits, 0).sum(), chosen_mask.sum()),
        "logits/rejected": (torch.where(rejected_mask, rejected_mean_logits, 0).sum(), rejected_mask.sum()),
        "mean_token_accuracy": ((chosen_is_top1 & chosen_mask).sum(), chosen_mask.sum()),
        "rewards/chosen": (chosen_rewards.sum(), b),
        "rewards/rejected": (rejected_rewards.sum(), b),
        "rewards/accuracies": ((chosen_rewards > rejected_rewards).sum(), b),
        "rewards/margins": ((chosen_rewards - rejected_rewards).sum(), b),
        "logps/chosen": (chosen_logps.sum(), b),
        "logps/rejected": (rejected_logps.sum(), b),
    }


@torch.no_grad()
def reduce_step_metrics(
    accelerator: Any,
    fractions: dict[str, tuple[torch.Tensor | float, torch.Tensor | float]],
    stats: dict[str, torch.Tensor],
    n_tokens: torch.Tensor | float,
    guard: tuple[torch.Tensor | float, torch.Tensor | float] | None = None,
    device: torch.device | str | None = None,
) -> StepMetrics:
    """Sum `fractions`' numerators and denominators, the token count and the guard over ranks (one gather), and read
    them with the global `stats` in one host sync."""
    device = device if device is not None else accelerator.device

    def scalar(value: torch.Tensor | float) -> torch.Tensor:
        # a Python number is filled in on the device: as_tensor would copy it from the host, a blocking copy on GPU
        if isinstance(value, torch.Tensor):
            return value.detach().float().reshape(()).to(device)
        return torch.full((), value, dtype=torch.float32, device=device)

    checks = [scalar(v) for v in guard] if guard is not None else []
    local = torch.stack([scalar(v) for pair in fractions.values() for v in pair] + [scalar(n_tokens)] + checks)
    totals = accelerator.gather(local.unsqueeze(0)).sum(dim=0)
    stat_values = [scalar(v) for v in stats.values()]
    values = (torch.cat([totals, torch.stack(stat_values)]) if stat_values else totals).tolist()  # the one sync
    n = 2 * len(fractions)
    reduced = {
        name: (values[2 * i] / values[2 * i + 1] if values[2 * i + 1] > 0 else 0.0) for i, name in enumerate(fractions)
    }
    guard_totals = (values[n + 1], values[n + 2]) if checks else None
    return StepMetrics(reduced, dict(zip(stats, values[n + 1 + len(checks) :])), values[n], guard_totals)


def check_finite_step(loss_total: float, beta_total: float, mode: str, step: int) -> None:
    """`NonFiniteError` when the loss or Σ β_C summed over ranks is not finite (training on would write a NaN model;
    TRL's logging would even show the loss as 0)."""
    if math.isfinite(loss_total) and math.isfinite(beta_total):
        return
    what = "β_C (the per-pair β, Eq. 16)" if not math.isfinite(beta_total) else "loss"
    raise NonFiniteError(
        f"non-finite {what} at {mode} step {step} (β_C sum {beta_total}, loss {loss_total}); training stopped and "
        "the model is not saved. Check the inputs (hardness δ, δ̄, reference log-probs) or lower the learning rate; "
        "checkpoints written before this step are kept"
    )
