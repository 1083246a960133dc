"""`DAMATrainer`: TRL's `DPOTrainer` with DAMA's per-pair, per-step β (Lu et al., ICML 2025; `docs/paper_mapping.md`).

The step (`_compute_loss`) is a straight line: forward → policy log-probs → reference log-probs → β_C (or β-DPO's β,
or mDPO's extra pass; pure functions of `dama.objective`) → loss → metrics. Every method of TRL's `DPOTrainer` (and of
transformers' `Trainer` below it) that this class overrides is listed here; whoever bumps TRL checks these first:

| override | why | guarded by |
| --- | --- | --- |
| `__init__` | DAMA's state (R̄ or β-DPO's M₀/σ̄), the collator that carries DAMA's columns, the vision reference pass | tests/core/test_trainer.py |
| `_set_signature_columns_if_needed` | TRL drops unknown columns; the hardness and reference columns must reach the step | `test_dama_trains_and_logs_its_metrics_loss_falls_on_an_overfit_batch` |
| `_get_train_sampler` | `keep_file_order`: the official run's sequential order | `test_keep_file_order_iterates_in_file_order` |
| `create_accelerator_and_postprocess`, `_precompute_ref_logps` | TRL refuses precomputed reference log-probs for vision data; ours runs after init with the training collator | `test_precomputed_reference_matches_live_reference_and_releases_it` |
| `_compute_loss` | the DAMA / β-DPO / mDPO step | `test_parity_with_trl_dpo_when_dama_is_off`, tests/core/test_baselines_trainer.py |
| `compute_ref_log_probs` | prefix sharing in the reference pass | tests/core/test_prefix.py |
| `train` | resume only from a complete checkpoint, with DAMA's state | `test_resume_is_exact`, tests/core/test_checkpoint_crash.py |
| `_save_checkpoint` | DAMA's state first, the completion marker last, rotation after it | tests/core/test_checkpoint_crash.py |
| `_load_from_checkpoint` | weights through `from_pretrained`, which applies the model's key conversions | `test_resume_is_exact` |

The step also writes TRL's private metric store (`_metrics`, `_total_train_tokens`, `_tp_size`) in
`_log_step_metrics`, the one place that touches them. The rest is glue in other modules: the columns carried through
TRL's collator (`dama.collator`), checkpoint files (`dama.checkpoints`), the reduction of the step's metrics
(`dama.step_metrics`), prefix sharing (`dama.prefix`) and mDPO's corrupted images (`dama.corruption`).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import torch
from accelerate.utils import is_peft_model
from datasets import Dataset
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from trl import DPOTrainer
from trl.models.utils import disable_gradient_checkpointing, prepare_deepspeed
from trl.trainer.utils import use_adapter

from dama import checkpoints
from dama.collator import REF_COLUMNS, ExtraColumnsCollator, dataset_columns
from dama.config import DAMAConfig, RecipeError
from dama.corruption import corrupt_images, crop_generator
from dama.delta import resolve_delta_mean
from dama.objective import (
    beta_dpo_beta,
    combine_beta,
    dama_beta,
    dama_loss,
    data_aware_factor,
    mdpo_loss,
    reduce_loss,
    reduce_loss_per_rank,
)
from dama.prefix import (
    PER_IMAGE_KEYS,
    PrefixSharingUnavailable,
    chosen_row_images,
    shared_prefix_forward,
    unsupported_reason,
)
from dama.state import MarginMomentsEMA, RewardGapEMA
from dama.step_metrics import check_finite_step, reduce_step_metrics, step_fractions

logger = logging.getLogger(__name__)

__all__ = ["DAMATrainer"]


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
        self.delta_mean = training_delta_mean(config, train_dataset, columns, delta_mean)
        try:
            super().__init__(*args, **kwargs)
        finally:
            if self._vision_precompute:
                config.precompute_ref_log_probs = True

        if config.beta_dpo:  # β-DPO's M₀ and σ̄, updated before the loss (docs/paper_mapping.md §10)
            self.reward_gap: RewardGapEMA = MarginMomentsEMA(gamma=config.gamma)
        else:
            self.reward_gap = RewardGapEMA(gamma=config.gamma, track_std=config.filter_std)
        self.mdpo_draws = (
            0  # micro-batches whose mDPO crops were drawn: seeds the `paired` crops, saved in checkpoints
        )
        if config.mdpo:
            if not self._is_vision_data:
                raise RecipeError("mdpo=True needs images: the training set has no 'image' or 'images' column")
            if self._vision_precompute:
                raise RecipeError(
                    "mdpo needs the reference log-probs of y_w with the corrupted image at every step; the dataset "
                    "carries precomputed reference columns and precompute_ref_log_probs releases the reference "
                    "model: train on the data without ref_chosen_logps/ref_rejected_logps"
                )
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
        if config.mdpo and self._prefix_sharing:
            logger.info(
                "mdpo: the pass of y_w with the corrupted image runs unshared (its image differs from the pair's, so "
                "there is no encoded prompt to share); the two real-image passes stay shared."
            )
        if self._vision_precompute:
            self._precompute_vision_ref_logps(has_ref_columns)

    # ----------------------------------------------------------------------------------------------------- data glue
    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        for name in getattr(self, "_extra_columns", ()):
            if name not in self._signature_columns:
                self._signature_columns.append(name)

    def _get_train_sampler(self, *args: Any, **kwargs: Any):
        if self.args.keep_file_order:
            return torch.utils.data.SequentialSampler(self.train_dataset)
        return super()._get_train_sampler(*args, **kwargs)

    # ------------------------------------------------------------------------- checkpoints (`dama.checkpoints`)
    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any):
        folder = checkpoints.resume_folder(resume_from_checkpoint, self.args.output_dir)
        if folder is not None:
            state = checkpoints.read_dama_state(folder, required=self.args.tracks_reward_gap)
            if state is not None:
                checkpoints.restore_dama_state(self, folder, state)
        return super().train(folder if folder is not None else resume_from_checkpoint, *args, **kwargs)

    def _save_checkpoint(self, model, trial) -> None:
        """DAMA's state first, then transformers' files, then the completion marker; rotation runs after the marker,
        so a kill at any moment leaves the previous complete checkpoint in place."""
        checkpoints.require_finite_weights(self.model, self.accelerator, self.state.global_step,
                                           "the checkpoint is not written")  # fmt: skip
        run_dir = self._get_output_dir(trial=trial)
        folder = checkpoints.checkpoint_folder(run_dir, self.state.global_step)
        if self.args.should_save:
            state = {"reward_gap": self.reward_gap.state_dict(), "delta_mean": self.delta_mean,
                     "mdpo_draws": self.mdpo_draws}  # fmt: skip
            checkpoints.begin_checkpoint(folder, state)
        limit = self.args.save_total_limit
        self.args.save_total_limit = None  # rotated below, once this checkpoint is complete
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        if self.args.should_save:
            checkpoints.mark_complete(folder, self.state.global_step)
            checkpoints.rotate(run_dir, limit, self.state.best_model_checkpoint)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        model = model if model is not None else self.model
        if not checkpoints.can_reload_with_from_pretrained(
            model, is_peft_model(model), self.is_deepspeed_enabled, self.is_fsdp_enabled
        ):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        checkpoints.reload_weights(model, resume_from_checkpoint)

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
        quiet = self.args.disable_tqdm or not self.accelerator.is_local_main_process  # as the Trainer's own bars
        for batch in tqdm(loader, desc="Reference log-probs", disable=quiet):
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

        extra_metrics: dict[str, tuple[torch.Tensor, float]] = {}
        if self.args.mdpo:  # mDPO: y_w with a corrupted image, then the three-term loss (docs/paper_mapping.md §11)
            ref_model = self.ref_model if self.ref_model is not None else model
            corrupt_logps, ref_corrupt_logps = self._corrupted_chosen_logps(model, ref_model, inputs, mode)
            terms = mdpo_loss(
                chosen_logps, rejected_logps, corrupt_logps,
                ref_chosen_logps, ref_rejected_logps, ref_corrupt_logps, self.args.beta,
            )  # fmt: skip
            losses, chosen_rewards, rejected_rewards = terms.losses, terms.chosen_rewards, terms.rejected_rewards
            beta_c, keep_mask, stats = self.args.beta, None, {}
            extra_metrics = mdpo_metrics(terms, corrupt_logps)
        else:
            # 3. β_C from the pure DAMA (or β-DPO) functions
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
            mode, inputs, outputs, seq_len, chosen_logps, rejected_logps, *rewards, stats, guard=guard,
            extra=extra_metrics,
        )  # fmt: skip
        if return_outputs:
            with torch.no_grad():
                outputs = model(**model_kwargs)
        return (loss, outputs) if return_outputs else loss

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
        guard: tuple[torch.Tensor | float, torch.Tensor | float],
        extra: dict[str, tuple[torch.Tensor, float]] | None = None,
    ) -> None:
        """TRL's DPO metrics plus DAMA's, reduced over ranks in one gather (`dama.step_metrics`), into TRL's store.

        `guard` is `(loss, Σ β_C)` of this rank, summed over ranks in the same gather: a NaN or infinity on any rank
        stops every rank at the same step with `NonFiniteError`.
        """
        fractions = step_fractions(inputs, outputs, seq_len, chosen_logps, rejected_logps, chosen_rewards,
                                   rejected_rewards)  # fmt: skip
        if self.aux_loss_enabled:
            fractions["aux_loss"] = (outputs.aux_loss, 1.0)
        fractions.update(extra or {})
        reduced = reduce_step_metrics(self.accelerator, fractions, stats, inputs["attention_mask"].sum().float(),
                                      guard, device=chosen_rewards.device)  # fmt: skip
        check_finite_step(*reduced.guard, mode, self.state.global_step + 1)
        for name, value in reduced.fractions.items():
            self._metrics[mode][name].append(value)
        if mode == "train":
            self._total_train_tokens += int(reduced.n_tokens) // self._tp_size
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        for name, value in reduced.stats.items():
            self._metrics[mode][name].append(value)

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
        with self._reference_context():
            outputs = self._shared_forward(model, inputs)
        if outputs is None:
            return super().compute_ref_log_probs(model, inputs)
        return outputs.log_probs.sum(dim=1).chunk(2, dim=0)

    @contextlib.contextmanager
    def _reference_context(self):
        """TRL's contexts of a reference forward: no grad, checkpointing off, adapters off under PEFT, autocast."""
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
            yield

    def sequence_logps(self, model: Any, inputs: dict[str, torch.Tensor], *, reference: bool = False) -> torch.Tensor:
        """Summed response log-probs `(rows,)` of `model` on collated rows (`input_ids`, `completion_mask`, images).

        `reference=True` runs it in the reference contexts (no grad, adapters off under PEFT), as TRL's
        `compute_ref_log_probs` does; otherwise with grad, as the policy forward of a step.
        """
        skip = {"completion_mask", *REF_COLUMNS, self.args.hardness_column}
        kwargs = {k: v for k, v in inputs.items() if k not in skip}
        kwargs["use_cache"] = False
        labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)
        with self._reference_context() if reference else contextlib.nullcontext():
            log_probs = model(**kwargs, labels=labels, fused_lm_head=True).log_probs
        return log_probs[:, -(inputs["completion_mask"].size(1) - 1) :].sum(dim=1)

    @torch.no_grad()
    def pair_logps(self, model: Any, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """`(chosen, rejected)` summed response log-probs `(B,)` of `model` as it is (adapters untouched), without
        grad, on a collated batch `[chosen, rejected]`; the prefix is shared when prefix sharing is on."""
        outputs = self._shared_forward(model, inputs) if getattr(self, "_prefix_sharing", False) else None
        if outputs is not None:
            return outputs.log_probs.sum(dim=1).chunk(2, dim=0)
        return self.sequence_logps(model, inputs).chunk(2, dim=0)

    def _corrupted_chosen_logps(
        self, model: Any, ref_model: Any, inputs: dict[str, torch.Tensor], mode: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """log πθ(y_w | I′) and log πref(y_w | I′) `(B,)`: the chosen rows with each image replaced by its crop I′.

        `mdpo_crop: paired` draws one crop per pair from (seed, micro-batch counter, index in the global batch), so
        policy and reference see the same I′ and the crops do not depend on how the batch is split over ranks;
        `fresh` draws a new crop for each forward from the global RNG, as the official code does.
        """
        rows = inputs["input_ids"].size(0) // 2
        chosen = chosen_rows(inputs, rows)
        model_config = self.accelerator.unwrap_model(model).config  # Qwen2-VL's patch layout
        if self.args.mdpo_crop == "paired":
            draw = self.mdpo_draws if mode == "train" else -1  # evaluation: the same crops at every evaluation
            first = self.accelerator.process_index * rows
            generators = [crop_generator(self.args.seed, draw, first + i) for i in range(rows)]
            policy_inputs = ref_inputs = {**chosen, **corrupt_images(vision_of(chosen), model_config, generators)}
        else:
            policy_inputs = {**chosen, **corrupt_images(vision_of(chosen), model_config, [None] * rows)}
            ref_inputs = {**chosen, **corrupt_images(vision_of(chosen), model_config, [None] * rows)}
        if mode == "train":
            self.mdpo_draws += 1
        policy = self.sequence_logps(model, policy_inputs)
        reference = self.sequence_logps(ref_model, ref_inputs, reference=True)
        return policy, reference

    def _gather_margins(
        self, margins: torch.Tensor, delta: torch.Tensor | None, mode: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every rank's margins and α_D,i (ones when `data_aware` is off), gathered in one call: `(N,)` each,
        rank-major, the same on every rank."""
        args = self.args
        if args.data_aware and delta is None:
            raise RecipeError(
                f"data_aware=True but the {mode} batch has no {args.hardness_column!r} column: give the evaluation "
                "set a hardness column too (`dama hardness`), or set data_aware=False."
            )
        alpha_d = data_aware_factor(delta, self.delta_mean).to(margins.device) if args.data_aware else None
        local = torch.stack([margins.float(), alpha_d if alpha_d is not None else torch.ones_like(margins.float())], 1)
        global_margins, global_alpha_d = self.accelerator.gather(local).unbind(dim=1)
        return global_margins, global_alpha_d

    def _dama_beta(
        self, margins: torch.Tensor, delta: torch.Tensor | None, mode: str
    ) -> tuple[torch.Tensor | float, torch.Tensor | None, int, dict[str, torch.Tensor]]:
        """β_C `(B,)` (or the float β when DAMA is off), this rank's keep-mask, the global kept count K, and metrics.

        One gather brings every rank's (R_i, α_D,i) together, so α_M, the keep-mask and R̄ are computed from the same
        `(N,)` vector on every rank: they agree without any broadcast (docs/paper_mapping.md §3, §6).
        """
        args = self.args
        n_local = margins.numel()
        if args.beta_dpo:
            return self._beta_dpo_beta(margins, delta, mode)
        if not args.dama_enabled:
            return args.beta, None, n_local * self.accelerator.num_processes, {}
        train = mode == "train"
        global_margins, global_alpha_d = self._gather_margins(margins, delta, mode)
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
        stats.update(self._beta_stats(global_beta, global_alpha_d))
        return beta_c, keep_local, n_kept, stats

    def _beta_stats(self, global_beta: torch.Tensor, global_alpha_d: torch.Tensor) -> dict[str, torch.Tensor]:
        """The `dama/*` statistics of the per-pair β of the global batch (and of α_D when `data_aware`)."""
        stats = {
            "dama/beta_mean": global_beta.mean(),
            "dama/beta_min": global_beta.min(),
            "dama/beta_max": global_beta.max(),
            "dama/n_clamped": (global_beta <= self.args.beta_min).sum().float(),
        }
        if self.args.data_aware:
            stats["dama/alpha_d_mean"] = global_alpha_d.mean()
        return stats

    def _beta_dpo_beta(
        self, margins: torch.Tensor, delta: torch.Tensor | None, mode: str
    ) -> tuple[torch.Tensor, torch.Tensor | None, int, dict[str, torch.Tensor]]:
        """β-DPO's one β per step (docs/paper_mapping.md §10), optionally scaled per pair by α_D; as `_dama_beta`.

        The margins of every rank are gathered once; M₀ and σ̄ are updated with them *before* the weights and β are
        computed (official order), in training only (the official code also updates them on evaluation batches).
        """
        args = self.args
        n_local = margins.numel()
        train = mode == "train"
        global_margins, global_alpha_d = self._gather_margins(margins, delta, mode)
        if train:
            self.reward_gap.update(global_margins)
        keep_ratio = args.keep_ratio if train else 1.0
        out = beta_dpo_beta(
            global_margins,
            self.reward_gap.mean,
            self.reward_gap.std,
            beta=args.beta,
            alpha=args.beta_dpo_alpha,
            keep_ratio=keep_ratio,
            generator=self.reward_gap.generator(args.seed),
            beta_min=args.beta_min,
        )
        if args.data_aware:
            global_beta = combine_beta(out.beta, global_alpha_d, None, args.beta_min)
        else:
            global_beta = out.beta.expand_as(global_margins)
        rank = self.accelerator.process_index
        keep_local, n_kept = None, global_margins.numel()
        if keep_ratio < 1.0:
            keep_local = out.keep_mask[rank * n_local : (rank + 1) * n_local]
            n_kept = int(out.keep_mask.sum())
        device = global_margins.device
        stats = {
            "beta_dpo/beta_used": out.beta,
            "beta_dpo/gap_mean": torch.full((), self.reward_gap.mean, device=device),
            "beta_dpo/gap_std": torch.full((), self.reward_gap.std, device=device),
            "beta_dpo/kept_fraction": out.keep_mask.float().mean(),
            "beta_dpo/kept_margin_mean": out.kept_mean,
            **self._beta_stats(global_beta, global_alpha_d),
        }
        return global_beta[rank * n_local : (rank + 1) * n_local].to(margins.device), keep_local, n_kept, stats


def chosen_rows(inputs: dict[str, torch.Tensor], rows: int) -> dict[str, torch.Tensor]:
    """The chosen half of a collated batch `[chosen_0..B, rejected_0..B]`, with its images, trimmed of padding columns."""
    out = {k: v[:rows] for k, v in inputs.items()
           if isinstance(v, torch.Tensor) and k not in PER_IMAGE_KEYS and v.dim() > 0 and v.size(0) == 2 * rows}  # fmt: skip
    try:
        out.update(chosen_row_images(inputs, 2 * rows))
    except PrefixSharingUnavailable as err:
        raise ValueError(f"mDPO needs one image per pair, shared by its two answers: {err}") from err
    width = int(out["attention_mask"].any(dim=0).nonzero().max()) + 1  # the chosen rows' last non-padding column
    for key in ("input_ids", "attention_mask", "completion_mask", "mm_token_type_ids", "token_type_ids"):
        if key in out and out[key].dim() == 2:
            out[key] = out[key][:, :width]
    return out


def vision_of(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: inputs[k] for k in PER_IMAGE_KEYS if k in inputs}


def mdpo_metrics(terms: Any, corrupt_logps: torch.Tensor) -> dict[str, tuple[torch.Tensor, float]]:
    """mDPO's logged values as (local sum, local count), reduced over ranks with the step's other metrics."""
    b = float(terms.losses.numel())
    return {
        "rewards/imageless_chosen": (terms.imageless_rewards.sum(), b),
        "rewards/imageless_accuracies": ((terms.chosen_rewards > terms.imageless_rewards).sum(), b),
        "rewards/imageless_margins": ((terms.chosen_rewards - terms.imageless_rewards).sum(), b),
        "logps/imageless_chosen": (corrupt_logps.detach().sum(), b),
        "mdpo/loss_dpo": (terms.dpo.detach().sum(), b),
        "mdpo/loss_image": (terms.image.detach().sum(), b),
        "mdpo/loss_anchor": (terms.anchor.detach().sum(), b),
    }


def training_delta_mean(config: DAMAConfig, dataset: Any, columns: list[str], stored: float | None) -> float | None:
    """δ̄ for α_D (None when `data_aware` is off); `RecipeError` when the hardness column is missing, or when δ̄ must be
    computed from a streaming dataset."""
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
