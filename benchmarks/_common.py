"""Shared pieces of the training benchmarks: models, preference data, trainer variants, a step timer, statistics.

Every variant is built from the same seed, data and batch, so the only difference between two variants is what the
variant is about (DAMA on/off, our trainer or TRL's, reference model resident or precomputed).
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import torch
from datasets import Dataset
from PIL import Image
from transformers import TrainerCallback

from dama.delta import HARDNESS_COLUMN

# name -> keyword arguments of dama.tiny.build_llava
MODELS: dict[str, dict[str, int]] = {
    "tiny": {},  # the tiny recipe model: build_llava() defaults
    "50m": {"hidden_size": 768, "num_layers": 8, "vision_hidden_size": 256, "image_size": 64, "patch_size": 16},
    # LLaVA-1.5-shaped sequences: a CLIP ViT at 336 px with 14-px patches gives 24 × 24 = 576 image tokens (LLaVA-1.5's
    # count); a 2-layer, 64-wide ViT and a 4-layer, 128-wide Llama decoder keep a step to seconds on 2 CPU cores
    "llava576": {"hidden_size": 128, "num_layers": 4, "vision_hidden_size": 64, "image_size": 336, "patch_size": 14},
}

# timed optimizer steps per repetition and variant when --steps is not given
DEFAULT_STEPS = {"tiny": 20, "50m": 3, "llava576": 2}

DAMA_ON = {"data_aware": True, "model_aware": True, "keep_ratio": 0.8}
# name -> (trainer class, DAMA switches, precompute_ref_log_probs). The first four are the trainer-overhead comparisons
# and keep every pair's prompt twice in the batch like TRL (prefix_sharing off); the `_prefix` variants share it.
VARIANTS: dict[str, tuple[str, dict[str, Any], bool]] = {
    "dama": ("dama", {**DAMA_ON, "prefix_sharing": False}, False),
    "dpo": ("dama", {"data_aware": False, "model_aware": False, "keep_ratio": 1.0, "prefix_sharing": False}, False),
    "trl": ("trl", {}, False),
    "dama_precomputed": ("dama", {**DAMA_ON, "prefix_sharing": False}, True),
    "dama_prefix": ("dama", {**DAMA_ON, "prefix_sharing": True}, False),
    "dama_precomputed_prefix": ("dama", {**DAMA_ON, "prefix_sharing": True}, True),
}
# variants a run times when --variants is not given
DEFAULT_VARIANTS = {
    "tiny": ["dama", "dpo", "trl", "dama_precomputed"],
    "50m": ["dama", "dpo", "trl", "dama_precomputed"],
    "llava576": ["trl", "dama_precomputed", "dama_precomputed_prefix"],
}

# The LLaVA-shaped workload's text: a ~50-token question and answers whose lengths follow a log-normal with median
# 100 tokens and σ 0.6 (mean e^0.18 · 100 ≈ 120, 95th percentile ≈ 270: RLAIF-V-like long answers with a long tail),
# clipped to [16, 512]. Chosen and rejected lengths are drawn independently.
QUESTION_WORDS = 48
ANSWER_MEDIAN_TOKENS = 100
ANSWER_SIGMA = 0.6
ANSWER_TOKENS_RANGE = (16, 512)
# completion tokens that are not answer words: the template's `</s>` (TRL keeps the newline after it out)
ANSWER_TEMPLATE_TOKENS = 1

WORDS = (
    "a red cat sits on a wooden table next to a blue cup two dogs are playing with a ball in the green park "
    "there is a large yellow bus parked on the street near a tree the image shows a small bird on a branch"
).split()


def resolve_device(name: str) -> str:
    """`--device` as a string: `auto` by dama's one policy (`dama.devices`); a named CUDA device must exist."""
    from dama import devices

    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    return str(devices.resolve_device(name))


def _sentence(rng: random.Random, n_words: int, words: list[str] = WORDS) -> str:
    return " ".join(rng.choice(words) for _ in range(n_words))


def make_pairs(n: int, seed: int = 0, prompt_words: int = 34, answer_words: int = 50) -> Dataset:
    """n vision preference pairs (conversational) with a hardness column; ~128 tokens per sequence with the 50m model.

    Answers vary in length around `answer_words` so padding is realistic; the rejected answer is the longer one.
    """
    rng = random.Random(seed)
    rows: dict[str, list[Any]] = {"image": [], "prompt": [], "chosen": [], "rejected": [], HARDNESS_COLUMN: []}
    for i in range(n):
        rows["image"].append(Image.new("RGB", (64, 64), (37 * i % 256, 90 + i % 50, 200 - 13 * i % 200)))
        prompt = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": _sentence(rng, prompt_words)}]}
        ]
        rows["prompt"].append(prompt)
        chosen = _sentence(rng, answer_words - 4 + i % 5)
        rejected = _sentence(rng, answer_words + i % 7)
        rows["chosen"].append([{"role": "assistant", "content": [{"type": "text", "text": chosen}]}])
        rows["rejected"].append([{"role": "assistant", "content": [{"type": "text", "text": rejected}]}])
        rows[HARDNESS_COLUMN].append(round(rng.uniform(-0.5, 0.9), 3))
    return Dataset.from_dict(rows)


