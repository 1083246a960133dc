"""The DAMA objective as pure functions of tensors (docs/paper_mapping.md §1–§6; Lu et al., ICML 2025, Eq. 2–16).

Nothing here knows about trainers, accelerators or configs: inputs are `(B,)` or `(N,)` tensors, outputs are tensors.
Shapes: B = pairs on this process, N = pairs in the global micro-batch (B × world size).

Notation (`docs/paper_mapping.md`): h_i = [log πθ(y_w) − log πref(y_w)] − [log πθ(y_l) − log πref(y_l)] is the margin of pair i,
log π being the *sum* of response-token log-probs.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

REWARD_SCALES = ("margin", "beta_margin")
MODEL_AWARE_FORMS = ("mean_sigmoid", "sigmoid_mean")
EMA_INPUTS = ("all", "kept")
LOSS_NORMALISATIONS = ("global", "per_rank")


def data_aware_factor(delta: torch.Tensor, delta_mean: float | torch.Tensor) -> torch.Tensor:
    """α_D,i = σ(δ_i) / σ(δ̄)  (Eq. 6).

    Args:
        delta: `(B,)` hardness gaps δ_i = score_w − score_l ∈ [−1, 1] (large = easy pair).
        delta_mean: δ̄, the dataset mean of δ (the official data used 0.0482190464911681).

    Returns:
        `(B,)` factors, > 1 for pairs easier than average, < 1 for harder ones, exactly 1 where δ_i = δ̄.
    """
    delta = delta.float()
    delta_mean = torch.as_tensor(delta_mean, dtype=torch.float32, device=delta.device)
    return torch.sigmoid(delta) / torch.sigmoid(delta_mean)


def outlier_log_weights(
    rewards: torch.Tensor, running_mean: float | torch.Tensor, running_std: float | torch.Tensor | None = None
) -> torch.Tensor:
    """log w_i = −½ ((R_i − R̄) / s)²  (Eq. 9; s = 1 in the official code, a running std as an option).

    Kept in log space so that no weight underflows to zero however far a margin lies from R̄.
    """
    centred = rewards.float() - torch.as_tensor(running_mean, dtype=torch.float32, device=rewards.device)
    if running_std is not None:
        centred = centred / torch.as_tensor(running_std, dtype=torch.float32, device=rewards.device).clamp_min(1e-6)
    return -0.5 * centred.square()


def sample_keep_mask(log_weights: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw k of N indices without replacement with probability ∝ exp(log_weights) (Eq. 10–11).

    Gumbel-top-k: adding i.i.d. Gumbel noise to log-weights and keeping the k largest is the same distribution as k
    successive multinomial draws without replacement, but it cannot fail: weights of exactly zero (log = −inf) or
    NaN are ranked last, and ties are broken by index with a stable sort, so when fewer than k weights are positive
    the mask is filled deterministically. The noise is drawn on the CPU from `generator`, so every data-parallel rank
    holding the same generator state draws the same mask.

    Args:
        log_weights: `(N,)` log-weights.
        k: number of indices to keep, 0 ≤ k ≤ N.
        generator: a CPU `torch.Generator`; `None` uses the global RNG.

    Returns:
        `(N,)` bool mask with exactly k True entries, on `log_weights.device`.
    """
    n = log_weights.numel()
    if not 0 <= k <= n:
        raise ValueError(f"k must be in [0, {n}], got {k}")
    keys = log_weights.detach().float().cpu()
    keys = torch.where(torch.isnan(keys), torch.full_like(keys, float("-inf")), keys)
    uniform = torch.rand(n, generator=generator, dtype=torch.float64).clamp_(1e-12, 1.0 - 1e-12)
    gumbel = -torch.log(-torch.log(uniform)).float()
    keys = torch.where(torch.isfinite(keys), keys + gumbel, keys)
    order = torch.sort(keys, descending=True, stable=True).indices
    mask = torch.zeros(n, dtype=torch.bool)
    mask[order[:k]] = True
    return mask.to(log_weights.device)


