"""The demo experiment: hardness → DPO / DAMA / ablations over seeds → CHAIR on held-out images.

Every stage goes through the product's code paths: `dama hardness` (sentence splitter + the world's CLIP),
`DAMATrainer`, the CHAIR engine of `dama eval` with the world's synonym list. All methods share β, learning rate,
steps, batch size, seeds and the (precomputed) reference log-probs; they differ only in the DAMA switches.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from datasets import Image as ImageFeature
from transformers import LlavaForConditionalGeneration, PrinterCallback, TrainerCallback

from dama.config import DAMAConfig
from dama.demo.models import DemoConfig, DemoModels, build_models, sample_responses
from dama.demo.preferences import build_preferences, evaluation_set
from dama.demo.world import QUESTIONS, World, make_world
from dama.eval.chair import ChairEngine, ChairItem, chair_metrics, count_words
from dama.trainer import DAMATrainer

# method -> DAMA switches (everything else identical)
METHODS: dict[str, dict[str, Any]] = {
    "DPO": {"data_aware": False, "model_aware": False, "keep_ratio": 1.0},
    "DAMA": {"data_aware": True, "model_aware": True, "keep_ratio": 0.8},
    "data-aware only": {"data_aware": True, "model_aware": False, "keep_ratio": 1.0},
    "model-aware only": {"data_aware": False, "model_aware": True, "keep_ratio": 0.8},
}


@dataclass(frozen=True)
class ExperimentConfig:
    """The alignment budget, identical for every method."""

    seeds: tuple[int, ...] = (0, 1, 2)
    n_pref_images: int = 600
    n_samples: int = 4
    n_eval_images: int = 200
    steps: int = 150
    batch_size: int = 8
    learning_rate: float = 1e-4
    beta: float = 0.1
    track_every: int = 10
    n_track: int = 32  # easy and hard pairs each, for the responsiveness curves
    max_new_tokens: int = 48
    models: DemoConfig = field(default_factory=DemoConfig.full)

    @classmethod
    def full(cls, seeds: int = 3) -> ExperimentConfig:
        return cls(seeds=tuple(range(seeds)))

    @classmethod
    def quick(cls, seeds: int = 1) -> ExperimentConfig:
        return cls(seeds=tuple(range(seeds)), n_pref_images=160, n_samples=3, n_eval_images=60, steps=100,
                   track_every=20, n_track=8, max_new_tokens=32, models=DemoConfig.quick())

    @classmethod
    def tiny(cls) -> ExperimentConfig:
        """Seconds-scale, for tests: models barely trained, every stage still runs."""
        return cls(seeds=(0,), n_pref_images=24, n_samples=3, n_eval_images=12, steps=4, batch_size=4,
                   track_every=2, n_track=4, max_new_tokens=16, models=DemoConfig.tiny())


class MarginTracker(TrainerCallback):
    """Mean reward margin h of fixed easy and hard pairs, every `every` steps (the paper's responsiveness picture)."""

    def __init__(self, trainer: DAMATrainer, groups: dict[str, Dataset], every: int) -> None:
        self.trainer, self.groups, self.every = trainer, groups, every
        self.history: list[dict[str, float]] = []

    @torch.no_grad()
    def measure(self, step: int) -> None:
        trainer = self.trainer
        row: dict[str, float] = {"step": step}
        for name, data in self.groups.items():
            batch = trainer.data_collator([dict(r) for r in data])
            ref_chosen, ref_rejected = batch.pop("ref_chosen_logps"), batch.pop("ref_rejected_logps")
            batch.pop(trainer.args.hardness_column, None)
            batch = trainer._prepare_inputs(batch)
            was_training = trainer.model.training
            trainer.model.eval()
            chosen, rejected = trainer.compute_ref_log_probs(trainer.model, batch)  # the policy's log-probs
            trainer.model.train(was_training)
            margins = (chosen.cpu() - ref_chosen) - (rejected.cpu() - ref_rejected)
            row[name] = float(margins.mean())
        self.history.append(row)

    def on_train_begin(self, args, state, control, **kwargs):
        self.measure(0)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0:
            self.measure(state.global_step)


def score_responses(engine: ChairEngine, responses: list[str], items: list[dict]) -> dict[str, Any]:
    """CHAIR metrics (percent) of `responses` against the world's ground truth."""
    scored = [
        ChairItem(id=item["id"], mentions=engine.extract(text), gt=frozenset(item["gt_classes"]),
                  n_words=count_words(text))
        for item, text in zip(items, responses)
    ]
    return chair_metrics(scored)


def generate(model, processor, items: list[dict], max_new_tokens: int) -> list[str]:
    """Greedy answers to each item's question (grouped by question so prompts in a batch have one length)."""
    answers: list[str] = [""] * len(items)
    for question in QUESTIONS:
        idx = [k for k, item in enumerate(items) if item["question"] == question]
        if idx:
            out = sample_responses(model, processor, [items[k]["image"] for k in idx], question, n=1,
                                   temperature=0.0, max_new_tokens=max_new_tokens)
            for k, texts in zip(idx, out):
                answers[k] = texts[0]
    return answers


def run_hardness(prefs: Dataset, models: DemoModels, workdir: Path) -> tuple[Dataset, float]:
    """`dama hardness` on the preference pairs with the world's CLIP (sentence splitter, union_softmax)."""
    from dama.hardness import read_hardness_output
    from dama.hardness.cli import main as hardness_main

    source = workdir / "preferences.parquet"
    prefs.to_parquet(str(source))
    out = workdir / "hardness"
    code = hardness_main(["--data", str(source), "--clip", str(models.clip_path), "--out", str(out),
                          "--device", "cpu", "--overwrite", "--no-progress", "--on-error", "skip"])
    if code:
        raise RuntimeError(f"dama hardness failed with exit code {code}")
    data, delta_mean = read_hardness_output(out)
    if not isinstance(data.features.get("image"), ImageFeature):
        data = data.cast_column("image", ImageFeature())
    return data, delta_mean


def add_reference_logps(data: Dataset, base_path: Path, processor, workdir: Path) -> Dataset:
    """Reference log-probs of the base model, once, with the training collator; every run then reuses them."""
    model = LlavaForConditionalGeneration.from_pretrained(base_path)
    config = DAMAConfig(output_dir=str(workdir / "reference"), use_cpu=True, report_to=[], data_aware=False,
                        model_aware=False, keep_ratio=1.0, precompute_ref_log_probs=True, max_length=None,
                        per_device_train_batch_size=16, gradient_checkpointing=False, disable_tqdm=True)
    trainer = DAMATrainer(model=model, args=config, train_dataset=data, processing_class=processor)
    return trainer.train_dataset


def easy_and_hard(data: Dataset, n: int) -> dict[str, Dataset]:
    """The n pairs with the largest δ (easy) and the n with the smallest (hard)."""
    deltas = list(data["dama_delta"])  # the column alone: indexing rows would decode every image
    order = sorted(range(len(data)), key=deltas.__getitem__)
    n = min(n, len(order) // 2)
    return {"hard": data.select(order[:n]), "easy": data.select(order[-n:])}


def train_one(
    method: str,
    seed: int,
    cfg: ExperimentConfig,
    base_path: Path,
    processor,
    data: Dataset,
    delta_mean: float,
    workdir: Path,
) -> tuple[LlavaForConditionalGeneration, list[dict], list[dict], float]:
    """One alignment run; returns the trained model, its log history, margin curves and wall time."""
    model = LlavaForConditionalGeneration.from_pretrained(base_path)
    model.model.vision_tower.requires_grad_(False)  # LLaVA-1.5 recipe: vision tower frozen
    config = DAMAConfig(
        output_dir=str(workdir / f"{method.replace(' ', '-')}-seed{seed}"),
        per_device_train_batch_size=cfg.batch_size,
        max_steps=cfg.steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="constant",
        beta=cfg.beta,
        seed=seed,
        data_seed=seed,
        use_cpu=True,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        gradient_checkpointing=False,
        max_length=None,
        disable_tqdm=True,
        precompute_ref_log_probs=True,
        **METHODS[method],
    )
    trainer = DAMATrainer(model=model, args=config, train_dataset=data, processing_class=processor,
                          delta_mean=delta_mean)
    trainer.remove_callback(PrinterCallback)  # the demo prints its own one-line summaries
    tracker = MarginTracker(trainer, easy_and_hard(data, cfg.n_track), cfg.track_every)
    trainer.add_callback(tracker)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    model.eval()
    return model, trainer.state.log_history, tracker.history, seconds


def _brief(metrics: dict[str, Any]) -> str:
    def pct(key: str) -> str:
        return "n/a" if metrics[key] is None else f"{metrics[key]:.1f}"

    return f"CHAIR_i {pct('CHAIR_i')}  CHAIR_s {pct('CHAIR_s')}  recall {pct('recall')}  length {pct('avg_len')}"


def summarise(values: list[float | None]) -> dict[str, float | None]:
    clean = [v for v in values if v is not None and math.isfinite(v)]
    if not clean:
        return {"mean": None, "std": None}
    return {"mean": statistics.fmean(clean), "std": statistics.stdev(clean) if len(clean) > 1 else 0.0}


def run_experiment(
    cfg: ExperimentConfig, out: Path, cache_dir: str | Path | None = None, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Build (or load) the world's models, make preferences, score hardness, align with every method, evaluate."""
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    world: World = make_world(cfg.models.seed, image_size=cfg.models.image_size)
    models = build_models(cfg.models, world, cache_dir)
    timings["models"] = time.perf_counter() - clock
    log(f"[demo] models ready in {timings['models']:.0f}s (CLIP and base VLM cached in {models.vlm_path.parent})")

    clock = time.perf_counter()
    prefs = build_preferences(models.vlm, models.vlm_processor, world, n_images=cfg.n_pref_images,
                              n_samples=cfg.n_samples, max_new_tokens=cfg.max_new_tokens, seed=4, as_dataset=True)
    if len(prefs) < 2 * cfg.batch_size:
        raise RuntimeError(f"only {len(prefs)} preference pairs: the base model's samples are too alike")
    timings["preferences"] = time.perf_counter() - clock
    log(f"[demo] {len(prefs)} preference pairs from {cfg.n_pref_images} images in {timings['preferences']:.0f}s")

    clock = time.perf_counter()
    data, delta_mean = run_hardness(prefs, models, out)
    data = add_reference_logps(data, models.vlm_path, models.vlm_processor, out / "runs")
    timings["hardness"] = time.perf_counter() - clock
    log(f"[demo] dama hardness: δ̄ = {delta_mean:.4f} over {len(data)} pairs in {timings['hardness']:.0f}s")

    engine = ChairEngine(world.synonym_lines(), rules=False)
    evalset = evaluation_set(world, cfg.n_eval_images, seed=3)
    clock = time.perf_counter()
    results: dict[str, list[dict]] = {"base": [score_responses(engine, generate(
        models.vlm, models.vlm_processor, evalset, cfg.max_new_tokens), evalset)]}
    log(f"[demo] base model: {_brief(results['base'][0])}")
    runs: dict[str, list[dict]] = {}
    for seed in cfg.seeds:
        for method in METHODS:
            model, history, margins, seconds = train_one(method, seed, cfg, models.vlm_path, models.vlm_processor,
                                                         data, delta_mean, out / "runs")
            metrics = score_responses(engine, generate(model, models.vlm_processor, evalset, cfg.max_new_tokens),
                                      evalset)
            results.setdefault(method, []).append(metrics)
            runs.setdefault(method, []).append({"seed": seed, "history": history, "margins": margins,
                                                "seconds": seconds, "metrics": metrics})
            log(f"[demo] {method:<17} seed {seed}: {_brief(metrics)}  ({seconds:.0f}s)")
            del model
    timings["alignment_and_eval"] = time.perf_counter() - clock

    table = {
        name: {key: summarise([m[key] for m in per_seed]) for key in ("CHAIR_s", "CHAIR_i", "recall", "avg_len")}
        for name, per_seed in results.items()
    }
    summary = {
        "config": asdict(replace(cfg, models=cfg.models)),
        "delta_mean": delta_mean,
        "n_pairs": len(data),
        "deltas": [float(d) for d in data["dama_delta"]],  # a list: datasets returns a lazy column object
        "pair_gaps": [int(r) - int(c) for r, c in zip(data["n_hall_rejected"], data["n_hall_chosen"])],
        "build_metrics": models.metrics,
        "table": table,
        "per_seed": results,
        "runs": runs,
        "timings": timings,
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
