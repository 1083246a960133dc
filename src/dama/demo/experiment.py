"""The demo experiment: hardness → DPO / DAMA / ablations over seeds → CHAIR on held-out images.

Every stage goes through the product's code paths: `dama hardness` (atomic statements + the world's CLIP),
`DAMATrainer`, the CHAIR engine of `dama eval` with the world's synonym list. All methods share β, learning rate,
steps, batch size, seeds and the (precomputed) reference log-probs; they differ only in the DAMA switches.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from datasets import Dataset
from datasets import Image as ImageFeature
from transformers import LlavaForConditionalGeneration, PrinterCallback

from dama.config import DAMAConfig
from dama.demo.models import DemoConfig, DemoModels, build_models, sample_responses
from dama.demo.preferences import build_preferences, evaluation_set, length_balance
from dama.demo.protocol import (
    compare,
    hardness_signal,
    select_learning_rate,
    summarise,
    training_summary,
    validity_checks,
)
from dama.demo.responsiveness import MarginTracker, easy_and_hard
from dama.demo.world import QUESTIONS, World, make_world
from dama.errors import DamaError
from dama.eval.chair import ChairEngine, ChairItem, chair_metrics, count_words
from dama.hardness import read_hardness_output
from dama.hardness.cli import main as hardness_main
from dama.rows import HARDNESS_COLUMN
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
    """The alignment protocol, identical for every method (docs/demo.md: the order in which it was fixed).

    Scene seeds keep every split apart: 1 trains the world's models, 2 checks CLIP, 3 is the held-out test set,
    4 gives the preference images, 5 the validation images of the learning-rate sweep.
    """

    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    n_pref_images: int = 800
    n_samples: int = 8
    sample_temperature: float = 0.7  # plain temperature sampling (no top-k/p); below 1 fewer garbled samples
    # Pairs may name different numbers of objects: a relation claim ("beside a plate") is one more mention than
    # the position it replaces, at equal length (`pairs_from_samples`).
    same_mentions: bool = False
    same_statements: bool = True  # no pair teaches "say fewer sentences" (recall)
    n_eval_images: int = 300  # held-out test images
    n_val_images: int = 150  # validation images: the learning-rate sweep looks only at these
    steps: int = 150
    batch_size: int = 8
    learning_rates: tuple[float, ...] = (2e-5, 3e-5, 5e-5)  # the sweep grid, the same for every method
    beta: float = 0.1
    track_every: int = 25
    n_track: int = 32  # pairs per group (easy/hard by δ and by ground-truth gap) for the responsiveness curves
    max_new_tokens: int = 48
    models: DemoConfig = field(default_factory=DemoConfig.full)

    @classmethod
    def full(cls, seeds: int = 5) -> ExperimentConfig:
        return cls(seeds=tuple(range(seeds)))

    @classmethod
    def quick(cls, seeds: int = 2) -> ExperimentConfig:
        return cls(
            seeds=tuple(range(seeds)),
            n_pref_images=240,
            n_eval_images=100,
            n_val_images=60,
            steps=80,
            learning_rates=(5e-5,),
            track_every=20,
            n_track=8,
            max_new_tokens=40,
            models=DemoConfig.quick(),
        )

    @classmethod
    def tiny(cls) -> ExperimentConfig:
        """Seconds-scale, for tests: models barely trained, every stage still runs."""
        return cls(
            seeds=(0, 1),
            n_pref_images=24,
            n_samples=3,
            n_eval_images=12,
            n_val_images=8,
            steps=4,
            batch_size=4,
            learning_rates=(1e-4, 3e-4),
            track_every=2,
            n_track=4,
            max_new_tokens=16,
            models=DemoConfig.tiny(),
        )


class DemoError(DamaError, RuntimeError):
    """The demo cannot go on (too few pairs, a stage failed); the message says which stage."""


def score_responses(engine: ChairEngine, responses: list[str], items: list[dict]) -> dict[str, Any]:
    """CHAIR metrics (percent) of `responses` against the world's ground truth."""
    scored = [
        ChairItem(
            id=item["id"], mentions=engine.extract(text), gt=frozenset(item["gt_classes"]), n_words=count_words(text)
        )
        for item, text in zip(items, responses)
    ]
    return chair_metrics(scored)


