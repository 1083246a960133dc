"""The step metrics of `DAMATrainer`: TRL's DPO metrics (same definitions, `docs/metrics.md`) plus `dama/*`.

Everything a step logs is reduced over data-parallel ranks with one gather and read with one host sync; the same
sync carries the loss and Σ β_C, so a non-finite value on any rank stops every rank at the same step.
`StepMetricsMixin` expects TRL's `DPOTrainer` below it (`_metrics`, `accelerator`, `aux_loss_enabled`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from dama.errors import NonFiniteError


class StepMetricsMixin:
    """`_log_step_metrics`, called once per `_compute_loss`."""

    @torch.no_grad()
    def _log_step_metrics(
        self,
        mode: str,
        inputs: dict[str, torch.Tensor],
        outputs: Any,
        seq_len: int,
        chosen_logps: torch.Tensor,
        rejected_logps: torch.Tensor,
        chosen_rewards: torch.Tensor,
        rejected_rewards: torch.Tensor,
        stats: dict[str, torch.Tensor],
        guard: tuple[torch.Tensor | float, torch.Tensor | float] | None = None,
        extra: dict[str, tuple[torch.Tensor | float, torch.Tensor | float]] | None = None,
    ) -> None:
        """TRL's DPO metrics (same definitions, `docs/metrics.md`) plus `dama/*`, with one gather and one host sync.

        Rewards are β_C-scaled: with DAMA off that is TRL's β·log-ratio. `guard` is `(loss, Σ β_C)` of this rank: they
        are summed over ranks in the same gather, so a NaN or infinity on any rank stops every rank at the same step
        with `NonFiniteError` (training on would write a NaN model; TRL's logging would even show the loss as 0).
        `extra` adds per-rank metrics as (local sum, local count), reduced like TRL's (mDPO's imageless rewards).
        """
        mask = inputs["completion_mask"][..., 1:]
        chosen_mask, rejected_mask = mask.bool().chunk(2, dim=0)
        chosen_mean_logits, rejected_mean_logits = outputs.mean_logits[:, -seq_len:].chunk(2, dim=0)
        chosen_is_top1, _ = outputs.is_top1[:, -seq_len:].chunk(2, dim=0)
        b = float(chosen_rewards.numel())
        # name -> (local numerator, local denominator); global value = Σ numerators / Σ denominators
        # masked sums, not boolean indexing: indexing has a data-dependent shape, i.e. a host sync on GPU
        fractions = {
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
        if self.aux_loss_enabled:
            fractions["aux_loss"] = (outputs.aux_loss, 1.0)
        fractions.update(extra or {})
        device = chosen_rewards.device

        def scalar(value: torch.Tensor | float) -> torch.Tensor:
            # a Python number is filled in on the device: as_tensor would copy it from the host, a blocking copy on GPU
            if isinstance(value, torch.Tensor):
                return value.detach().float().reshape(()).to(device)
            return torch.full((), value, dtype=torch.float32, device=device)

        checks = [scalar(v) for v in guard] if guard is not None else []
        local = torch.stack(
            [scalar(v) for pair in fractions.values() for v in pair]
            + [inputs["attention_mask"].sum().float().to(device)]
            + checks
        )
        totals = self.accelerator.gather(local.unsqueeze(0)).sum(dim=0)
        stat_values = [v.detach().float().reshape(()).to(device) for v in stats.values()]
        values = torch.cat([totals, torch.stack(stat_values)]) if stat_values else totals
        values = values.tolist()  # the one host sync of the step's metrics
        for i, name in enumerate(fractions):
            num, den = values[2 * i], values[2 * i + 1]
            self._metrics[mode][name].append(num / den if den > 0 else 0.0)
        n_tokens = values[2 * len(fractions)]
        if checks:
            loss_total, beta_total = values[2 * len(fractions) + 1 : 2 * len(fractions) + 3]
            if not (math.isfinite(loss_total) and math.isfinite(beta_total)):
                what = "β_C (the per-pair β, Eq. 16)" if not math.isfinite(beta_total) else "loss"
                raise NonFiniteError(
                    f"non-finite {what} at {mode} step {self.state.global_step + 1} (β_C sum {beta_total}, loss "
                    f"{loss_total}); training stopped and the model is not saved. Check the inputs (hardness δ, δ̄, "
                    "reference log-probs) or lower the learning rate; checkpoints written before this step are kept"
                )
        if mode == "train":
            self._total_train_tokens += int(n_tokens) // self._tp_size
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        for name, value in zip(stats, values[2 * len(fractions) + 1 + len(checks) :]):
            self._metrics[mode][name].append(value)