# the words of `WORDS` that the tiny tokenizer encodes as one token after a space: texts of k of them are k tokens
ONE_TOKEN_WORDS = (
    "a are ball bird blue branch bus cat cup dogs green image in is large near next on park parked red shows sits "
    "small table the there to tree with yellow"
).split()


def answer_lengths(n: int, seed: int) -> list[int]:
    """n answer lengths in tokens (template tokens included): the workload's log-normal at the n mid-quantiles
    (k + ½)/n, clipped, in a seeded random order. Stratified, so even the 32 answers of a 16-pair benchmark have the
    distribution's median, mean and tail rather than one random draw's.
    """
    normal = statistics.NormalDist()
    low, high = ANSWER_TOKENS_RANGE
    lengths = [
        min(max(round(ANSWER_MEDIAN_TOKENS * math.exp(ANSWER_SIGMA * normal.inv_cdf((k + 0.5) / n))), low), high)
        for k in range(n)
    ]
    random.Random(seed).shuffle(lengths)
    return lengths


def make_llava_pairs(n: int, seed: int = 0) -> Dataset:
    """n LLaVA-1.5-shaped pairs: a 336 × 336 image (576 image tokens with the `llava576` model), a 48-word question
    (48–50 tokens; 56–58 text tokens in the prompt with the template) and chosen/rejected answers of `answer_lengths`
    tokens.

    Every word of `ONE_TOKEN_WORDS` is one token of the tiny tokenizer after a space, and so is "a" (each answer's
    first word, after the prompt's closing space), so an answer of k words is k tokens plus the template's `</s>`;
    `tests/benchmarks/test_workloads.py` checks the counts on the collated batch.
    """
    rng = random.Random(seed)
    lengths = answer_lengths(2 * n, seed + 1)
    chosen_len, rejected_len = lengths[:n], lengths[n:]
    rows: dict[str, list[Any]] = {"image": [], "prompt": [], "chosen": [], "rejected": [], HARDNESS_COLUMN: []}
    for i in range(n):
        image = Image.new("RGB", (336, 336), (37 * i % 256, 90 + i % 50, 200 - 13 * i % 200))
        image.paste((255 - 37 * i % 256, 40, 90), (84, 84, 252, 252))
        rows["image"].append(image)
        question = _sentence(rng, QUESTION_WORDS, ONE_TOKEN_WORDS)
        rows["prompt"].append([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}])
        for key, length in (("chosen", chosen_len[i]), ("rejected", rejected_len[i])):
            # "a" first: it is one token without a leading space too (the prompt ends in the space)
            text = " ".join(["a", _sentence(rng, length - 1 - ANSWER_TEMPLATE_TOKENS, ONE_TOKEN_WORDS)])
            rows[key].append([{"role": "assistant", "content": [{"type": "text", "text": text}]}])
        rows[HARDNESS_COLUMN].append(round(rng.uniform(-0.5, 0.9), 3))
    return Dataset.from_dict(rows)


def make_data(model_name: str, n: int, seed: int = 0) -> Dataset:
    """The benchmark data of a model: LLaVA-shaped pairs for `llava576`, the short synthetic pairs otherwise."""
    return make_llava_pairs(n, seed) if model_name == "llava576" else make_pairs(n, seed)


