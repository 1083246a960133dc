"""Checkpoints and the final model of `DAMATrainer`: complete or absent, never half-written; checkpoints resume exactly.

A checkpoint folder is complete when it holds `COMPLETE_MARKER` (`dama_checkpoint.json`), written after every other
file; `STATE_FILE` (`dama_state.json`) holds DAMA's own state (R̄ and the filter's sampling position, δ̄).
These are plain functions; `DAMATrainer`'s `train`, `_save_checkpoint` and `_load_from_checkpoint` overrides call
them (docs/errors.md, "Crash safety"). `save_final_model` writes the model at the end of `dama train` the same way:
into a staging folder first, then moved into `output_dir` by renames, `FINAL_MARKER` (`dama_model.json`) last.
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


def checkpoint_folder(run_dir: str, global_step: int) -> str:
    """transformers' name of the checkpoint of `global_step`: `<run_dir>/checkpoint-<step>`."""
    return os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{global_step}")


def begin_checkpoint(folder: str, state: dict[str, Any]) -> None:
    """Start a checkpoint: drop an earlier marker (an overwritten checkpoint is incomplete until done), then write
    DAMA's state (`STATE_FILE`) whole, before any of transformers' files."""
    os.makedirs(folder, exist_ok=True)
    Path(folder, COMPLETE_MARKER).unlink(missing_ok=True)
    atomic_write_json(os.path.join(folder, STATE_FILE), state)


def mark_complete(folder: str, global_step: int) -> None:
    """End a checkpoint: `COMPLETE_MARKER`, written last, says every file of `folder` is in place."""
    atomic_write_json(os.path.join(folder, COMPLETE_MARKER), {"global_step": global_step})


def rotate(run_dir: str, save_total_limit: int | None, best_model_checkpoint: str | None) -> None:
    """transformers' checkpoint rotation, run only once the newest checkpoint is complete."""
    if save_total_limit is not None:
        rotate_checkpoints(
            output_dir=run_dir,
            save_total_limit=save_total_limit,
            best_model_checkpoint=best_model_checkpoint,
            use_mtime=True,
        )


def read_dama_state(checkpoint: str, required: bool) -> dict[str, Any] | None:
    """DAMA's state stored in `checkpoint`, or None when it has none and none is `required`.

    `required` is True when the run tracks running statistics (R̄, or β-DPO's M₀ and σ̄): a checkpoint without
    them (not written by DAMATrainer) cannot resume the run exactly and is refused.
    """
    path = os.path.join(checkpoint, STATE_FILE)
    if not os.path.isfile(path):
        if required:
            raise CheckpointError(
                f"{path} is missing: the checkpoint was not written by DAMATrainer, so the running reward-gap "
                "estimate R̄ cannot be restored. Resume from a DAMATrainer checkpoint or start a new run."
            )
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
        if not isinstance(state, dict) or not isinstance(state.get("reward_gap"), dict):
            raise ValueError("no 'reward_gap' object")
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{path} is damaged ({err}); resume from an earlier checkpoint") from err
    return state


def restore_dama_state(trainer: Any, checkpoint: str, state: dict[str, Any]) -> None:
    """Put the stored R̄ (or M₀, σ̄), the filter's sampling position and mDPO's crop counter back into `trainer`."""
    path = os.path.join(checkpoint, STATE_FILE)
    try:
        trainer.reward_gap.load_state_dict(state["reward_gap"])
        require_finite(trainer.reward_gap.mean, f"{path}: field 'reward_gap.mean' (R̄)")
        trainer.mdpo_draws = int(state.get("mdpo_draws", 0))
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path} is damaged ({err}); resume from an earlier checkpoint") from err
    stored = state.get("delta_mean")
    if trainer.args.data_aware and stored is not None and trainer.delta_mean is not None:
        if not math.isclose(stored, trainer.delta_mean, rel_tol=1e-9, abs_tol=1e-12):
            logger.warning("delta_mean differs from the checkpoint's (%s vs %s)", trainer.delta_mean, stored)


def resume_folder(resume_from_checkpoint: str | bool | None, output_dir: str) -> str | None:
    """The checkpoint a `train(resume_from_checkpoint=…)` call resumes from: True picks the newest complete one of
    `output_dir`; a path must be complete; `CheckpointError` otherwise."""
    if resume_from_checkpoint is True:
        folder = last_complete_checkpoint(output_dir)
        if folder is None:
            raise CheckpointError(
                f"no complete checkpoint in output_dir {output_dir} (a checkpoint is complete when it holds "
                f"{COMPLETE_MARKER}, written last by DAMATrainer); start a new run without resume_from_checkpoint"
            )
        return folder
    if resume_from_checkpoint:
        require_complete_checkpoint(str(resume_from_checkpoint))
        return str(resume_from_checkpoint)
    return None


def require_finite_weights(model: Any, accelerator: Any, global_step: int, consequence: str) -> None:
    """`NonFiniteError` (on every rank) when any rank's weights hold a NaN or an infinity; `consequence` says what
    is therefore not written (a checkpoint, the final model)."""
    params = [(name, p) for name, p in model.named_parameters() if p.numel() > 0]
    if not params:
        return
    finite = torch.stack([torch.isfinite(p.detach()).all() for _, p in params])  # one host sync below
    local = (~finite).any().float().reshape(1).to(accelerator.device)
    if float(accelerator.gather(local).sum()) > 0:
        first = next((name for (name, _), ok in zip(params, finite.tolist()) if not ok), "on another rank")
        raise NonFiniteError(
            f"the weights hold non-finite values at step {global_step} (first: {first}); {consequence}. "
            "Lower the learning rate or check the data"
        )


def can_reload_with_from_pretrained(model: Any, peft: bool, deepspeed: bool, fsdp: bool) -> bool:
    """Whether a checkpoint's weights are reloaded through `from_pretrained` (`reload_weights`): plain models only."""
    return not (peft or deepspeed or fsdp) and hasattr(model, "config") and hasattr(type(model), "from_pretrained")


def reload_weights(model: Any, checkpoint: str) -> None:
    """Load `checkpoint`'s weights into `model` through `from_pretrained`, which applies the model's key conversions.

    `Trainer._load_from_checkpoint` feeds the saved safetensors straight to `load_state_dict(strict=False)`; for models
    whose saved key names differ from their module names (LLaVA in transformers 5 saves the legacy
    `language_model.model.*` layout) nothing matches and the resumed run silently starts from random weights.
    """
    loaded = type(model).from_pretrained(checkpoint, dtype=model.dtype)
    result = model.load_state_dict(loaded.state_dict(), strict=False)
    del loaded
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(
            f"resuming from {checkpoint}: weights do not match the model "
            f"(missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]})"
        )
