"""`dama train --config recipe.yaml [--key value ...]`: DAMA training of any Hugging Face VLM.

Recipe keys are the fields of four dataclasses, parsed by TRL's parser (YAML first, then command-line overrides;
unknown keys fail): `DAMAConfig` (training + DAMA), `trl.ModelConfig` (model, dtype, LoRA), `DataArguments` (data),
`ModelOptions` (freezing). Multi-GPU: `accelerate launch --config_file recipes/accelerate/<cfg>.yaml -m dama.train ...`.

`model_name_or_path: tiny:llava` / `tiny:qwen2-vl` builds a tiny random model offline (`dama.tiny`): for tests, the
demo and trying the CLI on a laptop.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import AutoModelForImageTextToText, AutoProcessor
from trl import ModelConfig, TrlParser, get_peft_config

from dama import tiny
from dama.checkpoints import require_finite_weights, save_final_model
from dama.config import DAMAConfig, RecipeError
from dama.conversation import render_training_text
from dama.errors import loading_model
from dama.io import check_writable
from dama.preference_data import DataArguments, check_plain_prompts, load_preference_dataset
from dama.trainer import DAMATrainer

logger = logging.getLogger(__name__)

VISION_TOWER_NAMES = ("vision_tower", "visual", "vision_model", "vision_encoder", "vision_embed_tokens")


@dataclass
class ModelOptions:
    """Which parts of the VLM train."""

    freeze_vision_tower: bool = field(
        default=False, metadata={"help": "Freeze the vision encoder (the official recipe trains only LM + projector)."}
    )


def parse_args(argv: list[str] | None = None) -> tuple[DAMAConfig, ModelConfig, DataArguments, ModelOptions]:
    """Parse a recipe and overrides with TRL's parser; unknown keys in the YAML or on the command line fail.

    Every problem with the recipe (a missing or unreadable file, YAML syntax, an unknown key, a value out of range)
    raises `RecipeError` naming the recipe file.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    recipe = argv[argv.index("--config") + 1] if "--config" in argv[:-1] else None
    where = f"recipe {recipe}" if recipe else "command line"
    parser = TrlParser((DAMAConfig, ModelConfig, DataArguments, ModelOptions))
    try:
        config, model_args, data_args, options = parser.parse_args_and_config(argv)
    except RecipeError as err:
        raise RecipeError(f"{where}: {err}") from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise RecipeError(f"{recipe}:{line}: not valid YAML ({problem})") from err
    except (FileNotFoundError, IsADirectoryError, PermissionError, UnicodeDecodeError) as err:
        raise RecipeError(f"recipe {recipe!r} cannot be read ({err})") from err
    except (ValueError, TypeError) as err:  # TRL/transformers: unknown keys, values the dataclasses refuse
        raise RecipeError(f"{where}: {err}") from err
    return config, model_args, data_args, options


def find_vision_tower(model: Any) -> Any:
    """The vision encoder module of a VLM (LLaVA: `model.vision_tower`, Qwen-VL: `model.visual`, …)."""
    for owner in (getattr(model, "model", None), model):
        for name in VISION_TOWER_NAMES:
            module = getattr(owner, name, None) if owner is not None else None
            if module is not None:
                return module
    raise RecipeError(
        f"freeze_vision_tower: cannot find the vision tower of {type(model).__name__} "
        f"(looked for {VISION_TOWER_NAMES})"
    )


