"""β-DPO and mDPO as pure functions: hand-worked values and line-by-line transcriptions of the official code.

The transcriptions (`official_beta_dpo_step`, `official_mdpo_loss`) copy the official statements one by one, with
their line numbers, so that our functions are checked against what the official code computes and not against our
own reading of it. Sources: junkangwu/beta-DPO `trainers.py`; luka-group/mDPO `mdpo_trainer.py` and
`bunny/modeling_bunny_phi.py`.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dama.corruption import crop_box, crop_generator, crop_resize, patchify, random_resized_crop, unpatchify
from dama.objective import beta_dpo_beta, dama_loss, mdpo_loss, reduce_loss_per_rank
from dama.state import MarginMomentsEMA

LOG2 = math.log(2.0)


def official_beta_dpo_step(pc, pr, rc, rr, gap_mean, gap_std, beta, a, sample_index, gamma=0.9):
    """junkangwu/beta-DPO trainers.py, one training step of one process (world size 1), the draw given.

    `sample_index` replaces `torch.multinomial(weight_sample, sample_num, replacement=False)` (line 82), the one
    random statement; everything else is the official code.
    """
    # get_batch_metrics, lines 276-278
    gap_local = (pc - rc - pr + rr).detach()
    # update_and_sync_tensor_mean, lines 244-250 (gap statistics only)
    batch_gap_mean = gap_local.mean()
    batch_gap_std = gap_local.std()
    gap_mean = gap_mean * gamma + batch_gap_mean * (1 - gamma)
    gap_std = gap_std * gamma + batch_gap_std * (1 - gamma)
    # preference_loss, lines 71-91
    pi_logratios = pc - pr
    ref_logratios = rc - rr
    logits = pi_logratios - ref_logratios
    A = pc - rc - pr + rr  # line 76 (all_gather_if_needed is the identity for one process)
    weight_sample = torch.exp(-0.5 * ((A - gap_mean) / gap_std).pow(2))  # line 80
    one_hot_like = torch.zeros_like(weight_sample)
    one_hot_like[sample_index] = 1
    global_mask = one_hot_like.detach()
    A_used = torch.mean(A[sample_index])  # line 87
    beta_used = beta * (1 + a * (A_used - gap_mean))  # line 88
    beta_used = beta_used.clamp(min=1e-3)  # line 89
    losses = -F.logsigmoid(beta_used.detach() * logits)  # line 91
    # get_batch_metrics, lines 333-338
    local_mask = global_mask.float()
    masked_losses = losses * local_mask
    effective_loss_count = local_mask.sum()
    effective_loss_count = effective_loss_count if effective_loss_count > 0 else 1
    return masked_losses.sum() / effective_loss_count, beta_used, gap_mean, gap_std, weight_sample


def official_mdpo_loss(pc, pr, pi, rc, rr, ri, beta):
    """luka-group/mDPO mdpo_trainer.py `dpo_loss` (lines 102-135, reference_free False) and `losses.mean()` (200)."""
    pi_logratios = pc - pr
    ref_logratios = rc - rr
    logits = pi_logratios - ref_logratios
    image_conditional_pi_logratios = pc - pi
    image_conditional_ref_logratios = rc - ri
    image_conditional_logits = image_conditional_pi_logratios - image_conditional_ref_logratios
    anchor_logits = pc - rc
    losses = (
        -F.logsigmoid(beta * logits)
        - F.logsigmoid(beta * image_conditional_logits)
        - F.logsigmoid(beta * anchor_logits)
    )
    chosen_rewards = beta * (pc - rc).detach()
    rejected_rewards = beta * (pr - rr).detach()
    imageless_rewards = beta * (pi - ri).detach()
    return losses.mean(), chosen_rewards, rejected_rewards, imageless_rewards


# hand-made log-probs of 5 pairs: margins A = h = (pc − rc) − (pr − rr) = [1.0, 2.0, 3.0, −0.5, 0.25]
PC = torch.tensor([-10.0, -12.0, -9.0, -11.0, -8.0])
RC = torch.tensor([-11.0, -13.0, -10.0, -11.0, -8.25])
PR = torch.tensor([-20.0, -21.0, -22.0, -19.5, -15.0])
RR = torch.tensor([-20.0, -20.0, -20.0, -20.0, -15.0])


def test_hand_worked_beta_dpo_step():
    """A = [1, 2, 3], M₀ = σ̄ = 0 before: M₀ = 0.1·2 = 0.2, σ̄ = 0.1·std([1, 2, 3]) = 0.1·1 = 0.1 (unbiased std);
    all kept: β_used = 0.1·(1 + 0.6·(2 − 0.2)) = 0.208."""
    ema = MarginMomentsEMA(gamma=0.9)
    margins = torch.tensor([1.0, 2.0, 3.0])
    ema.update(margins)
    assert ema.mean == pytest.approx(0.2) and ema.std == pytest.approx(0.1)
    out = beta_dpo_beta(margins, ema.mean, ema.std, beta=0.1, alpha=0.6, keep_ratio=1.0)
    assert float(out.beta) == pytest.approx(0.208, abs=1e-7)
    assert out.keep_mask.all()
    # a second step, A = [0, 0, 6]: M₀ = 0.9·0.2 + 0.1·2 = 0.38, σ̄ = 0.9·0.1 + 0.1·std = 0.09 + 0.1·√12
    ema.update(torch.tensor([0.0, 0.0, 6.0]))
    assert ema.mean == pytest.approx(0.38) and ema.std == pytest.approx(0.09 + 0.1 * math.sqrt(12.0))
    # a = 0 gives a constant β; a very negative batch clamps at β_min
    assert float(beta_dpo_beta(margins, 0.2, 0.1, beta=0.1, alpha=0.0, keep_ratio=1.0).beta) == pytest.approx(0.1)
    low = beta_dpo_beta(torch.tensor([-50.0, -60.0]), 0.0, 1.0, beta=0.1, alpha=0.6, keep_ratio=1.0)
    assert float(low.beta) == pytest.approx(1e-3)


@pytest.mark.parametrize("keep_ratio", [1.0, 0.6])
def test_beta_dpo_matches_the_official_code_line_by_line(keep_ratio):
    prior_mean, prior_std = torch.tensor(0.4), torch.tensor(0.8)
    ema = MarginMomentsEMA(gamma=0.9)
    ema.load_state_dict({**ema.state_dict(), "mean": 0.4, "std_ema": 0.8})
    margins = (PC - RC) - (PR - RR)
    ema.update(margins)  # before the loss, as get_batch_metrics calls update_and_sync_tensor_mean first
    out = beta_dpo_beta(margins, ema.mean, ema.std, beta=0.1, alpha=0.6, keep_ratio=keep_ratio,
                        generator=torch.Generator().manual_seed(3))  # fmt: skip
    assert int(out.keep_mask.sum()) == int(5 * keep_ratio)  # official: int(N · (1 − mode_weight))
    index = out.keep_mask.nonzero().flatten()
    loss_ref, beta_ref, mean_ref, std_ref, weights = official_beta_dpo_step(
        PC, PR, RC, RR, prior_mean, prior_std, 0.1, 0.6, index
    )
    assert ema.mean == pytest.approx(float(mean_ref), rel=1e-6)
    assert ema.std == pytest.approx(float(std_ref), rel=1e-6)
    assert float(out.beta) == pytest.approx(float(beta_ref), rel=1e-6)
    losses, _, _ = dama_loss(PC, PR, RC, RR, out.beta.expand(5), out.keep_mask)
    assert float(reduce_loss_per_rank(losses, out.keep_mask)) == pytest.approx(float(loss_ref), rel=1e-6)
    # our weights are the official ones, in log space
    from dama.objective import outlier_log_weights

    ours = outlier_log_weights(margins, ema.mean, ema.std).exp()
    assert torch.allclose(ours, weights, rtol=1e-5)


def test_beta_dpo_draw_keeps_central_margins_more_often():
    """The draw is ∝ the official Gaussian weights: over many draws the margin nearest M₀ is kept most often."""
    margins = torch.tensor([0.0, 0.5, 1.0, 4.0, -3.0])
    counts = torch.zeros(5)
    for seed in range(400):
        out = beta_dpo_beta(margins, 0.5, 1.0, beta=0.1, alpha=0.6, keep_ratio=0.4,
                            generator=torch.Generator().manual_seed(seed))  # fmt: skip
        counts += out.keep_mask.float()
    assert counts[1] == counts.max() and counts[3] < 20 and counts[4] < 20


def test_beta_dpo_step_zero_and_single_pair_never_fail():
    """Step 0: policy = reference, every A = 0 and σ̄ = 0 (the official weights are 0/0 = NaN and multinomial fails)."""
    ema = MarginMomentsEMA()
    zeros = torch.zeros(4)
    ema.update(zeros)
    assert ema.mean == 0.0 and ema.std == 0.0
    out = beta_dpo_beta(zeros, ema.mean, ema.std, beta=0.1, alpha=0.6, keep_ratio=0.8,
                        generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert int(out.keep_mask.sum()) == 3 and float(out.beta) == pytest.approx(0.1)
    one = MarginMomentsEMA()
    one.update(torch.tensor([2.0]))  # no std of one value: σ̄ stays, M₀ moves
    assert one.std == 0.0 and one.mean == pytest.approx(0.2)
    assert int(beta_dpo_beta(torch.tensor([2.0]), 0.2, 0.0, beta=0.1, alpha=0.6, keep_ratio=0.8).keep_mask.sum()) == 1


def test_margin_moments_state_roundtrip_and_refuses_a_dama_state():
    ema = MarginMomentsEMA()
    ema.update(torch.tensor([1.0, 3.0]))
    copy = MarginMomentsEMA()
    copy.load_state_dict(ema.state_dict())
    assert (copy.mean, copy.std, copy.num_updates) == (ema.mean, ema.std, 1)
    with pytest.raises(KeyError, match="std_ema"):
        copy.load_state_dict({"mean": 0.0, "num_updates": 1})


def test_hand_worked_mdpo_loss():
    """Policy = reference: every log-ratio is 0, each term is log 2, the pair's loss 3·log 2."""
    zeros = torch.zeros(3)
    pc = torch.tensor([-5.0, -6.0, -7.0])
    terms = mdpo_loss(pc, pc - 3, pc - 1, pc, pc - 3, pc - 1, beta=0.1)
    assert torch.allclose(terms.losses, torch.full((3,), 3 * LOG2))
    assert torch.equal(terms.imageless_rewards, zeros)
    # one pair by hand, β = 0.5: h = (−1 − −4) − (−2 − −3) = 2, h_img = (−1 − −6) − (−2 − −3) = 4, h_anc = 1
    t = mdpo_loss(torch.tensor([-1.0]), torch.tensor([-4.0]), torch.tensor([-6.0]),
                  torch.tensor([-2.0]), torch.tensor([-3.0]), torch.tensor([-3.0]), beta=0.5)  # fmt: skip
    sp = lambda x: math.log1p(math.exp(-x))  # noqa: E731 - −log σ(x)
    assert float(t.dpo) == pytest.approx(sp(1.0)) and float(t.image) == pytest.approx(sp(2.0))
    assert float(t.anchor) == pytest.approx(sp(0.5))
    assert float(t.losses) == pytest.approx(sp(1.0) + sp(2.0) + sp(0.5))


