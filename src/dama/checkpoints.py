"""Checkpoints and the final model of `DAMATrainer`: complete or absent, never half-written; checkpoints resume exactly.

A checkpoint folder is complete when it holds `COMPLETE_MARKER` (`dama_checkpoint.json`), written after every other
file; `STATE_FILE` (`dama_state.json`) holds DAMA's own state (R̄ and the filter's sampling position, δ̄).
`CheckpointingMixin` is the part of `DAMATrainer` that saves and resumes them (docs/errors.md, "Crash safety"); it
expects a `transformers.Trainer` below it and the trainer's `reward_gap` and `delta_mean`. `save_final_model` writes
the model at the end of `dama train` the same way: into a staging folder first, then moved into `output_dir` by
renames, `FINAL_MARKER` (`dama_model.json`) last.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import is_peft_model
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from dama.errors import DamaError, NonFiniteError, require_finite
from dama.io import atomic_write_json

logger = logging.getLogger(__name__)

STATE_FILE = "dama_state.json"
COMPLETE_MARKER = "dama_checkpoint.json"  # written last: a checkpoint without it is incomplete
FINAL_MARKER = "dama_model.json"  # written last into output_dir: the final model there is complete
FINAL_STAGING = ".dama-model.partial"  # output_dir's subfolder the final model is written to before it is moved


class CheckpointError(DamaError, FileNotFoundError):
    """A checkpoint that cannot be resumed from (incomplete, damaged, or not written by DAMATrainer)."""


def _is_complete(folder: str, marker: str = COMPLETE_MARKER) -> bool:
    return os.path.isfile(os.path.join(folder, marker))


def final_model_is_complete(output_dir: str) -> bool:
    """Whether `output_dir` holds a final model whose save finished (`FINAL_MARKER`)."""
    return _is_complete(output_dir, FINAL_MARKER)


def save_final_model(trainer: Any, output_dir: str) -> list[str]:
    """Save `trainer`'s model and processor as the final model of `output_dir`, complete or absent.

    Every rank calls this (sharded and DeepSpeed models are gathered by all of them). The model is written by
    `trainer.save_model` into `output_dir/FINAL_STAGING`; then the main process removes the marker of an earlier
    final model (and its `config.json`), moves each staged file into `output_dir` by rename, `config.json` last, and
    writes `FINAL_MARKER` listing the files. A kill while the model is written leaves only the staging folder (the
    next save removes it); a kill between the renames leaves files without `config.json` and without the marker, which
    `from_pretrained` cannot load. Checkpoints in `output_dir` are never touched. Returns the files of the model.
    """
    accelerator = trainer.accelerator
    staging = Path(output_dir, FINAL_STAGING)
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)  # what a killed save left
    accelerator.wait_for_everyone()
    trainer.save_model(str(staging))
    names: list[str] = []
    if accelerator.is_main_process:
        if trainer.processing_class is not None:
            trainer.processing_class.save_pretrained(str(staging))
        names = _move_final_model(staging, Path(output_dir), trainer.state.global_step)
    accelerator.wait_for_everyone()
    return names


def _move_final_model(staging: Path, output_dir: Path, global_step: int) -> list[str]:
    """Put the staged files in place of the earlier final model by renames; the marker goes last."""
    for path in staging.rglob("*"):  # on disk before any rename: a power cut cannot leave empty files in place
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    marker = output_dir / FINAL_MARKER
    earlier: list[str] = []
    if marker.is_file():
        try:
            earlier = list(json.loads(marker.read_text(encoding="utf-8")).get("files", []))
        except (ValueError, AttributeError, TypeError):
            earlier = []
    marker.unlink(missing_ok=True)  # from here on, output_dir holds no complete final model
    (output_dir / "config.json").unlink(missing_ok=True)  # never an earlier config beside new weights
    names = sorted(p.name for p in staging.iterdir())
    for stale in set(map(str, earlier)) - set(names) - {FINAL_MARKER, FINAL_STAGING}:  # an earlier model's shards
        if Path(stale).name != stale or stale in ("", ".", "..") or stale.startswith(PREFIX_CHECKPOINT_DIR):
            continue  # only plain names of model files: never a checkpoint or anything outside output_dir
        target = output_dir / stale
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)
    for name in sorted(names, key=lambda n: n == "config.json"):
        target = output_dir / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)  # os.replace cannot replace a folder that holds files
        os.replace(staging / name, target)
    staging.rmdir()
    atomic_write_json(marker, {"global_step": global_step, "files": names})
    return names


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


class CheckpointingMixin:
    """Saving and resuming DAMATrainer checkpoints; mixed in before TRL's `DPOTrainer`."""

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
            state = {
                "reward_gap": self.reward_gap.state_dict(),
                "delta_mean": self.delta_mean,
                "mdpo_draws": self.mdpo_draws,
            }
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
            self.mdpo_draws = int(state.get("mdpo_draws", 0))
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
