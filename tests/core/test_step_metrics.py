"""The step metrics without a trainer: each metric is Σ numerators / Σ denominators over ranks, read in one sync."""

from __future__ import annotations

import pytest
import torch

from dama.errors import NonFiniteError
from dama.step_metrics import check_finite_step, reduce_step_metrics


class TwoRanks:
    """An accelerator whose `gather` stacks this rank's row with another rank's (given) row, as two ranks would."""

    device = torch.device("cpu")

    def __init__(self, other: torch.Tensor) -> None:
        self.other = other

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        return torch.cat([local, self.other.reshape(1, -1)])


def test_fractions_are_summed_over_ranks_before_dividing():
    """Rank 0: rewards sum 3 over 2 pairs, entropy 1 over 4 tokens; rank 1: 5 over 2, 3 over 0 tokens. Global:
    (3 + 5) / (2 + 2) = 2, (1 + 3) / (4 + 0) = 1 (not the mean of rank means, 1.5 / 0.25 + …); tokens 7 + 9."""
    other = torch.tensor([5.0, 2.0, 3.0, 0.0, 9.0, 0.5, 0.2])  # the other rank's [num, den, num, den, tokens, guard]
    reduced = reduce_step_metrics(
        TwoRanks(other),
        {"rewards/chosen": (torch.tensor(3.0), 2.0), "entropy": (torch.tensor(1.0), torch.tensor(4.0))},
        {"dama/alpha_m": torch.tensor(0.9)},
        torch.tensor(7.0),
        guard=(torch.tensor(0.25), 0.1),
    )
    assert reduced.fractions == {"rewards/chosen": 2.0, "entropy": 1.0}
    assert reduced.n_tokens == 16.0
    assert reduced.guard == pytest.approx((0.75, 0.3))
    assert reduced.stats == {"dama/alpha_m": pytest.approx(0.9)}


def test_a_zero_denominator_gives_zero_and_a_non_finite_guard_stops():
    other = torch.tensor([0.0, 0.0, 0.0, float("nan"), 1.0])
    reduced = reduce_step_metrics(TwoRanks(other), {"logits/chosen": (0.0, 0.0)}, {}, 2.0,
                                  guard=(torch.tensor(0.5), 1.0))  # fmt: skip
    assert reduced.fractions == {"logits/chosen": 0.0}
    with pytest.raises(NonFiniteError, match="non-finite loss at train step 3"):
        check_finite_step(*reduced.guard, "train", 3)
    with pytest.raises(NonFiniteError, match="β_C"):
        check_finite_step(0.5, float("inf"), "eval", 1)
    check_finite_step(0.5, 1.0, "train", 1)  # finite: no error
