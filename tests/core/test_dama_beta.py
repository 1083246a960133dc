"""Closed-form checks of `dama_beta`, the per-step β_C of the global micro-batch (docs/paper_mapping.md §3–§5).

Margins are chosen so every sigmoid is a round number: σ(0) = 1/2, σ(ln 3) = 3/4, σ(−ln 3) = 1/4.
"""

from __future__ import annotations

import math

import pytest
import torch

from dama.objective import dama_beta

LN3 = math.log(3.0)


def test_both_strategies_off_is_plain_beta():
    out = dama_beta(torch.tensor([1.0, -2.0, 0.5]), None, 0.0, beta=0.1, model_aware=False)
    assert out.beta.tolist() == pytest.approx([0.1, 0.1, 0.1])
    assert out.keep_mask.tolist() == [True, True, True]
    assert out.beta.dtype == torch.float32 and out.beta.shape == (3,)


def test_mean_sigmoid_alpha_m_and_data_aware_factors_multiply():
    # R = h = [ln3, −ln3, 0, 0], R̄ = ln3: α_M = mean(3/4, 1/4, 1/2, 1/2) / σ(ln3) = (1/2)/(3/4) = 2/3 (Eq. 12, code form)
    # β_C = max(0.1 · α_D · 2/3, 1e-3) (Eq. 15–16); the last pair, 0.1 · 0.001 · 2/3 ≈ 6.7e-5, is clamped to β_min
    margins = torch.tensor([LN3, -LN3, 0.0, 0.0])
    alpha_d = torch.tensor([1.0, 2.0, 0.5, 0.001])
    out = dama_beta(margins, alpha_d, LN3, beta=0.1, beta_min=1e-3)
    assert out.alpha_m.item() == pytest.approx(2 / 3, abs=1e-6)
    assert out.beta.tolist() == pytest.approx([0.1 * 2 / 3, 0.2 * 2 / 3, 0.05 * 2 / 3, 1e-3], abs=1e-7)
    assert out.ema_values.tolist() == pytest.approx(margins.tolist())  # `ema_input="all"`: every R_i feeds R̄


def test_sigmoid_mean_form():
    # R = [ln3, ln3, 0, 0], R̄ = 0: mean_sigmoid = (3/4 + 3/4 + 1/2 + 1/2)/4 / (1/2) = 5/4;
    # sigmoid_mean = σ(ln3 / 2) / (1/2) = 2·√3/(√3 + 1)
    margins = torch.tensor([LN3, LN3, 0.0, 0.0])
    code = dama_beta(margins, None, 0.0, beta=0.1)
    paper = dama_beta(margins, None, 0.0, beta=0.1, form="sigmoid_mean")
    assert code.alpha_m.item() == pytest.approx(1.25, abs=1e-6)
    assert paper.alpha_m.item() == pytest.approx(2 * math.sqrt(3) / (math.sqrt(3) + 1), abs=1e-6)
    assert code.beta.tolist() == pytest.approx([0.125] * 4, abs=1e-7)


def test_beta_margin_scales_the_reward_gap():
    # reward_scale="beta_margin": R_i = β·h_i, so h = [10 ln3, 10 ln3, 0, 0] with β = 0.1 gives R = [ln3, ln3, 0, 0]
    # and, with R̄ = 0, α_M = (3/4 + 3/4 + 1/2 + 1/2)/4 / (1/2) = 5/4
    margins = torch.tensor([10 * LN3, 10 * LN3, 0.0, 0.0])
    out = dama_beta(margins, None, 0.0, beta=0.1, reward_scale="beta_margin")
    assert out.rewards.tolist() == pytest.approx([LN3, LN3, 0.0, 0.0], abs=1e-6)
    assert out.alpha_m.item() == pytest.approx(1.25, abs=1e-6)
    # R_i = h_i instead: σ(10 ln3) = 3^10/(3^10 + 1) = 59049/59050, α_M = (2 · 59049/59050 + 1/2 + 1/2)/4 / (1/2)
    code = dama_beta(margins, None, 0.0, beta=0.1)
    assert code.alpha_m.item() == pytest.approx((2 * 59049 / 59050 + 1.0) / 2, abs=1e-6)


def test_filter_drops_outliers_and_kept_set_feeds_alpha_m_and_ema():
    # R̄ = 0; the filter weights of ±100 are exp(−5000): K = ⌊0.5·4⌋ = 2 keeps the two zeros whatever the draw.
    # α_M over K = σ(0)/σ(0) = 1; `ema_input="kept"` feeds R̄ only the kept R_i
    margins = torch.tensor([0.0, 100.0, 0.0, -100.0])
    out = dama_beta(
        margins, None, 0.0, beta=0.1, keep_ratio=0.5, generator=torch.Generator().manual_seed(0), ema_input="kept"
    )
    assert out.keep_mask.tolist() == [True, False, True, False]
    assert out.alpha_m.item() == pytest.approx(1.0)
    assert out.ema_values.tolist() == [0.0, 0.0]
    assert out.beta.tolist() == pytest.approx([0.1] * 4)


def test_model_aware_off_keeps_the_filter_but_not_alpha_m():
    # α_M = 2/3 as in the second case, reported but not applied: β_C = β · α_D
    margins = torch.tensor([LN3, -LN3, 0.0, 0.0])
    out = dama_beta(margins, torch.tensor([1.0, 2.0, 0.5, 1.0]), LN3, beta=0.1, model_aware=False)
    assert out.alpha_m.item() == pytest.approx(2 / 3, abs=1e-6)
    assert out.beta.tolist() == pytest.approx([0.1, 0.2, 0.05, 0.1], abs=1e-7)


def test_beta_carries_no_gradient():
    margins = torch.tensor([LN3, -LN3], requires_grad=True)
    out = dama_beta(margins, None, 0.0, beta=0.1)
    assert not out.beta.requires_grad and not out.rewards.requires_grad


@pytest.mark.parametrize(("option", "value"), [("reward_scale", "scaled"), ("ema_input", "some"), ("form", "median")])
def test_unknown_option_values_fail(option, value):
    with pytest.raises(ValueError, match=option):
        dama_beta(torch.zeros(2), None, 0.0, beta=0.1, **{option: value})
