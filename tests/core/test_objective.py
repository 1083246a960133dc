"""Closed-form checks of the pure DAMA functions (docs/paper_mapping.md §1–§5). Expected values are written out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from dama.objective import (
    combine_beta,
    dama_loss,
    data_aware_factor,
    model_aware_factor,
    reduce_loss,
    reduce_loss_per_rank,
    sample_keep_mask,
)
from dama.state import RewardGapEMA


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def logps_for_margins(margins: list[float]) -> tuple[torch.Tensor, ...]:
    """Policy/reference log-probs whose margins h_i are the given round numbers."""
    h = torch.tensor(margins)
    zeros = torch.zeros_like(h)
    # chosen log-ratio = h, rejected log-ratio = 0
    return -10.0 + h, torch.full_like(h, -20.0), torch.full_like(h, -10.0), torch.full_like(h, -20.0) + zeros


def test_dama_loss_closed_form_scalar_beta():
    pc, pr, rc, rr = logps_for_margins([0.0, 10.0, -10.0])
    losses, chosen_r, rejected_r = dama_loss(pc, pr, rc, rr, beta=0.1)
    # −log σ(0.1·h): h=0 → log 2; h=10 → −log σ(1); h=−10 → −log σ(−1)
    expected = [math.log(2.0), -math.log(sig(1.0)), -math.log(sig(-1.0))]
    assert losses.tolist() == pytest.approx(expected, abs=1e-6)
    assert losses.tolist() == pytest.approx([0.693147, 0.313262, 1.313262], abs=1e-6)
    assert chosen_r.tolist() == pytest.approx([0.0, 1.0, -1.0], abs=1e-6)
    assert rejected_r.tolist() == pytest.approx([0.0, 0.0, 0.0], abs=1e-6)


def test_dama_loss_per_pair_beta_equals_scalar_calls():
    pc, pr, rc, rr = logps_for_margins([2.0, -4.0, 8.0, 0.5])
    betas = torch.tensor([0.05, 0.1, 0.2, 0.4])
    batched, bc, br = dama_loss(pc, pr, rc, rr, betas)
    for i in range(4):
        single, sc, sr = dama_loss(pc[i : i + 1], pr[i : i + 1], rc[i : i + 1], rr[i : i + 1], float(betas[i]))
        assert batched[i].item() == pytest.approx(single.item(), abs=1e-7)
        assert bc[i].item() == pytest.approx(sc.item(), abs=1e-7)
    # β=0.2, h=8 → −log σ(1.6)
    assert batched[2].item() == pytest.approx(-math.log(sig(1.6)), abs=1e-6)


def test_no_gradient_reaches_beta_and_masked_pairs_get_none():
    pc = torch.tensor([-5.0, -6.0], requires_grad=True)
    beta = torch.tensor([0.1, 0.3], requires_grad=True)
    losses, _, _ = dama_loss(
        pc,
        torch.tensor([-7.0, -7.0]),
        torch.tensor([-5.0, -6.0]),
        torch.tensor([-7.0, -7.0]),
        beta,
        keep_mask=torch.tensor([True, False]),
    )
    losses.sum().backward()
    assert beta.grad is None
    # d/dpc −log σ(β h) at h=0 = −β σ(0) = −β/2 for the kept pair, 0 for the dropped one
    assert pc.grad.tolist() == pytest.approx([-0.05, 0.0], abs=1e-7)
    assert losses[1].item() == 0.0


def test_reduce_loss_is_mean_over_kept_and_distributes_over_ranks():
    losses = torch.tensor([1.0, 2.0, 0.0, 3.0])  # third pair dropped
    assert reduce_loss(losses, n_kept_global=3).item() == pytest.approx(2.0)
    # two ranks with K=6 kept in total: each rank returns W·Σ_local/K; the DDP average is the global mean
    rank0 = reduce_loss(torch.tensor([1.0, 2.0, 0.0, 3.0]), 6, world_size=2)
    rank1 = reduce_loss(torch.tensor([4.0, 0.0, 5.0, 6.0]), 6, world_size=2)
    assert ((rank0 + rank1) / 2).item() == pytest.approx(21.0 / 6.0)
    assert reduce_loss(torch.zeros(3), 0).item() == 0.0  # max(K, 1): no division by zero


def test_per_rank_normalisation_is_the_official_mean_of_rank_means():
    # injadlu/DAMA train_dpo.py lines 1343-1349, W = 2 ranks × B = 4, worked by hand:
    # rank 0 keeps pairs 0, 1, 3 of ℓ = [1, 2, 3, 4]: (1 + 2 + 4) / 3 = 7/3
    # rank 1 keeps pair 1 of ℓ = [5, 6, 7, 8]:         6 / 1 = 6
    # DDP averages the ranks: (7/3 + 6) / 2 = 25/6, where Eq. 2's global mean is (1 + 2 + 4 + 6) / 4 = 13/4
    mask0, mask1 = torch.tensor([True, True, False, True]), torch.tensor([False, True, False, False])
    losses0 = torch.tensor([1.0, 2.0, 3.0, 4.0]) * mask0  # `dama_loss` zeroes the dropped pairs
    losses1 = torch.tensor([5.0, 6.0, 7.0, 8.0]) * mask1
    rank0, rank1 = reduce_loss_per_rank(losses0, mask0), reduce_loss_per_rank(losses1, mask1)
    assert rank0.item() == pytest.approx(7.0 / 3.0) and rank1.item() == pytest.approx(6.0)
    assert ((rank0 + rank1) / 2).item() == pytest.approx(25.0 / 6.0)
    glob = (reduce_loss(losses0, 4, world_size=2) + reduce_loss(losses1, 4, world_size=2)) / 2
    assert glob.item() == pytest.approx(13.0 / 4.0)
    # a rank that keeps nothing contributes 0 (the official count of 0 is replaced by 1)
    assert reduce_loss_per_rank(torch.zeros(4), torch.zeros(4, dtype=torch.bool)).item() == 0.0
    # equal kept counts on every rank: the two normalisations agree
    even = torch.tensor([True, False, True, False])
    raw0, raw1 = torch.tensor([1.0, 2.0, 3.0, 4.0]) * even, torch.tensor([5.0, 6.0, 7.0, 8.0]) * even
    per_rank = (reduce_loss_per_rank(raw0, even) + reduce_loss_per_rank(raw1, even)) / 2
    global_ = (reduce_loss(raw0, 4, world_size=2) + reduce_loss(raw1, 4, world_size=2)) / 2
    assert per_rank.item() == pytest.approx(global_.item()) == pytest.approx((1 + 3 + 5 + 7) / 4)


def test_data_aware_factor_closed_form():
    delta = torch.tensor([0.0, 0.5, -1.0, 0.2])
    alpha = data_aware_factor(delta, 0.2)
    expected = [sig(0.0) / sig(0.2), sig(0.5) / sig(0.2), sig(-1.0) / sig(0.2), 1.0]
    assert alpha.tolist() == pytest.approx(expected, abs=1e-6)
    assert alpha.tolist() == pytest.approx([0.909365, 1.132086, 0.489132, 1.0], abs=1e-5)
    assert data_aware_factor(torch.tensor([0.0482190464911681]), 0.0482190464911681).item() == pytest.approx(1.0)


def test_model_aware_factor_no_filter_closed_form():
    margins = torch.tensor([0.0, 1.0, 2.0, -1.0])
    alpha, mask = model_aware_factor(margins, running_mean=0.0, keep_ratio=1.0)
    assert mask.all()
    # mean σ(R_i) / σ(0) = 2 · (0.5 + 0.731059 + 0.880797 + 0.268941)/4
    assert alpha.item() == pytest.approx(2 * (0.5 + sig(1) + sig(2) + sig(-1)) / 4, abs=1e-6)
    assert alpha.item() == pytest.approx(1.190399, abs=1e-5)
    paper, _ = model_aware_factor(margins, running_mean=1.0, keep_ratio=1.0, form="sigmoid_mean")
    assert paper.item() == pytest.approx(sig(0.5) / sig(1.0), abs=1e-6)


def test_model_aware_factor_filter_keeps_central_margins():
    # |R − R̄| = 0, 0.1, 30, 40: the outliers have weight e^{-450}, e^{-800} (exactly 0 in fp32) — kept last
    margins = torch.tensor([1.0, 1.1, 31.0, -39.0])
    for seed in range(5):
        alpha, mask = model_aware_factor(margins, 1.0, keep_ratio=0.5, generator=torch.Generator().manual_seed(seed))
        assert mask.tolist() == [True, True, False, False]
        assert alpha.item() == pytest.approx((sig(1.0) + sig(1.1)) / 2 / sig(1.0), abs=1e-6)


def test_filter_is_deterministic_given_generator_and_k_is_floor():
    margins = torch.randn(16, generator=torch.Generator().manual_seed(3))
    a1, m1 = model_aware_factor(margins, 0.0, 0.8, generator=torch.Generator().manual_seed(7))
    a2, m2 = model_aware_factor(margins, 0.0, 0.8, generator=torch.Generator().manual_seed(7))
    assert torch.equal(m1, m2) and a1.item() == a2.item()
    assert int(m1.sum()) == 12  # ⌊0.8 · 16⌋


def test_filter_edge_cases_never_crash():
    gen = torch.Generator().manual_seed(0)
    # N = 1: K = max(1, ⌊0.8⌋) = 1, the single pair is kept
    alpha, mask = model_aware_factor(torch.tensor([2.0]), 0.0, 0.8, gen)
    assert mask.tolist() == [True] and alpha.item() == pytest.approx(sig(2.0) / 0.5)
    # every weight underflows in linear space (|R − R̄| ≥ 1e3): log-space ranking still picks the closest ones
    far = torch.tensor([1000.0, 1001.0, 5000.0, -3000.0, 1000.5])
    _, mask = model_aware_factor(far, 0.0, 0.6, torch.Generator().manual_seed(1))  # K = ⌊0.6·5⌋ = 3
    assert mask.tolist() == [True, True, False, False, True]
    # fewer non-zero weights than K (±inf and NaN margins): the finite ones first, then a deterministic fill by index
    odd = torch.tensor([float("inf"), 0.1, float("nan"), -float("inf"), 0.2])
    _, m1 = model_aware_factor(odd, 0.0, 0.8, torch.Generator().manual_seed(0))
    _, m2 = model_aware_factor(odd, 0.0, 0.8, torch.Generator().manual_seed(99))
    assert m1.tolist() == m2.tolist() == [True, True, True, False, True]
    assert int(sample_keep_mask(torch.full((4,), float("-inf")), 2).sum()) == 2


def test_combine_beta_clamps_below_only():
    alpha_d = torch.tensor([2.0, 0.5, 1e-5])
    beta = combine_beta(0.1, alpha_d, torch.tensor(3.0), beta_min=1e-3)
    assert beta.tolist() == pytest.approx([0.6, 0.15, 1e-3], abs=1e-7)
    assert combine_beta(0.1) == 0.1  # both strategies off: the plain DPO β


def test_reward_gap_ema_update_and_state_roundtrip():
    ema = RewardGapEMA(gamma=0.9)
    ema.update(torch.tensor([1.0, 3.0]))  # 0.9·0 + 0.1·2
    assert ema.mean == pytest.approx(0.2)
    ema.update(torch.tensor([-1.0, 1.0]))  # 0.9·0.2 + 0.1·0
    assert ema.mean == pytest.approx(0.18)
    restored = RewardGapEMA()
    restored.load_state_dict(ema.state_dict())
    assert restored.mean == ema.mean and restored.num_updates == 2
    g1, g2 = ema.generator(seed=5), restored.generator(seed=5)
    assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))
    with pytest.raises(KeyError):
        RewardGapEMA().load_state_dict({"gamma": 0.9})