def model_aware_factor(
    margins: torch.Tensor,
    running_mean: float | torch.Tensor,
    keep_ratio: float,
    generator: torch.Generator | None = None,
    *,
    form: str = "mean_sigmoid",
    running_std: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """α_M and the outlier keep-mask from the global batch of reward gaps (Eq. 8–12).

    1. w_i = exp(−½ (R_i − R̄)²) (optionally with (R_i − R̄)/s);
    2. keep K = ⌊ρ·N⌋ pairs drawn ∝ w without replacement (ρ = 1: keep all, no draw);
    3. α_M = mean_{i∈K} σ(R_i) / σ(R̄)  (`form="mean_sigmoid"`, official code)
       or σ(mean_{i∈K} R_i) / σ(R̄)  (`form="sigmoid_mean"`, paper reading).

    Args:
        margins: `(N,)` detached reward gaps R_i, gathered over all ranks (same order on every rank).
        running_mean: R̄ before this step's update.
        keep_ratio: ρ ∈ (0, 1].
        generator: CPU generator for the draw; same state on every rank gives the same mask.
        form: see 3.
        running_std: optional s for the std-normalised filter.

    Returns:
        `alpha_m`: 0-dim tensor; `keep_mask`: `(N,)` bool. K is at least 1 so a step always has a loss.
    """
    if form not in MODEL_AWARE_FORMS:
        raise ValueError(f"form must be one of {MODEL_AWARE_FORMS}, got {form!r}")
    if not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
    rewards = margins.detach().float()
    n = rewards.numel()
    if n == 0:
        raise ValueError("model_aware_factor needs at least one margin")
    k = max(1, int(keep_ratio * n + 1e-9))  # ⌊ρN⌋, tolerant to ρN landing just below an integer
    if k >= n:
        keep_mask = torch.ones(n, dtype=torch.bool, device=rewards.device)
    else:
        keep_mask = sample_keep_mask(outlier_log_weights(rewards, running_mean, running_std), k, generator)
    r_bar = torch.as_tensor(running_mean, dtype=torch.float32, device=rewards.device)
    kept = rewards[keep_mask]
    kept = torch.nan_to_num(kept, nan=0.0)
    if form == "mean_sigmoid":
        numerator = torch.sigmoid(kept).mean()
    else:
        numerator = torch.sigmoid(kept.mean())
    return numerator / torch.sigmoid(r_bar), keep_mask


def combine_beta(
    beta: float,
    alpha_d: torch.Tensor | None = None,
    alpha_m: torch.Tensor | float | None = None,
    beta_min: float = 1e-3,
) -> torch.Tensor | float:
    """β_C,i = max(β · α_D,i · α_M, β_min)  (Eq. 15–16). No upper clamp. With both factors absent returns β itself."""
    if alpha_d is None and alpha_m is None:
        return beta
    factor = torch.ones(()) if alpha_d is None else alpha_d.detach().float()
    if alpha_m is not None:
        factor = factor * torch.as_tensor(alpha_m).detach().float().to(factor.device)
    return (beta * factor).clamp_min(beta_min)


class DamaBeta(NamedTuple):
    """What `dama_beta` computes for one global micro-batch of N pairs."""

    beta: torch.Tensor  # (N,) float32 β_C,i
    keep_mask: torch.Tensor  # (N,) bool, the kept set K (all True without the filter)
    alpha_m: torch.Tensor  # 0-dim α_M, computed even when `model_aware=False` (the filter and the metrics use it)
    rewards: torch.Tensor  # (N,) float32 R_i
    ema_values: torch.Tensor  # R_i that feed R̄'s update (Eq. 14): all N, or the kept ones


def dama_beta(
    margins: torch.Tensor,
    alpha_d: torch.Tensor | None,
    running_mean: float | torch.Tensor,
    *,
    beta: float,
    beta_min: float = 1e-3,
    model_aware: bool = True,
    keep_ratio: float = 1.0,
    generator: torch.Generator | None = None,
    reward_scale: str = "margin",
    form: str = "mean_sigmoid",
    running_std: float | torch.Tensor | None = None,
    ema_input: str = "all",
) -> DamaBeta:
    """β_C for the global micro-batch: R_i → outlier filter and α_M → β_C,i = max(β · α_D,i · α_M, β_min).

    1. R_i = h_i (`reward_scale="margin"`, official code) or β·h_i (`"beta_margin"`, paper reading), detached;
    2. keep-mask and α_M against R̄ (`model_aware_factor`, Eq. 8–12);
    3. β_C,i (`combine_beta`, Eq. 15–16), with α_M only when `model_aware`, α_D only when given;
    4. the values R̄ is updated with after the step (Eq. 14): all R_i (`ema_input="all"`, code) or the kept ones.

    Args:
        margins: `(N,)` margins h_i gathered over all ranks, in the same (rank-major) order on every rank.
        alpha_d: `(N,)` data-aware factors α_D,i in the same order, or None when the data-aware strategy is off.
        running_mean: R̄ before this step's update.
        beta, beta_min: β and the lower clamp of β_C.
        model_aware: scale β by α_M.
        keep_ratio: ρ ∈ (0, 1]; 1 keeps every pair without a draw.
        generator: CPU generator of the draw; the same state on every rank gives the same mask.
        reward_scale, form, running_std, ema_input: the options above and of `model_aware_factor`.

    Returns:
        `DamaBeta`; the caller slices its rank's `(B,)` part of `beta` and `keep_mask`.
    """
    for name, value, choices in (
        ("reward_scale", reward_scale, REWARD_SCALES),
        ("ema_input", ema_input, EMA_INPUTS),
    ):
        if value not in choices:
            raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    rewards = margins.detach().float() * (beta if reward_scale == "beta_margin" else 1.0)  # (N,)
    alpha_m, keep_mask = model_aware_factor(
        rewards, running_mean, keep_ratio, generator, form=form, running_std=running_std
    )
    combined = combine_beta(beta, alpha_d, alpha_m if model_aware else None, beta_min)
    combined = torch.as_tensor(combined, dtype=torch.float32, device=rewards.device).expand_as(rewards)  # (N,)
    ema_values = rewards if ema_input == "all" else rewards[keep_mask]
    return DamaBeta(combined, keep_mask, alpha_m.reshape(()), rewards, ema_values)


def dama_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float | torch.Tensor,
    keep_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO loss with a per-pair, gradient-free β (Eq. 2): ℓ_i = m_i · (−log σ(β_i · h_i)).

    The batch loss of Eq. 2 is `losses.sum() / max(keep_mask.sum(), 1)` (see `reduce_loss`). With β a float and
    no mask this is exactly the sigmoid loss of DPO (Rafailov et al., 2023, Eq. 7).

    Args:
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps: `(B,)` summed
            response log-probs.
        beta: a float or a `(B,)` tensor β_C; it is detached — no gradient reaches it.
        keep_mask: optional `(B,)` bool; dropped pairs get loss 0 (and therefore no gradient).

    Returns:
        `losses` `(B,)` (fp32), `chosen_rewards` `(B,)` = β_i·(log πθ(y_w) − log πref(y_w)), `rejected_rewards` `(B,)`,
        both rewards detached.
    """
    chosen_logratios = policy_chosen_logps.float() - ref_chosen_logps.float()
    rejected_logratios = policy_rejected_logps.float() - ref_rejected_logps.float()
    if isinstance(beta, torch.Tensor):
        beta = beta.detach().float().to(chosen_logratios.device)
    losses = -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))
    if keep_mask is not None:
        losses = losses * keep_mask.to(losses.dtype)
    chosen_rewards = (beta * chosen_logratios).detach()
    rejected_rewards = (beta * rejected_logratios).detach()
    return losses, chosen_rewards, rejected_rewards


def reduce_loss(losses: torch.Tensor, n_kept_global: int | torch.Tensor, world_size: int = 1) -> torch.Tensor:
    """This rank's share of Eq. 2's mean over kept pairs, such that averaging over ranks (DDP) gives the global mean.

    Global loss = Σ_{all ranks} Σ_i m_i ℓ_i / max(K, 1). DDP averages gradients over W ranks, so each rank returns
    W · Σ_local m_i ℓ_i / max(K, 1). With no filter (K = N = W·B) this is the plain per-rank mean.
    """
    n_kept = torch.as_tensor(n_kept_global, dtype=losses.dtype, device=losses.device).clamp_min(1.0)
    return losses.sum() * world_size / n_kept


def reduce_loss_per_rank(losses: torch.Tensor, keep_mask: torch.Tensor) -> torch.Tensor:
    """The official code's reduction: this rank's masked mean Σ_local m_i ℓ_i / max(Σ_local m_i, 1).

    injadlu/DAMA `llava/train/train_dpo.py` lines 1343-1349 (`local_mask = global_mask[rank*B:(rank+1)*B]`,
    `loss = masked_losses.sum() / effective_loss_count`, a count of 0 replaced by 1). DDP then averages over the W
    ranks, so the objective is (1/W) Σ_r Σ_{i∈r} m_i ℓ_i / max(K_r, 1): a kept pair weighs 1/(W·K_r) instead of the
    1/K of Eq. 2 (`reduce_loss`). The two agree when every rank keeps the same number of pairs
    (docs/paper_mapping.md §6, "Cross-GPU loss normalisation").

    Args:
        losses: `(B,)` this rank's per-pair losses, already multiplied by the mask (`dama_loss`).
        keep_mask: `(B,)` this rank's slice of the global keep-mask.
    """
    n_kept = keep_mask.to(losses.dtype).sum().clamp_min(1.0)
    return losses.sum() / n_kept


# ------------------------------------------------------------------------------------------------------- baselines
class BetaDpoBeta(NamedTuple):
    """What `beta_dpo_beta` computes for one global micro-batch of N pairs."""

    beta: torch.Tensor  # 0-dim float32 β_used, one β for the whole batch
    keep_mask: torch.Tensor  # (N,) bool, the pairs kept by the Gaussian filter
    kept_mean: torch.Tensor  # 0-dim mean of the kept margins, M_kept


def beta_dpo_beta(
    margins: torch.Tensor,
    gap_mean: float | torch.Tensor,
    gap_std: float | torch.Tensor,
    *,
    beta: float,
    alpha: float,
    keep_ratio: float,
    generator: torch.Generator | None = None,
    beta_min: float = 1e-3,
) -> BetaDpoBeta:
    """β-DPO's batch β (Wu et al., NeurIPS 2024; junkangwu/beta-DPO `trainers.py::preference_loss`, lines 74-89).

    1. w_i = exp(−½ ((A_i − M₀) / σ̄)²) on the raw margins A_i = h_i (no β) against the EMAs M₀, σ̄ *after* this
       step's update (`MarginMomentsEMA.update` runs first, as `get_batch_metrics` does);
    2. keep ⌊ρ·N⌋ pairs drawn ∝ w without replacement (official: `mode_weight` = 1 − ρ, `torch.multinomial`);
    3. β_used = β · (1 + α · (mean_{kept} A_i − M₀)), clamped at ≥ β_min (official: 1e-3), without gradient.

    The official draw fails on all-zero or NaN weights (step 0, where every A_i = 0 and σ̄ = 0); here the weights
    are taken in log space with σ̄ clamped at 1e-6 and drawn with `sample_keep_mask` (Gumbel-top-k), so a step
    never fails and every rank with the same generator draws the same set. K is at least 1.

    Args:
        margins: `(N,)` margins h_i gathered over all ranks (rank-major, same on every rank).
        gap_mean, gap_std: M₀ and σ̄ after this step's update.
        beta, alpha, keep_ratio, beta_min: β, a, ρ = 1 − mode_weight and the clamp.
        generator: CPU generator of the draw.
    """
    if not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
    a = margins.detach().float()
    n = a.numel()
    if n == 0:
        raise ValueError("beta_dpo_beta needs at least one margin")
    k = max(1, int(keep_ratio * n + 1e-9))
    if k >= n:
        keep_mask = torch.ones(n, dtype=torch.bool, device=a.device)
    else:
        keep_mask = sample_keep_mask(outlier_log_weights(a, gap_mean, gap_std), k, generator)
    m0 = torch.as_tensor(gap_mean, dtype=torch.float32, device=a.device)
    kept_mean = a[keep_mask].mean()
    beta_used = (beta * (1.0 + alpha * (kept_mean - m0))).clamp_min(beta_min)
    return BetaDpoBeta(beta_used.detach().reshape(()), keep_mask, kept_mean.reshape(()))


class MdpoLoss(NamedTuple):
    """Per-pair terms of the mDPO loss; every tensor is `(B,)`."""

    losses: torch.Tensor  # ℓ_DPO + ℓ_image + ℓ_anchor
    dpo: torch.Tensor  # −log σ(β·h)
    image: torch.Tensor  # −log σ(β·h_img)
    anchor: torch.Tensor  # −log σ(β·h_anc)
    chosen_rewards: torch.Tensor  # β·(log πθ(y_w|I) − log πref(y_w|I)), detached
    rejected_rewards: torch.Tensor  # β·(log πθ(y_l|I) − log πref(y_l|I)), detached
    imageless_rewards: torch.Tensor  # β·(log πθ(y_w|I′) − log πref(y_w|I′)), detached


def mdpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    policy_corrupt_chosen_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    ref_corrupt_chosen_logps: torch.Tensor,
    beta: float,
) -> MdpoLoss:
    """mDPO's loss (Wang et al., EMNLP 2024; luka-group/mDPO `mdpo_trainer.py::dpo_loss`, lines 92-135).

    h = [log πθ(y_w|I) − log πθ(y_l|I)] − [log πref(y_w|I) − log πref(y_l|I)] (response preference);
    h_img = [log πθ(y_w|I) − log πθ(y_w|I′)] − [log πref(y_w|I) − log πref(y_w|I′)] (image-conditional preference,
    I′ the corrupted image); h_anc = log πθ(y_w|I) − log πref(y_w|I) (anchor, threshold 0);
    ℓ_i = −log σ(β·h) − log σ(β·h_img) − log σ(β·h_anc). The batch loss is the mean over pairs.

    Args:
        policy_*, ref_*: `(B,)` summed response log-probs; `*_corrupt_chosen_*` is y_w with the corrupted image.
        beta: β of all three terms.
    """
    pc, pr, pi = policy_chosen_logps.float(), policy_rejected_logps.float(), policy_corrupt_chosen_logps.float()
    rc, rr, ri = ref_chosen_logps.float(), ref_rejected_logps.float(), ref_corrupt_chosen_logps.float()
    dpo = -F.logsigmoid(beta * ((pc - pr) - (rc - rr)))
    image = -F.logsigmoid(beta * ((pc - pi) - (rc - ri)))
    anchor = -F.logsigmoid(beta * (pc - rc))
    return MdpoLoss(
        dpo + image + anchor,
        dpo,
        image,
        anchor,
        (beta * (pc - rc)).detach(),
        (beta * (pr - rr)).detach(),
        (beta * (pi - ri)).detach(),
    )