def generate(model, processor, items: list[dict], max_new_tokens: int) -> list[str]:
    """Greedy answers to each item's question (grouped by question so prompts in a batch have one length)."""
    answers: list[str] = [""] * len(items)
    for question in QUESTIONS:
        idx = [k for k, item in enumerate(items) if item["question"] == question]
        if idx:
            out = sample_responses(
                model,
                processor,
                [items[k]["image"] for k in idx],
                question,
                n=1,
                temperature=0.0,
                max_new_tokens=max_new_tokens,
            )
            for k, texts in zip(idx, out):
                answers[k] = texts[0]
    return answers


def run_hardness(
    source: Path, models: DemoModels, out: Path, scorer: str = "union_softmax", splitter: str = "column"
) -> tuple[Dataset, float]:
    """`dama hardness` on the preference pairs in `source` with the world's CLIP and `scorer`. The `column`
    splitter reads each answer's atomic statements (`preferences.atomic_statements`, the paper's LLM split);
    `sentence` splits at sentence ends."""
    code = hardness_main(
        [
            "--data",
            str(source),
            "--clip",
            str(models.clip_path),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--overwrite",
            "--no-progress",
            "--on-error",
            "skip",
            "--scorer",
            scorer,
            "--splitter",
            splitter,
            # decode the small in-memory images in this process: a worker pool costs more to start (7 s per call on
            # 2 cores) than the decoding it saves here
            "--workers",
            "0",
        ]
    )
    if code:
        raise DemoError(f"dama hardness failed with exit code {code}")
    data, delta_mean = read_hardness_output(out)
    if not isinstance(data.features.get("image"), ImageFeature):
        data = data.cast_column("image", ImageFeature())
    return data, delta_mean


def add_reference_logps(data: Dataset, base_path: Path, processor, workdir: Path) -> Dataset:
    """Reference log-probs of the base model, once, with the training collator; every run then reuses them."""
    model = LlavaForConditionalGeneration.from_pretrained(base_path)
    config = DAMAConfig(
        output_dir=str(workdir / "reference"),
        use_cpu=True,
        report_to=[],
        data_aware=False,
        model_aware=False,
        keep_ratio=1.0,
        precompute_ref_log_probs=True,
        max_length=None,
        per_device_train_batch_size=16,
        activation_checkpointing=False,
        disable_tqdm=True,
    )
    trainer = DAMATrainer(model=model, args=config, train_dataset=data, processing_class=processor)
    return trainer.train_dataset


def train_one(
    method: str,
    seed: int,
    learning_rate: float,
    cfg: ExperimentConfig,
    base_path: Path,
    processor,
    data: Dataset,
    delta_mean: float,
    workdir: Path,
    track: dict[str, Dataset] | None = None,
) -> tuple[LlavaForConditionalGeneration, list[dict], list[dict], float]:
    """One alignment run; returns the trained model, its log history, margin curves and wall time."""
    model = LlavaForConditionalGeneration.from_pretrained(base_path)
    model.model.vision_tower.requires_grad_(False)  # LLaVA-1.5 recipe: vision tower frozen
    config = DAMAConfig(
        output_dir=str(workdir / f"{method.replace(' ', '-')}-seed{seed}-lr{learning_rate:g}"),
        per_device_train_batch_size=cfg.batch_size,
        max_steps=cfg.steps,
        learning_rate=learning_rate,
        lr_scheduler_type="constant",
        beta=cfg.beta,
        seed=seed,
        data_seed=seed,
        use_cpu=True,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        activation_checkpointing=False,
        max_length=None,
        disable_tqdm=True,
        precompute_ref_log_probs=True,
        **METHODS[method],
    )
    trainer = DAMATrainer(
        model=model, args=config, train_dataset=data, processing_class=processor, delta_mean=delta_mean
    )
    trainer.remove_callback(PrinterCallback)  # the demo prints its own one-line summaries
    tracker = None
    if track:
        tracker = MarginTracker(trainer, track, cfg.track_every)
        trainer.add_callback(tracker)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    model.eval()
    return model, trainer.state.log_history, tracker.history if tracker else [], seconds


