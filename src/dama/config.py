"""`DAMAConfig`: TRL's `DPOConfig` plus the fields of DAMA (Lu et al., ICML 2025; `docs/paper_mapping.md` maps each
field to its equation).

Where the paper and the official code (injadlu/DAMA) differ, the defaults follow the code and the paper reading is an
option. With `data_aware=False, model_aware=False, keep_ratio=1.0` the trainer is exactly TRL's sigmoid DPO.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from trl import DPOConfig

from dama.corruption import CROP_MODES
from dama.delta import HARDNESS_COLUMN, OFFICIAL_DELTA_MEAN
from dama.devices import resolve_device, resolve_dtype
from dama.errors import DamaError
from dama.objective import EMA_INPUTS, LOSS_NORMALISATIONS, MODEL_AWARE_FORMS, REWARD_SCALES


class RecipeError(DamaError, ValueError):
    """A recipe (YAML or command-line override) that cannot be used: unknown key, bad value, YAML syntax."""


@dataclass
class DAMAConfig(DPOConfig):
    r"""Configuration of [`DAMATrainer`]: every [`trl.DPOConfig`] field plus DAMA's.

    DAMA-specific fields (section of `docs/paper_mapping.md` in brackets):
        data_aware: use α_D = σ(δ)/σ(δ̄) from the hardness column (§2, Eq. 6).
        model_aware: use α_M from the batch's reward gaps against R̄ (§3, Eq. 8–12).
        keep_ratio: ρ of the outlier filter; 1.0 disables it (§3).
        gamma: γ of the running estimate R̄ (§4, Eq. 14).
        beta_min: lower clamp of β_C (§5, Eq. 16).
        delta_mean: δ̄ override; by default read from the hardness output, else the training-set mean of δ (§2).
        hardness_column: per-pair δ column (`dama hardness` writes `dama_delta`, `dama.row_fields.HARDNESS_COLUMN`).
        reward_scale: R_i = h_i (`margin`, code) or β·h_i (`beta_margin`, paper) (§3 step 1).
        model_aware_form: mean of sigmoids (`mean_sigmoid`, code) or sigmoid of the mean (`sigmoid_mean`, paper) (§3 step 3).
        ema_input: R̄ is fed the mean of all N gaps (`all`, code) or of the kept ones (`kept`, paper) (§4).
        filter_std: divide (R_i − R̄) by a running std in the filter weights (option; code: no) (§3 step 2).
        keep_file_order: iterate the training set in file order like the official code (default: shuffle) (§7).
        loss_normalisation: mean over the kept pairs of all ranks (`global`, Eq. 2) or of each rank, then averaged
            over ranks (`per_rank`, official code) (§1, §6).
        prefix_sharing: one forward of each pair's image and prompt for both answers (`dama.prefix`,
            docs/performance.md); falls back, with a logged reason, where the model or batch is not supported.

    Baselines in the same trainer (docs/paper_mapping.md §10–§11; which switches combine: `docs/baselines.md`):
        beta_dpo: β-DPO's batch β from the margins' running mean and std, with its Gaussian filter; `keep_ratio` is
            its 1 − mode_weight and `gamma` its EMA factor (§10).
        beta_dpo_alpha: a of β_used = β·(1 + a·(mean_kept A − M₀)) (§10).
        mdpo: mDPO's loss, DPO plus the image-conditional and anchor terms (§11).
        mdpo_crop: where mDPO's corrupted image is drawn: `paired` (per pair and step from the seed, the same for
            policy and reference) or `fresh` (a new crop at every forward, official code) (§11).
    """

    # TRL turns checkpointing on by default through `gradient_checkpointing`, which transformers 5 deprecates in favour of
    # `activation_checkpointing` and warns about on every construction. Same default (on), under the current name; the
    # old name still works (and still warns) when a user passes it.
    activation_checkpointing: bool | None = field(
        default=None,
        metadata={
            "help": "Recompute activations in the backward pass to save memory (default: on, as in TRL).",
            "nargs": "?",
            "const": True,
        },
    )
    gradient_checkpointing: bool | None = field(
        default=None,
        metadata={"help": "Deprecated alias of `activation_checkpointing`.", "nargs": "?", "const": True},
    )
    data_aware: bool = field(
        default=True, metadata={"help": "Scale β by α_D = σ(δ_i)/σ(δ̄) from the hardness column (Eq. 6)."}
    )
    model_aware: bool = field(
        default=True,
        metadata={"help": "Scale β by α_M from the batch's reward gaps against the running R̄ (Eq. 8–12)."},
    )
    keep_ratio: float = field(
        default=0.8,
        metadata={
            "help": "ρ: fraction of the global micro-batch kept by the outlier filter (Eq. 10); 1.0 disables it."
        },
    )
    gamma: float = field(default=0.9, metadata={"help": "γ of the running reward-gap estimate R̄ (Eq. 14)."})
    beta_min: float = field(default=1e-3, metadata={"help": "Lower clamp of the combined β_C (Eq. 16)."})
    delta_mean: float | None = field(
        default=None,
        metadata={
            "help": "δ̄ override. Default: the value stored by `dama hardness`, else the mean of the hardness column "
            f"over the training set. The official data used {OFFICIAL_DELTA_MEAN}."
        },
    )
    hardness_column: str = field(
        default=HARDNESS_COLUMN,
        metadata={"help": "Per-pair hardness δ column (written by `dama hardness` and the official-data import)."},
    )
    reward_scale: str = field(
        default="margin",
        metadata={
            "help": "R_i fed to the model-aware strategy: 'margin' (h_i, official code) or 'beta_margin' (β·h_i).",
            "choices": list(REWARD_SCALES),
        },
    )
    model_aware_form: str = field(
        default="mean_sigmoid",
        metadata={
            "help": "'mean_sigmoid': mean_K σ(R_i)/σ(R̄) (code); 'sigmoid_mean': σ(mean_K R_i)/σ(R̄) (paper).",
            "choices": list(MODEL_AWARE_FORMS),
        },
    )
    ema_input: str = field(
        default="all",
        metadata={
            "help": "R̄ update input: 'all' N gaps (code) or the 'kept' ones (paper reading).",
            "choices": list(EMA_INPUTS),
        },
    )
    filter_std: bool = field(
        default=False, metadata={"help": "Normalise (R_i − R̄) by a running std in the filter weights (option)."}
    )
    keep_file_order: bool = field(
        default=False, metadata={"help": "Iterate the training set in file order (official code); default shuffles."}
    )
    loss_normalisation: str = field(
        default="global",
        metadata={
            "help": "With the outlier filter on: 'global' divides by the kept count K of the whole micro-batch "
            "across ranks (Eq. 2); 'per_rank' divides each rank's kept losses by that rank's kept count and lets DDP "
            "average the ranks, as the official code does.",
            "choices": list(LOSS_NORMALISATIONS),
        },
    )
    prefix_sharing: bool = field(
        default=True,
        metadata={
            "help": "Encode each pair's image and prompt once for both answers (one packed row with a block mask; "
            "LLaVA, Qwen2-VL and Qwen2.5-VL with SDPA or eager attention). Elsewhere the trainer logs why and runs "
            "the unshared forward. Log-probs, losses and gradients equal the unshared ones up to float summation "
            "order."
        },
    )

    beta_dpo: bool = field(
        default=False,
        metadata={
            "help": "β-DPO (Wu et al., 2024): one β per step, β·(1 + a·(mean of the kept margins − M₀)), with a "
            "Gaussian filter around the running margin mean M₀ and std σ̄. keep_ratio is its 1 − mode_weight "
            "(official 0.8), gamma its EMA factor (0.9). Needs model_aware=false; data_aware may scale it."
        },
    )
    beta_dpo_alpha: float = field(
        default=0.6,
        metadata={"help": "a of β-DPO's β rule, ≥ 0 (0.6 in the official README's command; 0 gives a constant β)."},
    )
    mdpo: bool = field(
        default=False,
        metadata={
            "help": "mDPO (Wang et al., 2024): DPO plus an image-conditional preference (y_w with the image against "
            "y_w with a corrupted image) and an anchor on y_w's reward. Needs images and all DAMA switches off."
        },
    )
    mdpo_crop: str = field(
        default="paired",
        metadata={
            "help": "mDPO's corrupted image (a random resized crop keeping 1-20% of the area): 'paired' draws one "
            "per pair and step from the seed, seen by policy and reference alike; 'fresh' draws a new one at every "
            "forward, as the official code does.",
            "choices": list(CROP_MODES),
        },
    )

    def __post_init__(self) -> None:
        # TRL defaults bf16 to True, which fails on machines without a bf16-capable GPU; decide from the hardware.
        if self.bf16 is None and not self.fp16:
            self.bf16 = resolve_dtype("auto", resolve_device("auto")) == torch.bfloat16  # dama.devices' policy
        if self.activation_checkpointing is None and self.gradient_checkpointing is None:
            self.activation_checkpointing = True
        super().__post_init__()
        if not 0.0 < self.keep_ratio <= 1.0:
            raise RecipeError(f"keep_ratio must be in (0, 1], got {self.keep_ratio}")
        if not 0.0 <= self.gamma < 1.0:
            raise RecipeError(f"gamma must be in [0, 1), got {self.gamma}")
        if not self.beta_min >= 0.0:
            raise RecipeError(f"beta_min must be ≥ 0, got {self.beta_min}")
        if self.beta <= 0.0:
            raise RecipeError(f"beta must be > 0, got {self.beta}")
        for name in ("beta", "beta_min", "gamma", "keep_ratio", "delta_mean", "learning_rate", "beta_dpo_alpha"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise RecipeError(f"{name} must be a finite number, got {value}")
        for name, value, choices in (
            ("reward_scale", self.reward_scale, REWARD_SCALES),
            ("model_aware_form", self.model_aware_form, MODEL_AWARE_FORMS),
            ("ema_input", self.ema_input, EMA_INPUTS),
            ("loss_normalisation", self.loss_normalisation, LOSS_NORMALISATIONS),
            ("mdpo_crop", self.mdpo_crop, CROP_MODES),
        ):
            if value not in choices:
                raise RecipeError(f"{name} must be one of {choices}, got {value!r}")
        if not self.beta_dpo_alpha >= 0.0:
            raise RecipeError(f"beta_dpo_alpha must be ≥ 0, got {self.beta_dpo_alpha}")
        self._check_combinations()
        what = "mDPO" if self.mdpo else "β-DPO" if self.beta_dpo else "DAMA"
        if self.custom_loss and self.loss_type != ["sigmoid"]:
            raise RecipeError(
                f"{what} is built on the sigmoid (DPO) loss; loss_type={self.loss_type} is not supported with "
                "data_aware, model_aware, keep_ratio < 1, beta_dpo or mdpo. Set loss_type='sigmoid' or turn them off."
            )
        if self.custom_loss and (
            self.ld_alpha is not None or self.use_weighting or self.f_divergence_type != "reverse_kl"
        ):
            raise RecipeError(
                f"{what} is defined for standard DPO: unset ld_alpha, use_weighting and f_divergence_type."
            )

    def _check_combinations(self) -> None:
        """Refuse the switch combinations no paper defines (the table in docs/baselines.md)."""
        if self.beta_dpo:
            if self.model_aware:
                raise RecipeError(
                    "beta_dpo replaces DAMA's model-aware half (α_M and R̄) with β-DPO's batch β: set model_aware: "
                    "false (data_aware may stay on: α_D then scales β-DPO's β per pair)"
                )
            for name, value, official in (
                ("reward_scale", self.reward_scale, "margin"),
                ("model_aware_form", self.model_aware_form, "mean_sigmoid"),
                ("ema_input", self.ema_input, "all"),
                ("filter_std", self.filter_std, False),
            ):
                if value != official:
                    raise RecipeError(
                        f"{name}={value!r} is an option of DAMA's model-aware half, which beta_dpo replaces (β-DPO "
                        f"feeds the raw margins of all pairs and always divides by σ̄): leave it at {official!r}"
                    )
        if self.mdpo:
            on = [name for name, value in (("data_aware", self.data_aware), ("model_aware", self.model_aware),
                                           ("beta_dpo", self.beta_dpo)) if value]  # fmt: skip
            if self.keep_ratio < 1.0:
                on.append(f"keep_ratio={self.keep_ratio}")
            if on:
                raise RecipeError(
                    f"mdpo is its own objective and does not combine with {', '.join(on)}: set data_aware: false, "
                    "model_aware: false, beta_dpo: false and keep_ratio: 1.0 (docs/baselines.md)"
                )
            if self.precompute_ref_log_probs:
                raise RecipeError(
                    "mdpo needs the reference model's log-probs of y_w with the corrupted image at every step, which "
                    "are not precomputed: set precompute_ref_log_probs: false"
                )

    @property
    def dama_enabled(self) -> bool:
        """False exactly when the trainer reduces to TRL's sigmoid DPO."""
        return self.data_aware or self.model_aware or self.keep_ratio < 1.0

    @property
    def custom_loss(self) -> bool:
        """True when the trainer computes the loss itself (DAMA, β-DPO, mDPO), False for TRL's own DPO path."""
        return self.dama_enabled or self.beta_dpo or self.mdpo

    @property
    def tracks_reward_gap(self) -> bool:
        """Running margin statistics are kept: R̄ (model-aware factor, outlier filter) or β-DPO's M₀ and σ̄."""
        return self.model_aware or self.keep_ratio < 1.0 or self.beta_dpo