def load_model(model_args: ModelConfig) -> tuple[Any, Any]:
    """`AutoModelForImageTextToText` + `AutoProcessor`, or a tiny offline model for `tiny:<arch>`."""
    name = model_args.model_name_or_path
    if not name:
        raise RecipeError("model_name_or_path is required (a hub id, a local folder, or tiny:llava / tiny:qwen2-vl)")
    if name.startswith("tiny:"):
        builders = {"llava": tiny.build_llava, "qwen2-vl": tiny.build_qwen2_vl}
        arch = name.split(":", 1)[1]
        if arch not in builders:
            raise RecipeError(f"unknown tiny model {name!r}; choose from {[f'tiny:{k}' for k in builders]}")
        return builders[arch]()
    dtype = model_args.dtype if model_args.dtype in ("auto", None) else getattr(torch, model_args.dtype)
    kwargs: dict[str, Any] = {"dtype": dtype, "revision": model_args.model_revision}
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    with loading_model(name, "model_name_or_path"):  # not found: one line saying how to point at a folder
        model = AutoModelForImageTextToText.from_pretrained(name, **kwargs)
        processor = AutoProcessor.from_pretrained(name, revision=model_args.model_revision)
    return model, processor


def build_trainer(argv: list[str] | None = None):
    """Parse, load and validate the data (before anything is written), load the model, build a `DAMATrainer`."""
    config, model_args, data_args, options = parse_args(argv)
    if not data_args.dataset_path:
        raise RecipeError("dataset_path is required (see `dama train --help`)")
    check_writable(config.output_dir, "output_dir")
    hardness = config.hardness_column if config.data_aware else None
    train_dataset, stored_delta_mean = load_preference_dataset(
        data_args.dataset_path,
        data_args.dataset_format,
        data_args.image_root,
        hardness,
        data_args.max_samples,
        data_args.validate_images,
        "mdpo" if config.mdpo else None,
    )
    eval_dataset = None
    if data_args.eval_dataset_path:
        eval_dataset, _ = load_preference_dataset(
            data_args.eval_dataset_path,
            data_args.dataset_format,
            data_args.image_root,
            hardness,
            None,
            data_args.validate_images,
            "mdpo" if config.mdpo else None,
        )
    model, processor = load_model(model_args)
    tokenizer = getattr(processor, "tokenizer", processor)
    image_token = getattr(processor, "image_token", None)
    train_dataset = render_training_text(
        train_dataset, tokenizer, data_args.training_text, data_args.dataset_path, image_token or "<image>"
    )
    # after rendering: vicuna_v1 writes the placeholder itself; a plain chat_template prompt must carry it
    check_plain_prompts(train_dataset, data_args.dataset_path, image_token)
    if eval_dataset is not None:
        eval_dataset = render_training_text(
            eval_dataset, tokenizer, data_args.training_text, data_args.eval_dataset_path, image_token or "<image>"
        )
        check_plain_prompts(eval_dataset, data_args.eval_dataset_path, image_token)
    if options.freeze_vision_tower:
        find_vision_tower(model).requires_grad_(False)
    peft_config = get_peft_config(model_args)
    ref_model = None
    if (
        model_args.model_name_or_path.startswith("tiny:")
        and peft_config is None
        and not config.precompute_ref_log_probs
    ):
        ref_model = tiny.clone(model)  # a config-built model has no path to reload the reference from
    return DAMATrainer(
        model=model,
        ref_model=ref_model,
        args=config,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processor,
        peft_config=peft_config,
        delta_mean=stored_delta_mean,
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(__doc__.strip())
        print()
        TrlParser((DAMAConfig, ModelConfig, DataArguments, ModelOptions)).print_help()
        return 0
    trainer = build_trainer(argv)
    resume = trainer.args.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in {"true", "last"}:
        resume = True
    trainer.train(resume_from_checkpoint=resume or None)
    require_finite_weights(
        trainer.model,
        trainer.accelerator,
        trainer.state.global_step,
        "the model is not saved (the checkpoints written before the problem are kept)",
    )
    save_final_model(trainer, trainer.args.output_dir)  # complete or absent: staged, moved in, marker last
    if trainer.accelerator.is_main_process:
        print(f"dama train: model saved to {Path(trainer.args.output_dir).resolve()}")
    # Tear the process group down, every rank together, before interpreter exit: a gloo group left to exit-time
    # destructors, or torn down by one rank while another still uses it, can abort (SIGABRT, "terminate called
    # without an active exception") after a successful run and turn exit 0 into -6.
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())