def _brief(metrics: dict[str, Any]) -> str:
    def pct(key: str) -> str:
        return "n/a" if metrics[key] is None else f"{metrics[key]:.1f}"

    return f"CHAIR_i {pct('CHAIR_i')}  CHAIR_s {pct('CHAIR_s')}  recall {pct('recall')}  length {pct('avg_len')}"


def run_experiment(
    cfg: ExperimentConfig, out: Path, cache_dir: str | Path | None = None, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Models → validity of the base model → pairs → hardness → learning-rate sweep per method on validation images
    → every method with every seed on the test images → paired comparison with DPO. Writes `results.json`."""
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    world: World = make_world(cfg.models.seed, image_size=cfg.models.image_size)
    models = build_models(cfg.models, world, cache_dir)
    timings["models"] = time.perf_counter() - clock
    log(f"[demo] models ready in {timings['models']:.0f}s (CLIP and base VLM cached in {models.vlm_path.parent})")

    engine = ChairEngine(world.synonym_lines(), rules=False)
    testset = evaluation_set(world, cfg.n_eval_images, seed=3)
    valset = evaluation_set(world, cfg.n_val_images, seed=5)

    def evaluate(model, items: list[dict]) -> dict[str, Any]:
        return score_responses(engine, generate(model, models.vlm_processor, items, cfg.max_new_tokens), items)

    clock = time.perf_counter()
    base = {"test": evaluate(models.vlm, testset), "val": evaluate(models.vlm, valset)}
    log(f"[demo] base model (test): {_brief(base['test'])}")

    prefs = build_preferences(
        models.vlm,
        models.vlm_processor,
        world,
        n_images=cfg.n_pref_images,
        n_samples=cfg.n_samples,
        temperature=cfg.sample_temperature,
        max_new_tokens=cfg.max_new_tokens,
        seed=4,
        as_dataset=True,
        same_mentions=cfg.same_mentions,
        same_statements=cfg.same_statements,
    )
    if len(prefs) < 2 * cfg.batch_size:
        raise DemoError(f"only {len(prefs)} preference pairs: the base model's samples are too alike")
    balance = length_balance(prefs)
    timings["base_eval_and_preferences"] = time.perf_counter() - clock
    log(
        f"[demo] {len(prefs)} preference pairs from {cfg.n_pref_images} images; chosen {balance['chosen_words']:.1f} "
        f"vs rejected {balance['rejected_words']:.1f} words, corr(gap, length diff) "
        f"{balance['corr_gap_length_difference']:+.2f}"
    )

    clock = time.perf_counter()
    source = out / "preferences.parquet"
    prefs.to_parquet(str(source))
    data, delta_mean = run_hardness(source, models, out / "hardness")
    normalised, _ = run_hardness(source, models, out / "hardness-mean_cosine", scorer="mean_cosine")
    by_sentence, _ = run_hardness(source, models, out / "hardness-sentences", splitter="sentence")
    signal = hardness_signal(data, {
        "mean_cosine": [float(d) for d in normalised[HARDNESS_COLUMN]],
        "union_softmax, whole sentences": [float(d) for d in by_sentence[HARDNESS_COLUMN]],
    })
    data = add_reference_logps(data, models.vlm_path, models.vlm_processor, out / "runs")
    timings["hardness"] = time.perf_counter() - clock
    log(
        f"[demo] dama hardness: δ̄ = {delta_mean:.4f}; corr(δ, gap) {signal['union_softmax']['corr_gap']:+.2f}, "
        f"corr(δ, length diff) {signal['union_softmax']['corr_length_difference']:+.2f}"
    )

    track = easy_and_hard(data, cfg.n_track)

    def run(method: str, seed: int, lr: float) -> tuple[dict[str, Any], LlavaForConditionalGeneration]:
        model, history, margins, seconds = train_one(
            method, seed, lr, cfg, models.vlm_path, models.vlm_processor, data, delta_mean, out / "runs", track
        )
        record = {
            "seed": seed,
            "lr": lr,
            "history": history,
            "margins": margins,
            "seconds": seconds,
            "training": training_summary(history),
        }
        return record, model

    # 1. The learning-rate sweep: the first seed, validation images only, the same grid for every method. Only the
    #    chosen run is also scored on the test images (it is the first seed's run of step 2).
    clock = time.perf_counter()
    sweep: dict[str, dict[str, Any]] = {}
    kept: dict[str, dict] = {}
    for method in METHODS:
        candidates, trained = [], {}
        for lr in cfg.learning_rates:
            record, model = run(method, cfg.seeds[0], lr)
            record["val"] = evaluate(model, valset)
            trained[lr] = record, model
            candidates.append({"lr": lr, "val": record["val"], "training": record["training"]})
            log(
                f"[demo] sweep {method:<17} lr {lr:g}: val {_brief(record['val'])}  "
                f"margin {record['training'].get('margins', float('nan')):.2f}  ({record['seconds']:.0f}s)"
            )
        chosen = select_learning_rate(candidates, base["val"]["recall"])
        record, model = trained.pop(chosen)
        record["test"] = evaluate(model, testset)
        kept[method] = record
        sweep[method] = {"lr": chosen, "candidates": candidates}
        del trained, model
    timings["sweep"] = time.perf_counter() - clock
    log("[demo] chosen learning rates: " + ", ".join(f"{m} {s['lr']:g}" for m, s in sweep.items()))

    # 2. Every seed with the chosen learning rate (the sweep's run is the first seed's), scored on the test images.
    clock = time.perf_counter()
    runs: dict[str, list[dict]] = {method: [] for method in METHODS}
    for seed in cfg.seeds:
        for method in METHODS:
            lr = sweep[method]["lr"]
            if seed == cfg.seeds[0]:
                record = kept[method]
            else:
                record, model = run(method, seed, lr)
                record["test"] = evaluate(model, testset)
                del model
            runs[method].append(record)
            log(f"[demo] {method:<17} seed {seed}: {_brief(record['test'])}  ({record['seconds']:.0f}s)")
    timings["alignment_and_eval"] = time.perf_counter() - clock

    results = {"base": [base["test"]], **{m: [r["test"] for r in rs] for m, rs in runs.items()}}
    table = {
        name: {key: summarise([m[key] for m in per_seed]) for key in ("CHAIR_s", "CHAIR_i", "recall", "avg_len")}
        for name, per_seed in results.items()
    }
    comparisons = {method: compare(results, method) for method in METHODS if method != "DPO"}
    summary = {
        "config": asdict(replace(cfg, models=cfg.models)),
        "delta_mean": delta_mean,
        "n_pairs": len(data),
        "deltas": [float(d) for d in data[HARDNESS_COLUMN]],  # a list: datasets returns a lazy column object
        "pair_gaps": [int(r) - int(c) for r, c in zip(data["n_hall_rejected"], data["n_hall_chosen"])],
        "build_metrics": models.metrics,
        "base": base,
        "length_balance": balance,
        "hardness_signal": signal,
        "sweep": sweep,
        "validity": validity_checks(base["test"], table["DPO"], balance, signal),
        "comparison": comparisons,
        "table": table,
        "per_seed": results,
        "runs": {m: [{k: v for k, v in r.items() if k != "val"} for r in rs] for m, rs in runs.items()},
        "timings": timings,
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