def test_mdpo_matches_the_official_code_line_by_line():
    g = torch.Generator().manual_seed(0)
    logps = [-torch.rand(6, generator=g) * 30 for _ in range(6)]
    ours = mdpo_loss(*logps, beta=0.1)
    loss, chosen, rejected, imageless = official_mdpo_loss(*logps, beta=0.1)
    assert float(ours.losses.mean()) == pytest.approx(float(loss), rel=1e-6)
    assert torch.allclose(ours.chosen_rewards, chosen) and torch.allclose(ours.rejected_rewards, rejected)
    assert torch.allclose(ours.imageless_rewards, imageless)


# ------------------------------------------------------------------------------------------- the corrupted image
def test_crop_box_keeps_one_to_twenty_percent_of_the_area():
    """torchvision RandomResizedCrop.get_params with scale (0.01, 0.2), ratio (3/4, 4/3), on LLaVA's 336 × 336."""
    for draw in range(200):
        top, left, h, w = crop_box(336, 336, generator=crop_generator(0, draw, 0))
        assert 0 <= top and top + h <= 336 and 0 <= left and left + w <= 336
        assert 0.01 * 0.9 <= h * w / 336**2 <= 0.2 * 1.1  # rounding of h and w
        assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1
    # determinism: the same (seed, draw, pair) gives the same box, another pair another box
    assert crop_box(336, 336, generator=crop_generator(1, 2, 3)) == crop_box(
        336, 336, generator=crop_generator(1, 2, 3)
    )
    boxes = {crop_box(336, 336, generator=crop_generator(1, 2, p)) for p in range(8)}
    assert len(boxes) > 1