def token_accounting(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Tokens of one collated batch `[chosen, rejected]`: real, padded (what an unshared forward computes), and the
    same two for the prefix-shared packing of `dama.prefix` (per pair: prompt + chosen + 1 + rejected, padded to the
    longest pair). Kept on the batch's device: recording it costs no host sync inside the timed step.
    """
    attention = batch["attention_mask"].bool()
    completion = batch["completion_mask"].bool()
    n_rows, width = attention.shape
    half = n_rows // 2
    answers = completion.sum(dim=1)
    packed = (attention & ~completion).sum(dim=1)[:half] + answers[:half] + answers[half:] + 1
    padded = torch.full((), n_rows * width, dtype=packed.dtype, device=packed.device)
    return torch.stack([attention.sum(), padded, packed.sum(), packed.max() * half]).detach()


def build_model(name: str, device: str, seed: int = 0) -> tuple[Any, Any]:
    """(model, processor) for a model name of `MODELS`, SDPA attention; bf16 on CUDA."""
    from dama.tiny import build_llava

    model, processor = build_llava(seed=seed, **MODELS[name])
    model.set_attn_implementation("sdpa")
    if device == "cuda":
        model = model.to(torch.bfloat16)
    return model, processor


def param_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def param_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def trainer_args(
    kind: str,
    dama_switches: dict[str, Any],
    precompute: bool,
    device: str,
    output_dir: str,
    batch_size: int,
    max_steps: int,
    seed: int = 0,
) -> Any:
    """A `DAMAConfig` (kind "dama") or TRL `DPOConfig` (kind "trl") with everything but the variant held equal."""
    common: dict[str, Any] = dict(
        output_dir=output_dir,
        per_device_train_batch_size=batch_size,
        max_steps=max_steps,
        learning_rate=1e-5,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        max_length=None,
        disable_tqdm=True,
        use_cpu=device == "cpu",
        bf16=device == "cuda",
        activation_checkpointing=device == "cuda",
        precompute_ref_log_probs=precompute,
    )
    if kind == "trl":
        from trl import DPOConfig

        return DPOConfig(**common)
    from dama import DAMAConfig

    return DAMAConfig(**common, **dama_switches)


def build_trainer(
    variant: str,
    model_name: str,
    device: str,
    data: Dataset,
    batch_size: int,
    max_steps: int,
    output_dir: str | None = None,
    callbacks: list | None = None,
) -> Any:
    """The trainer of one variant, on a fresh model built from seed 0 and (unless precomputed) a frozen copy of it."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import DPOTrainer

    from dama import DAMATrainer
    from dama.tiny import clone

    kind, switches, precompute = VARIANTS[variant]
    output_dir = output_dir or tempfile.mkdtemp(prefix=f"dama-bench-{variant}-")
    args = trainer_args(kind, switches, precompute, device, output_dir, batch_size, max_steps)
    model, processor = build_model(model_name, device)
    # With precomputed log-probs the policy at init is the reference for the one-off pass: no copy is ever built.
    ref = None if precompute else clone(model)
    if kind == "trl":
        trainer = DPOTrainer(
            model=model,
            ref_model=ref,
            args=args,
            train_dataset=data.remove_columns(HARDNESS_COLUMN),
            processing_class=processor,
            callbacks=callbacks,
        )
    else:
        trainer = DAMATrainer(
            model=model, ref_model=ref, args=args, train_dataset=data, processing_class=processor, callbacks=callbacks
        )
    for printer in (PrinterCallback, ProgressCallback):  # per-step log lines would drown the table
        trainer.remove_callback(printer)
    return trainer


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step (forward, backward, clipping, optimizer, scheduler), on_step_begin → end.

    The batch (collation) is fetched before `on_step_begin` and logging runs after `on_step_end`, so neither is in
    `steps`; `iterations` (end → end) includes both. On CUDA the device is synchronised at both ends.
    """

    def __init__(self) -> None:
        self.steps: list[float] = []
        self.iterations: list[float] = []
        self._begin = 0.0
        self._last_end: float | None = None

    def _now(self) -> float:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self._last_end = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._begin = self._now()

    def on_step_end(self, args, state, control, **kwargs):
        end = self._now()
        self.steps.append(end - self._begin)
        if self._last_end is not None:
            self.iterations.append(end - self._last_end)
        self._last_end = end


def count_tokens(trainer: Any) -> list[torch.Tensor]:
    """Wrap `trainer.training_step` to record each batch's `token_accounting` (real, padded, packed real, packed
    padded tokens)."""
    counts: list[torch.Tensor] = []
    inner = trainer.training_step

    def training_step(model, inputs, *args, **kwargs):
        counts.append(token_accounting(inputs))
        return inner(model, inputs, *args, **kwargs)

    trainer.training_step = training_step
    return counts


@dataclass
class Spread:
    median: float
    q1: float
    q3: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        values = sorted(values)
        if len(values) >= 2:
            q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
        else:
            q1 = q3 = values[0]
        return cls(statistics.median(values), q1, q3, values[0], values[-1], len(values))

    def fmt(self, scale: float = 1.0, digits: int = 1) -> str:
        return (
            f"{self.median * scale:.{digits}f} [IQR {self.q1 * scale:.{digits}f}–{self.q3 * scale:.{digits}f}, "
            f"min–max {self.low * scale:.{digits}f}–{self.high * scale:.{digits}f}]"
        )


def _proc_status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int:
    """Peak resident set size of this process: VmHWM on Linux.

    Not `ru_maxrss`: Linux carries it over from the parent through fork and exec, so a subprocess started by a large
    process reports at least the parent's size.
    """
    hwm = _proc_status_bytes("VmHWM")
    if hwm is not None:
        return hwm
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # bytes on macOS, KiB elsewhere


def current_rss_bytes() -> int:
    return _proc_status_bytes("VmRSS") or 0


def _entry_point() -> str:
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    if spec is not None:  # started with python -m
        return f"-m {spec.name}"
    return sys.argv[0].replace(os.getcwd() + os.sep, "")


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    info = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_1_5_15": " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a",
        "python": platform.python_version(),
        "command": "python " + " ".join([_entry_point(), *sys.argv[1:]]),
    }
    try:
        import transformers
        import trl

        info["transformers"] = transformers.__version__
        info["trl"] = trl.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def print_machine(info: dict[str, Any]) -> None:
    print("  ".join(f"{key}: {value}" for key, value in info.items()))
