"""`DAMATrainer`: TRL's `DPOTrainer` with DAMA's per-pair, per-step β (Lu et al., ICML 2025; `docs/paper_mapping.md`).

The override is one method, `_compute_loss`, written as a straight line:
forward → policy log-probs → reference log-probs → β_C (pure functions of `dama.objective`) → loss → metrics.
Everything else is glue: carrying the per-pair hardness (and precomputed reference log-probs) through TRL's collator,
which drops unknown columns; keeping the model-aware statistics global across data-parallel ranks; saving R̄ in
checkpoints; the reference log-prob pass for vision data, which TRL refuses (`_reference_logps`, stored by
`dama precompute-ref`); prefix sharing, which sends each pair's image and prompt through the policy and reference
forwards once for both answers (`dama.prefix`, in `_policy_forward` and `compute_ref_log_probs`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import is_peft_model
from datasets import Dataset
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints
from trl import DPOTrainer
from trl.models.utils import disable_gradient_checkpointing, prepare_deepspeed
from trl.trainer.utils import use_adapter

from dama.config import DAMAConfig, RecipeError
from dama.errors import DamaError, NonFiniteError, require_finite
from dama.io import atomic_write_json
from dama.objective import dama_beta, dama_loss, data_aware_factor, reduce_loss, reduce_loss_per_rank
from dama.prefix import PrefixSharingUnavailable, shared_prefix_forward, unsupported_reason
from dama.rows import resolve_delta_mean
from dama.state import RewardGapEMA

logger = logging.getLogger(__name__)

STATE_FILE = "dama_state.json"
COMPLETE_MARKER = "dama_checkpoint.json"  # written last: a checkpoint without it is incomplete
REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")


class CheckpointError(DamaError, FileNotFoundError):
    """A checkpoint that cannot be resumed from (incomplete, damaged, or not written by DAMATrainer)."""


def _is_complete(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, COMPLETE_MARKER))


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The newest `checkpoint-N` folder of `output_dir` with the completion marker; unmarked ones are skipped with a
    warning (a save that was killed midway), so resuming never picks a half-written checkpoint."""
    if not os.path.isdir(output_dir):
        return None
    steps = []
    for name in os.listdir(output_dir):
        match = re.fullmatch(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)", name)
        if match and os.path.isdir(os.path.join(output_dir, name)):
            steps.append((int(match.group(1)), os.path.join(output_dir, name)))
    for _, folder in sorted(steps, reverse=True):
        if _is_complete(folder):
            return folder
        logger.warning(
            "skipping %s: it has no %s (its save was interrupted); resuming from an earlier checkpoint",
            folder,
            COMPLETE_MARKER,
        )
    return None


def require_complete_checkpoint(folder: str) -> None:
    """`CheckpointError` unless `folder` is a checkpoint whose save finished."""
    if not os.path.isdir(folder):
        raise CheckpointError(f"resume_from_checkpoint {folder!r}: no such folder")
    if not _is_complete(folder):
        raise CheckpointError(
            f"checkpoint {folder} is incomplete (no {COMPLETE_MARKER}: its save was interrupted, or it was not "
            "written by DAMATrainer); resume from an earlier checkpoint, or with resume_from_checkpoint=true to pick "
            "the newest complete one"
        )


class ExtraColumnsCollator:
    """Wrap a TRL collator so per-pair float columns survive it (TRL's collators return only model inputs)."""

    def __init__(self, inner: Callable[[list[dict[str, Any]]], dict[str, Any]], columns: tuple[str, ...]) -> None:
        self.inner = inner
        self.columns = columns

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        extras = {
            name: torch.tensor([float(example[name]) for example in examples], dtype=torch.float32)
            for name in self.columns
            if name in examples[0]
        }
        batch = self.inner(examples)
        batch.update(extras)
        return batch


def dataset_columns(dataset: Any) -> list[str]:
    names = getattr(dataset, "column_names", None)
    if names is None:
        names = list(next(iter(dataset)).keys())
    return list(names)