def test_crop_box_falls_back_to_the_centre_when_no_box_fits():
    """A 1 × 1000 image: a crop of ≥ 1% of the area (≥ 10 px) with w/h ≤ 4/3 needs h ≥ round(√(10 / (4/3))) = 3 > 1
    rows, so all 10 tries fail; torchvision's fallback is a centre crop at the nearest allowed ratio: the image's
    w/h > 4/3, so h = 1, w = round(1 · 4/3) = 1, left = (1000 − 1) // 2 = 499."""
    for seed in range(5):
        assert crop_box(1, 1000, generator=torch.Generator().manual_seed(seed)) == (0, 499, 1, 1)


def test_crop_resize_of_a_half_dark_image():
    image = torch.zeros(3, 16, 16)
    image[:, :, 8:] = 1.0  # the right half is bright
    assert torch.equal(crop_resize(image, (0, 0, 16, 16)), image)  # the whole box is the identity
    left = crop_resize(image, (2, 1, 6, 5))  # a box inside the dark half, resized back to 16 × 16
    assert left.shape == image.shape and torch.equal(left, torch.zeros_like(image))
    out = random_resized_crop(image, crop_generator(0, 0, 0))
    assert out.shape == image.shape and not torch.equal(out, image)


def test_qwen2_vl_patches_unpatchify_to_the_processed_image():
    """The tiny Qwen2-VL processor's patches of a left-dark / right-bright image come back as that image (both
    temporal copies equal, dark left, bright right), and patchify inverts unpatchify exactly."""
    from PIL import Image

    from dama.tiny import build_qwen2_vl

    model, processor = build_qwen2_vl()
    image = Image.new("RGB", (16, 16), (0, 0, 0))
    image.paste((255, 255, 255), (8, 0, 16, 16))
    out = processor.image_processor(images=[image], return_tensors="pt")
    grid = tuple(out["image_grid_thw"][0].tolist())
    vision = model.config.vision_config
    frames = unpatchify(out["pixel_values"], grid, 3, vision.patch_size, vision.spatial_merge_size,
                        vision.temporal_patch_size)  # fmt: skip
    assert frames.shape == (grid[0] * vision.temporal_patch_size, 3, grid[1] * vision.patch_size,
                            grid[2] * vision.patch_size)  # fmt: skip
    assert torch.equal(frames[0], frames[1])
    width = frames.shape[-1]
    assert frames[..., : width // 2].max() < frames[..., width // 2 :].min()
    again = patchify(frames, grid, vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size)
    assert torch.equal(again, out["pixel_values"])


def test_the_pure_losses_are_exported_beside_dama_loss():
    import dama

    for name in ("dama_loss", "dama_beta", "beta_dpo_beta", "mdpo_loss", "MarginMomentsEMA"):
        assert name in dama.__all__ and getattr(dama, name) is not None


def test_mdpo_dpo_term_is_dpo():
    """The first of mDPO's three terms is DPO's sigmoid loss (Rafailov et al., Eq. 7) of the same pair."""
    g = torch.Generator().manual_seed(1)
    pc, pr, pi, rc, rr, ri = (-torch.rand(4, generator=g) * 20 for _ in range(6))
    dpo, _, _ = dama_loss(pc, pr, rc, rr, 0.1)
    assert torch.allclose(mdpo_loss(pc, pr, pi, rc, rr, ri, beta=0.1).dpo, dpo)