class DAMATrainer(DPOTrainer):
    """TRL `DPOTrainer` whose sigmoid loss uses β_C,i = max(β·α_D,i·α_M, β_min) and the outlier keep-mask.

    Extra arguments beyond `DPOTrainer`'s:
        delta_mean: δ̄ from the hardness output (`dama hardness` stores it). `args.delta_mean` overrides it; when
            both are unset, the mean of the hardness column over the training set is used.

    With `args.precompute_ref_log_probs=True` and a vision dataset (which TRL refuses), the reference log-probs are
    computed once here with the exact training collator, stored as dataset columns, and the reference model is then
    released, so training runs without it. A dataset that already has `ref_chosen_logps`/`ref_rejected_logps` (from
    `dama precompute-ref`) is used as is.
    """

    _tag_names = ["trl", "dpo", "dama"]

    def __init__(self, *args: Any, delta_mean: float | None = None, **kwargs: Any) -> None:
        config = kwargs.get("args") if "args" in kwargs else (args[2] if len(args) > 2 else None)
        if not isinstance(config, DAMAConfig):
            raise TypeError(f"DAMATrainer needs `args=DAMAConfig(...)`, got {type(config).__name__}")
        train_dataset = kwargs.get("train_dataset")
        if train_dataset is None:
            raise ValueError("`train_dataset` is required")
        columns = dataset_columns(train_dataset)
        self._is_vision_data = "image" in columns or "images" in columns
        has_ref_columns = all(name in columns for name in REF_COLUMNS)
        # TRL rejects precompute_ref_log_probs for vision data: the flag is hidden from its check and restored
        # before it decides whether to build a reference model (see create_accelerator_and_postprocess); the pass
        # itself runs here after TRL's init.
        self._vision_precompute = self._is_vision_data and (config.precompute_ref_log_probs or has_ref_columns)
        if self._vision_precompute:
            config.precompute_ref_log_probs = False
        self.delta_mean = self._resolve_delta_mean(config, train_dataset, columns, delta_mean)
        try:
            super().__init__(*args, **kwargs)
        finally:
            if self._vision_precompute:
                config.precompute_ref_log_probs = True

        self.reward_gap = RewardGapEMA(gamma=config.gamma, track_std=config.filter_std)
        extra = [config.hardness_column] if config.data_aware else []
        if self._vision_precompute:
            extra += list(REF_COLUMNS)
        self._extra_columns = tuple(extra)
        if self._extra_columns:
            self.data_collator = ExtraColumnsCollator(self.data_collator, self._extra_columns)
        # TRL's generic loss path handles the losses DAMA does not rescale; ours is the sigmoid loss.
        self._use_dama_path = config.loss_type == ["sigmoid"] and not (
            config.ld_alpha is not None or config.use_weighting or config.f_divergence_type != "reverse_kl"
        )
        self._prefix_sharing = self._resolve_prefix_sharing(config)
        if self._vision_precompute:
            self._precompute_vision_ref_logps(has_ref_columns)

    # ----------------------------------------------------------------------------------------------------- data glue
    @staticmethod
    def _resolve_delta_mean(
        config: DAMAConfig, dataset: Any, columns: list[str], stored: float | None
    ) -> float | None:
        if not config.data_aware:
            return None
        if config.hardness_column not in columns:
            raise RecipeError(
                f"data_aware=True needs the per-pair hardness column {config.hardness_column!r}, which the training "
                f"dataset does not have (columns: {columns}). Produce it with `dama hardness --data <your data> "
                "--clip <CLIP model> --out <dir>` and train on <dir>, import official DAMA JSON (it carries "
                "chosen_logits/rejected_logits), or set data_aware=False."
            )
        given = config.delta_mean is not None or stored is not None
        if not given and not isinstance(dataset, Dataset):
            raise RecipeError("delta_mean is required with a streaming dataset (set --delta_mean).")
        value, _ = resolve_delta_mean(
            None if given else dataset[config.hardness_column],
            override=config.delta_mean,
            stored=stored,
            stored_name="δ̄ (delta_mean) stored with the training data",
            column=config.hardness_column,
            rows="training row",
        )
        return value

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        for name in getattr(self, "_extra_columns", ()):
            if name not in self._signature_columns:
                self._signature_columns.append(name)

    def _get_train_sampler(self, *args: Any, **kwargs: Any):
        if self.args.keep_file_order:
            return torch.utils.data.SequentialSampler(self.train_dataset)
        return super()._get_train_sampler(*args, **kwargs)

    # ------------------------------------------------------------------------------ reference log-probs, vision data
    def create_accelerator_and_postprocess(self) -> None:
        # Called inside Trainer.__init__, after TRL's vision check and before TRL builds a reference model: with the
        # flag back on, TRL keeps no reference model (the policy at init is the reference for the pass).
        super().create_accelerator_and_postprocess()
        if getattr(self, "_vision_precompute", False):
            self.args.precompute_ref_log_probs = True

    def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
        if getattr(self, "_vision_precompute", False):
            return dataset  # ours runs after init, with the collator that carries DAMA's columns
        return super()._precompute_ref_logps(dataset, name, batch_size)

    @torch.no_grad()
    def _precompute_vision_ref_logps(self, already_there: bool) -> None:
        model = self.ref_model if self.ref_model is not None else self.model

        def with_ref(dataset: Dataset) -> Dataset:
            if all(name in dataset.column_names for name in REF_COLUMNS):
                return dataset
            chosen, rejected = self._reference_logps(model, dataset)
            return dataset.add_column(REF_COLUMNS[0], chosen).add_column(REF_COLUMNS[1], rejected)

        if not already_there:
            self.train_dataset = with_ref(self.train_dataset)
        if isinstance(self.eval_dataset, dict):
            self.eval_dataset = {name: with_ref(data) for name, data in self.eval_dataset.items()}
        elif self.eval_dataset is not None:
            self.eval_dataset = with_ref(self.eval_dataset)
        if self.ref_model is not None:
            self.ref_model = None  # training reads the stored log-probs: free the reference model's memory
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        self.precompute_ref_logps = True

    @torch.no_grad()
    def _reference_logps(self, model: Any, dataset: Any) -> tuple[list[float], list[float]]:
        """Summed response log-probs of `model` for every pair of `dataset`, in dataset order: `(chosen, rejected)`."""
        loader = DataLoader(
            dataset,
            batch_size=self.args.precompute_ref_batch_size or self.args.per_device_train_batch_size,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            shuffle=False,
        )
        loader = self.accelerator.prepare(loader)
        if self.ref_model is None and self.is_deepspeed_enabled:
            model = prepare_deepspeed(self.model, self.accelerator)
        was_training = model.training
        model.eval()
        chosen, rejected = [], []
        for batch in tqdm(loader, desc="Reference log-probs", disable=not self.accelerator.is_local_main_process):
            for name in (self.args.hardness_column, *REF_COLUMNS):
                batch.pop(name, None)
            ref_chosen, ref_rejected = self.compute_ref_log_probs(model, batch)
            ref_chosen, ref_rejected = self.accelerator.gather_for_metrics((ref_chosen, ref_rejected))
            chosen.extend(ref_chosen.float().cpu().tolist())
            rejected.extend(ref_rejected.float().cpu().tolist())
        model.train(was_training)
        return chosen, rejected

    # ----------------------------------------------------------------------------------------------------- the step
    def _compute_loss(self, model, inputs, return_outputs):
        if not self._use_dama_path:
            return super()._compute_loss(model, inputs, return_outputs)
        mode = "train" if self.model.training else "eval"
        extras = {name: inputs.pop(name) for name in (*self._extra_columns, *REF_COLUMNS) if name in inputs}

        # 1. policy forward: per-token log-probs from the fused LM head (no full logits)
        model_kwargs = {k: v for k, v in inputs.items() if k != "completion_mask"}
        model_kwargs["use_cache"] = False
        if self.aux_loss_enabled:
            model_kwargs["output_router_logits"] = True
        completion_mask = inputs["completion_mask"]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = self._policy_forward(model, inputs, model_kwargs, labels)
        seq_len = completion_mask.size(1) - 1
        per_token_logps = outputs.log_probs[:, -seq_len:]
        chosen_logps, rejected_logps = per_token_logps.sum(dim=1).chunk(2, dim=0)  # batch is [chosen, rejected]

        # 2. reference log-probs: stored in the batch, or a reference forward (adapters off under PEFT)
        if self.precompute_ref_logps:
            ref_chosen_logps, ref_rejected_logps = extras["ref_chosen_logps"], extras["ref_rejected_logps"]
        else:
            ref_model = self.ref_model if self.ref_model is not None else model
            ref_chosen_logps, ref_rejected_logps = self.compute_ref_log_probs(ref_model, inputs)

        # 3. β_C from the pure DAMA functions
        margins = (chosen_logps - ref_chosen_logps) - (rejected_logps - ref_rejected_logps)
        beta_c, keep_mask, n_kept, stats = self._dama_beta(
            margins.detach(), extras.get(self.args.hardness_column), mode
        )

        # 4. loss (Eq. 2)
        losses, chosen_rewards, rejected_rewards = dama_loss(
            chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta_c, keep_mask
        )
        if keep_mask is None:
            loss = losses.mean()
        elif self.args.loss_normalisation == "per_rank":
            loss = reduce_loss_per_rank(losses, keep_mask)
        else:
            loss = reduce_loss(losses, n_kept, self.accelerator.num_processes)
        loss = loss * self.loss_weights[0]  # `loss_weights` as TRL applies it to its one sigmoid loss
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss

        # 5. metrics (and the stop at the first non-finite loss or β_C, checked in the same host sync)
        beta_total = beta_c.detach().float().sum() if isinstance(beta_c, torch.Tensor) else float(beta_c)
        rewards = (chosen_rewards, rejected_rewards)
        guard = (loss.detach(), beta_total)
        self._log_step_metrics(
            mode, inputs, outputs, seq_len, chosen_logps, rejected_logps, *rewards, stats, guard=guard
        )
        if return_outputs:
            with torch.no_grad():
                outputs = model(**model_kwargs)
        return (loss, outputs) if return_outputs else loss

    # ------------------------------------------------------------------------- prefix sharing (`dama.prefix`)
    def _resolve_prefix_sharing(self, config: DAMAConfig) -> bool:
        """Whether the policy and reference forwards encode each pair's image and prompt once (logged either way)."""
        self._prefix_fallbacks: set[str] = set()
        if not config.prefix_sharing:
            return False
        reason = None
        if not self._is_vision_data:
            reason = "the dataset has no images"
        elif config.ld_alpha is not None:
            reason = "ld_alpha weights answer tokens by their position, which the packed forward does not carry"
        else:
            for name, candidate in (("policy", self.model), ("reference", self.ref_model)):
                why = None if candidate is None else unsupported_reason(candidate)
                if why is not None:
                    reason = f"{name} model: {why}"
                    break
        if reason is not None:
            logger.warning("prefix_sharing is on but not used (%s): each pair's prompt is encoded twice.", reason)
            return False
        logger.info("prefix_sharing: each pair's image and prompt are encoded once for both answers.")
        return True

    def _shared_forward(self, model: Any, inputs: dict[str, torch.Tensor], **kwargs: Any) -> Any | None:
        """Fused-head outputs of the packed forward in the unshared layout, or None when this batch cannot be packed."""
        batch = {k: v for k, v in inputs.items() if k not in (*REF_COLUMNS, self.args.hardness_column)}
        try:
            return shared_prefix_forward(model, batch, **kwargs)[0]
        except PrefixSharingUnavailable as err:
            if str(err) not in self._prefix_fallbacks:  # once per reason: a data set may hit it on every batch
                self._prefix_fallbacks.add(str(err))
                logger.warning("prefix sharing skipped for a batch (%s); that batch runs unshared.", err)
            return None

    def _policy_forward(self, model: Any, inputs: dict[str, torch.Tensor], model_kwargs: dict[str, Any], labels):
        outputs = None
        if self._prefix_sharing:
            extra = {"output_router_logits": True} if self.aux_loss_enabled else {}
            outputs = self._shared_forward(model, inputs, **extra)
        return outputs if outputs is not None else model(**model_kwargs, labels=labels, fused_lm_head=True)

    def compute_ref_log_probs(self, model, inputs):
        """TRL's reference pass (same contexts: no grad, adapters off under PEFT), with the prefix shared when on."""
        if not getattr(self, "_prefix_sharing", False):
            return super().compute_ref_log_probs(model, inputs)
        adapter_context = contextlib.nullcontext()
        if self.ref_model is None and is_peft_model(self.model):
            unwrapped = self.accelerator.unwrap_model(self.model)
            adapter_context = use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None)
        with (
            torch.no_grad(),
            disable_gradient_checkpointing(self.model, self.args.activation_checkpointing_kwargs),
            adapter_context,
            self.accelerator.autocast(),
        ):
            outputs = self._shared_forward(model, inputs)
        if outputs is None:
            return super().compute_ref_log_probs(model, inputs)
        return outputs.log_probs.sum(dim=1).chunk(2, dim=0)

    def _dama_beta(
        self, margins: torch.Tensor, delta: torch.Tensor | None, mode: str
    ) -> tuple[torch.Tensor | float, torch.Tensor | None, int, dict[str, torch.Tensor]]:
        """β_C `(B,)` (or the float β when DAMA is off), this rank's keep-mask, the global kept count K, and metrics.

        One gather brings every rank's (R_i, α_D,i) together, so α_M, the keep-mask and R̄ are computed from the same
        `(N,)` vector on every rank: they agree without any broadcast (docs/paper_mapping.md §3, §6).
        """
        args = self.args
        n_local = margins.numel()
        if not args.dama_enabled:
            return args.beta, None, n_local * self.accelerator.num_processes, {}
        train = mode == "train"
        if args.data_aware and delta is None:
            raise RecipeError(
                f"data_aware=True but the {mode} batch has no {args.hardness_column!r} column: give the evaluation "
                "set a hardness column too (`dama hardness`), or set data_aware=False."
            )
        alpha_d = data_aware_factor(delta, self.delta_mean).to(margins.device) if args.data_aware else None
        local = torch.stack([margins.float(), alpha_d if alpha_d is not None else torch.ones_like(margins.float())], 1)
        global_margins, global_alpha_d = self.accelerator.gather(local).unbind(dim=1)  # (N,) each, rank-major
        keep_ratio = args.keep_ratio if train else 1.0  # evaluation scores every pair
        # β_C, α_M and the keep-mask once for the global batch; this rank's (B,) is its rank-major slice
        out = dama_beta(
            global_margins,
            global_alpha_d if args.data_aware else None,
            self.reward_gap.mean,
            beta=args.beta,
            beta_min=args.beta_min,
            model_aware=args.model_aware,
            keep_ratio=keep_ratio,
            generator=self.reward_gap.generator(args.seed),
            reward_scale=args.reward_scale,
            form=args.model_aware_form,
            running_std=self.reward_gap.std,
            ema_input=args.ema_input,
        )
        stats: dict[str, torch.Tensor] = {}
        keep_local, n_kept = None, global_margins.numel()
        rank = self.accelerator.process_index
        if keep_ratio < 1.0:
            keep_local = out.keep_mask[rank * n_local : (rank + 1) * n_local]
            n_kept = int(out.keep_mask.sum())
        if args.tracks_reward_gap:
            if train:  # Eq. 14, after the factors of this step used the previous R̄
                self.reward_gap.update(out.ema_values)
            stats["dama/alpha_m"] = out.alpha_m
            # built on the device (a CPU scalar would cost a blocking copy when the metrics are stacked)
            stats["dama/reward_gap_ema"] = torch.full((), self.reward_gap.mean, device=global_margins.device)
            stats["dama/kept_fraction"] = out.keep_mask.float().mean()
        global_beta = out.beta
        beta_c = global_beta[rank * n_local : (rank + 1) * n_local].to(margins.device)
        stats["dama/beta_mean"] = global_beta.mean()
        stats["dama/beta_min"] = global_beta.min()
        stats["dama/beta_max"] = global_beta.max()
        stats["dama/n_clamped"] = (global_beta <= args.beta_min).sum().float()
        if args.data_aware:
            stats["dama/alpha_d_mean"] = global_alpha_d.mean()
        return beta_c, keep_local, n_kept, stats

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
    ) -> None:
        """TRL's DPO metrics (same definitions, `docs/metrics.md`) plus `dama/*`, with one gather and one host sync.

        Rewards are β_C-scaled: with DAMA off that is TRL's β·log-ratio. `guard` is `(loss, Σ β_C)` of this rank: they
        are summed over ranks in the same gather, so a NaN or infinity on any rank stops every rank at the same step
        with `NonFiniteError` (training on would write a NaN model; TRL's logging would even show the loss as 0).
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

    # ------------------------------------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, model, trial) -> None:
        """Save a checkpoint that is marked complete only once every file is in place.

        `dama_state.json` (R̄) goes first, then TRL/transformers' files, then the marker `dama_checkpoint.json`;
        rotation (`save_total_limit`) runs only after the marker, so a kill at any moment leaves the previous
        complete checkpoint in place, and `train(resume_from_checkpoint=True)` skips the unmarked one.
        """
        self.require_finite_weights("the checkpoint is not written")
        run_dir = self._get_output_dir(trial=trial)
        folder = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        if self.args.should_save:
            os.makedirs(folder, exist_ok=True)
            Path(folder, COMPLETE_MARKER).unlink(missing_ok=True)  # an overwritten checkpoint is incomplete until done
            state = {"reward_gap": self.reward_gap.state_dict(), "delta_mean": self.delta_mean}
            atomic_write_json(os.path.join(folder, STATE_FILE), state)
        limit = self.args.save_total_limit
        self.args.save_total_limit = None  # rotated below, once this checkpoint is complete
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        if self.args.should_save:
            atomic_write_json(os.path.join(folder, COMPLETE_MARKER), {"global_step": self.state.global_step})
            if limit is not None:
                rotate_checkpoints(
                    output_dir=run_dir,
                    save_total_limit=limit,
                    best_model_checkpoint=self.state.best_model_checkpoint,
                    use_mtime=True,
                )

    def require_finite_weights(self, consequence: str) -> None:
        """`NonFiniteError` (on every rank) when any rank's weights hold a NaN or an infinity; `consequence` says
        what is therefore not written (a checkpoint, the final model)."""
        params = [(name, p) for name, p in self.model.named_parameters() if p.numel() > 0]
        if not params:
            return
        finite = torch.stack([torch.isfinite(p.detach()).all() for _, p in params])  # one host sync below
        local = (~finite).any().float().reshape(1).to(self.accelerator.device)
        if float(self.accelerator.gather(local).sum()) > 0:
            first = next((name for (name, _), ok in zip(params, finite.tolist()) if not ok), "on another rank")
            raise NonFiniteError(
                f"the weights hold non-finite values at step {self.state.global_step} (first: {first}); {consequence}. "
                "Lower the learning rate or check the data"
            )

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        """Reload weights through `from_pretrained`, which applies the model's checkpoint key conversions.

        `Trainer._load_from_checkpoint` feeds the saved safetensors straight to `load_state_dict(strict=False)`; for
        models whose saved key names differ from their module names (LLaVA in transformers 5 saves the legacy
        `language_model.model.*` layout) nothing matches and the resumed run silently starts from random weights.
        """
        model = model if model is not None else self.model
        plain = not (is_peft_model(model) or self.is_deepspeed_enabled or self.is_fsdp_enabled)
        if not plain or not hasattr(model, "config") or not hasattr(type(model), "from_pretrained"):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        loaded = type(model).from_pretrained(resume_from_checkpoint, dtype=model.dtype)
        result = model.load_state_dict(loaded.state_dict(), strict=False)
        del loaded
        if result.missing_keys or result.unexpected_keys:
            raise RuntimeError(
                f"resuming from {resume_from_checkpoint}: weights do not match the model "
                f"(missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]})"
            )

    def load_dama_state(self, checkpoint: str) -> None:
        """Restore R̄ (and the filter's sampling position) from a checkpoint folder."""
        path = os.path.join(checkpoint, STATE_FILE)
        if not os.path.isfile(path):
            if self.args.tracks_reward_gap:
                raise CheckpointError(
                    f"{path} is missing: the checkpoint was not written by DAMATrainer, so the running reward-gap "
                    "estimate R̄ cannot be restored. Resume from a DAMATrainer checkpoint or start a new run."
                )
            return
        try:
            with open(path, encoding="utf-8") as handle:
                state = json.load(handle)
            self.reward_gap.load_state_dict(state["reward_gap"])
            require_finite(self.reward_gap.mean, f"{path}: field 'reward_gap.mean' (R̄)")
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{path} is damaged ({err}); resume from an earlier checkpoint") from err
        stored = state.get("delta_mean")
        if self.args.data_aware and stored is not None and self.delta_mean is not None:
            if not math.isclose(stored, self.delta_mean, rel_tol=1e-9, abs_tol=1e-12):
                logger.warning("delta_mean differs from the checkpoint's (%s vs %s)", self.delta_mean, stored)

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any):
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise CheckpointError(
                    f"no complete checkpoint in output_dir {self.args.output_dir} (a checkpoint is complete when it "
                    f"holds {COMPLETE_MARKER}, written last by DAMATrainer); start a new run without "
                    "resume_from_checkpoint"
                )
        elif resume_from_checkpoint:
            require_complete_checkpoint(str(resume_from_checkpoint))
        if resume_from_checkpoint:
            self.load_dama_state(str(resume_from_checkpoint))
        return super().train(resume_from_checkpoint, *args, **kwargs)
