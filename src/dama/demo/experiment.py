"""The demo experiment: hardness → per regime, DPO's pilot fixes a learning-rate grid → every method along the grid
over paired seeds → CHAIR on held-out images → frontiers compared at matched recall.

Every stage goes through the product's code paths: `dama hardness` (atomic statements + the world's CLIP),
`DAMATrainer`, the CHAIR engine of `dama eval` with the world's synonym list. Within a regime all methods share β,
schedule, batch size, the learning-rate grid, seeds and the (precomputed) reference log-probs; they differ only in
their switches. Every finished run is kept in `<out>/store` under a key of its settings (`dama.demo.store`), so a
killed run resumes and a run made with other settings is never reused.
"""

from __future__ import annotations

import json
import math
import random
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

from dama.collator import REF_COLUMNS
from dama.config import DAMAConfig
from dama.delta import HARDNESS_COLUMN
from dama.demo.console import RunProgress
from dama.demo.frontier import equal_learning_rate, matched_recall
from dama.demo.models import DemoConfig, DemoModels, build_models, machine, sample_responses
from dama.demo.pool import RUN_THREADS, RunPool
from dama.demo.preferences import build_preferences, evaluation_set, length_balance
from dama.demo.protocol import (
    compare,
    dpo_working_point,
    hardness_signal,
    select_learning_rate,
    summarise,
    training_summary,
    validity_checks,
)
from dama.demo.regimes import CONSERVATIVE_POINT, Regime, frontier_grid, regimes
from dama.demo.responsiveness import MarginTracker, easy_and_hard, pair_margins
from dama.demo.store import RunStore
from dama.demo.world import QUESTIONS, World, make_world
from dama.errors import DamaError
from dama.eval.chair import ChairEngine, ChairItem, chair_metrics, count_words
from dama.hardness import read_hardness_output
from dama.hardness.cli import main as hardness_main
from dama.objective import combine_beta, data_aware_factor
from dama.trainer import DAMATrainer

# method -> trainer switches (everything else identical within a regime)
METHODS: dict[str, dict[str, Any]] = {
    "DPO": {"data_aware": False, "model_aware": False, "keep_ratio": 1.0},
    "DAMA": {"data_aware": True, "model_aware": True, "keep_ratio": 0.8},
    "data-aware only": {"data_aware": True, "model_aware": False, "keep_ratio": 1.0},
    "model-aware only": {"data_aware": False, "model_aware": True, "keep_ratio": 0.8},
    # the paper's reading of the model-aware half (docs/paper_mapping.md §3–4): R = β·h, σ of the kept mean,
    # R̄ fed the kept gaps
    "DAMA (paper reading)": {
        "data_aware": True, "model_aware": True, "keep_ratio": 0.8, "reward_scale": "beta_margin",
        "model_aware_form": "sigmoid_mean", "ema_input": "kept",
    },
    # the baselines, as their official code computes them (docs/baselines.md): β-DPO's README settings
    # (mode_weight 0.2, a 0.6), mDPO's crop drawn per pair and step
    "β-DPO": {"data_aware": False, "model_aware": False, "keep_ratio": 0.8, "beta_dpo": True, "beta_dpo_alpha": 0.6},
    "mDPO": {"data_aware": False, "model_aware": False, "keep_ratio": 1.0, "mdpo": True},
}  # fmt: skip
STUDY_METHODS = tuple(METHODS)
DEMO_METHODS = ("DPO", "DAMA")
# Pilot learning rates of the grid rule (`dama.demo.regimes.frontier_grid`): a factor-2 ladder; the frontier grid
# (knee · 2^(j/2)) then reuses three of them.
PILOT_LEARNING_RATES = (1e-5, 2e-5, 4e-5, 8e-5, 1.6e-4)
_HISTORY_KEYS = (
    "step",
    "epoch",
    "loss",
    "learning_rate",
    "rewards/margins",
    "rewards/accuracies",
    "dama/alpha_m",
    "dama/reward_gap_ema",
    "dama/kept_fraction",
    "dama/beta_mean",
    "dama/alpha_d_mean",
)


@dataclass(frozen=True)
class ExperimentConfig:
    """The alignment protocol, identical for every method (docs/demo.md: the order in which it was fixed).

    Scene seeds keep every split apart: 1 trains the world's models, 2 checks CLIP, 3 is the held-out test set,
    4 gives the preference images, 5 the validation images of the pilot and the single-point rule.
    """

    seeds: tuple[int, ...] = (0, 1, 2)
    n_pref_images: int = 800
    n_samples: int = 8
    sample_temperature: float = 0.7  # plain temperature sampling (no top-k/p); below 1 fewer garbled samples
    # Pairs may name different numbers of objects: a relation claim ("beside a plate") is one more mention than
    # the position it replaces, at equal length (`pairs_from_samples`).
    same_mentions: bool = False
    same_statements: bool = True  # no pair teaches "say fewer sentences" (recall)
    n_eval_images: int = 300  # held-out test images
    n_val_images: int = 150  # validation images: the pilot and the single-point rule look only at these
    regimes: tuple[str, ...] = ("short",)  # names in `dama.demo.regimes.regimes()`, the first is the primary one
    methods: tuple[str, ...] = DEMO_METHODS  # DPO first: its pilot fixes each regime's grid
    steps: int = 150  # regime "short"
    batch_size: int = 8  # regime "short"
    epochs: float = 4.0  # regimes "official" and "margin"
    epoch_batch_size: int = 16
    pilot_learning_rates: tuple[float, ...] = PILOT_LEARNING_RATES
    frontier_points: int = 5
    learning_rates: tuple[float, ...] = ()  # a fixed grid instead of the pilot rule (quick and tiny presets)
    track_every: int = 25
    n_track: int = 32  # pairs per group (easy/hard by δ and by ground-truth gap) for the responsiveness curves
    n_beta_h: int = 64  # pairs per group (easy: gap ≥ 2, hard: gap 1) whose final β_C·h is measured
    max_new_tokens: int = 48
    models: DemoConfig = field(default_factory=DemoConfig.full)
    shipped_models: bool = True  # the package's copy of the full preset's models (`dama.demo.models.SHIPPED_DIR`)

    @classmethod
    def full(cls, seeds: int = 3) -> ExperimentConfig:
        return cls(seeds=tuple(range(seeds)))

    @classmethod
    def study(cls, seeds: int = 3) -> ExperimentConfig:
        return cls(seeds=tuple(range(seeds)), regimes=("short", "official", "margin"), methods=STUDY_METHODS)

    @classmethod
    def quick(cls, seeds: int = 2) -> ExperimentConfig:
        return cls(
            seeds=tuple(range(seeds)),
            n_pref_images=240,
            n_eval_images=100,
            n_val_images=60,
            steps=80,
            learning_rates=(5e-5, 1e-4),
            track_every=20,
            n_track=8,
            n_beta_h=16,
            max_new_tokens=40,
            models=DemoConfig.quick(),
        )

    @classmethod
    def tiny(cls, study: bool = False) -> ExperimentConfig:
        """Seconds of training for tests, on the quick preset's models (the tiniest models make no pairs): every
        stage still runs; `study` adds a second regime, the pilot rule and every method."""
        return cls(
            seeds=(0, 1),
            n_pref_images=40,
            n_samples=4,
            n_eval_images=12,
            n_val_images=8,
            regimes=("short", "official") if study else ("short",),
            methods=("DPO", "DAMA", "DAMA (paper reading)", "β-DPO", "mDPO") if study else DEMO_METHODS,
            steps=4,
            batch_size=4,
            epochs=2.0,
            epoch_batch_size=8,
            pilot_learning_rates=(1e-4, 2e-4, 4e-4) if study else (),
            frontier_points=3,
            learning_rates=() if study else (1e-4, 3e-4),
            track_every=2,
            n_track=4,
            n_beta_h=4,
            max_new_tokens=16,
            models=DemoConfig.quick(),
        )

    def regime(self, name: str) -> Regime:
        return regimes(self.steps, self.batch_size, self.epochs, self.epoch_batch_size)[name]


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


def _brief(metrics: dict[str, Any]) -> str:
    def pct(key: str) -> str:
        return "n/a" if metrics[key] is None else f"{metrics[key]:.1f}"

    return f"CHAIR_i {pct('CHAIR_i')}  CHAIR_s {pct('CHAIR_s')}  recall {pct('recall')}  length {pct('avg_len')}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


@dataclass
class Prepared:
    """What every run of an experiment shares: the models, evaluation sets, pairs with δ and reference log-probs."""

    cfg: ExperimentConfig
    models: DemoModels
    engine: ChairEngine
    testset: list[dict]
    valset: list[dict]
    data: Dataset
    delta_mean: float
    track: dict[str, Dataset]
    beta_h_groups: dict[str, Dataset]
    summary: dict[str, Any]  # the base model's and the pairs' numbers (results.json's top-level fields)

    def for_runs(self) -> Prepared:
        """What an alignment run needs, for the run pool's workers: the models' objects stay here (a run loads the
        base VLM from its folder; a loaded model holds hooks that do not pickle)."""
        return replace(self, models=replace(self.models, clip=None, vlm=None))

    def evaluate(self, model, items: list[dict]) -> dict[str, Any]:
        return score_responses(
            self.engine, generate(model, self.models.vlm_processor, items, self.cfg.max_new_tokens), items
        )


def beta_h_groups(data: Dataset, n: int, seed: int = 0) -> dict[str, Dataset]:
    """Fixed pairs whose final β_C·h is measured: up to `n` easy (ground-truth gap ≥ 2) and `n` hard (gap 1) pairs,
    drawn with a fixed seed."""
    gaps = [int(r) - int(c) for r, c in zip(data["n_hall_rejected"], data["n_hall_chosen"])]
    rng = random.Random(seed)
    groups = {}
    for name, members in (
        ("easy", [i for i, g in enumerate(gaps) if g >= 2]),
        ("hard", [i for i, g in enumerate(gaps) if g == 1]),
    ):
        if members:
            groups[name] = data.select(sorted(rng.sample(members, min(n, len(members)))))
    return groups


def prepare(cfg: ExperimentConfig, out: Path, cache_dir: str | Path | None, log: Callable[[str], None]) -> Prepared:
    """Models → the base model on the test and validation images → pairs → hardness → reference log-probs."""
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    world: World = make_world(cfg.models.seed, image_size=cfg.models.image_size)
    models = build_models(cfg.models, world, cache_dir, shipped=cfg.shipped_models)
    timings["models"] = time.perf_counter() - clock
    where = {"shipped": "the package's shipped copy", "cache": "the cache", "built": "trained here, now cached"}
    how = " and ".join(where.get(part, part) for part in dict.fromkeys(models.source.split("+")))
    log(f"[demo] models ready in {timings['models']:.0f}s (CLIP and base VLM: {how}, {models.vlm_path.parent})")

    engine = ChairEngine(world.synonym_lines(), rules=False)
    testset = evaluation_set(world, cfg.n_eval_images, seed=3)
    valset = evaluation_set(world, cfg.n_val_images, seed=5)

    clock = time.perf_counter()
    prep = Prepared(cfg, models, engine, testset, valset, None, 0.0, {}, {}, {})  # type: ignore[arg-type]
    base = {"test": prep.evaluate(models.vlm, testset), "val": prep.evaluate(models.vlm, valset)}
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
    if len(prefs) < 2 * max(cfg.batch_size, cfg.epoch_batch_size if len(cfg.regimes) > 1 else 1):
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
    signal = hardness_signal(
        data,
        {
            "mean_cosine": [float(d) for d in normalised[HARDNESS_COLUMN]],
            "union_softmax, whole sentences": [float(d) for d in by_sentence[HARDNESS_COLUMN]],
        },
    )
    data = add_reference_logps(data, models.vlm_path, models.vlm_processor, out / "runs")
    timings["hardness"] = time.perf_counter() - clock
    log(
        f"[demo] dama hardness: δ̄ = {delta_mean:.4f}; corr(δ, gap) {signal['union_softmax']['corr_gap']:+.2f}, "
        f"corr(δ, length diff) {signal['union_softmax']['corr_length_difference']:+.2f}"
    )
    prep.data, prep.delta_mean = data, delta_mean
    prep.track = easy_and_hard(data, cfg.n_track)
    prep.beta_h_groups = beta_h_groups(data, cfg.n_beta_h)
    prep.summary = {
        "delta_mean": delta_mean,
        "n_pairs": len(data),
        "deltas": [float(d) for d in data[HARDNESS_COLUMN]],  # a list: datasets returns a lazy column object
        "pair_gaps": [int(r) - int(c) for r, c in zip(data["n_hall_rejected"], data["n_hall_chosen"])],
        "build_metrics": models.metrics,
        "models": models_provenance(models),
        "base": base,
        "length_balance": balance,
        "hardness_signal": signal,
        "timings": timings,
    }
    return prep


def models_provenance(models: DemoModels) -> dict[str, Any]:
    """Where the world's models came from, the machine they were built on (the shipped copy records it) and the
    machine this run is on: a build differs across CPU types (docs/demo.md, "The world's models")."""
    record = models.vlm_path / "provenance.json"
    built_on = json.loads(record.read_text())["built_on"] if record.is_file() else None
    return {
        "source": models.source,
        "clip": models.clip_path.name,
        "vlm": models.vlm_path.name,
        "built_on": built_on,
        "ran_on": machine(),
    }


def store_context(prep: Prepared) -> dict[str, Any]:
    """What every stored run of this experiment depends on besides its own settings (`dama.demo.store`)."""
    cfg = asdict(prep.cfg)
    for name in (
        "seeds",
        "regimes",
        "methods",
        "pilot_learning_rates",
        "frontier_points",
        "learning_rates",
        "steps",
        "batch_size",
        "epochs",
        "epoch_batch_size",
    ):
        cfg.pop(name)  # these select runs; each run's own settings carry what it used
    texts = json.dumps(
        [prep.data["chosen"], prep.data["rejected"], [round(d, 7) for d in prep.summary["deltas"]]],
        default=str,
        sort_keys=True,
    )
    import hashlib

    return {
        "experiment": cfg,
        "pairs": hashlib.sha256(texts.encode()).hexdigest()[:20],
        "delta_mean": round(prep.delta_mean, 9),
    }


class _EpochValidation(TrainerCallback):
    """Scores the model on the validation images at the end of every epoch (regimes that ask for it)."""

    def __init__(self, prep: Prepared, model) -> None:
        self.prep, self.model, self.epochs = prep, model, []

    def on_epoch_end(self, args, state, control, **kwargs):
        was_training = self.model.training
        self.model.eval()
        metrics = self.prep.evaluate(self.model, self.prep.valset)
        self.model.train(was_training)
        self.epochs.append({"epoch": round(state.epoch or 0.0, 3), "step": state.global_step, "val": metrics})


def beta_h_at_end(trainer: DAMATrainer, prep: Prepared, method: str, beta: float, history: list[dict]) -> dict:
    """β_C·h of the fixed easy and hard pairs with the final policy: β_C,i = max(β·α_D,i·α_M, β_min), α_M the last
    step's (β-DPO: its last β_used; mDPO: β, the β of its DPO term). Per group: mean, quantiles, and the share past
    `CONSERVATIVE_POINT`."""
    switches = METHODS[method]
    alpha_m = None
    if switches.get("beta_dpo"):  # the last step's one β (β_used)
        logged = [h["beta_dpo/beta_used"] for h in history if "beta_dpo/beta_used" in h]
        beta = logged[-1] if logged else beta
    if switches["model_aware"]:
        logged = [h["dama/alpha_m"] for h in history if "dama/alpha_m" in h]
        alpha_m = logged[-1] if logged else 1.0
    out: dict[str, Any] = {}
    for name, data in prep.beta_h_groups.items():
        h = pair_margins(trainer, data).float()
        alpha_d = (
            data_aware_factor(torch.tensor(data[HARDNESS_COLUMN]), prep.delta_mean) if switches["data_aware"] else None
        )
        beta_c = torch.as_tensor(combine_beta(beta, alpha_d, alpha_m, trainer.args.beta_min), dtype=torch.float32)
        values = (beta_c * h).tolist() if beta_c.ndim else (float(beta_c) * h).tolist()
        ordered = sorted(values)

        def q(p: float, ordered: list[float] = ordered) -> float:
            return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

        out[name] = {
            "n": len(values),
            "mean": statistics.fmean(values),
            "p10": q(0.1),
            "p50": q(0.5),
            "p90": q(0.9),
            "share_past": sum(v > CONSERVATIVE_POINT for v in values) / len(values),
            "values": values,
        }
    return out


def train_run(
    prep: Prepared, regime: Regime, method: str, lr: float, seed: int, workdir: Path, track: bool
) -> dict[str, Any]:
    """One alignment run, scored on the validation and test images; returns its record (no model)."""
    model = LlavaForConditionalGeneration.from_pretrained(prep.models.vlm_path)
    model.model.vision_tower.requires_grad_(False)  # LLaVA-1.5 recipe: vision tower frozen
    # mDPO scores y_w with a corrupted image under the reference at every step: a live reference model, no stored
    # reference log-probs (the other methods read them from the data)
    live_reference = bool(METHODS[method].get("mdpo"))
    data = prep.data.remove_columns(list(REF_COLUMNS)) if live_reference else prep.data
    ref_model = LlavaForConditionalGeneration.from_pretrained(prep.models.vlm_path) if live_reference else None
    length = {"max_steps": regime.steps} if regime.steps else {"num_train_epochs": regime.epochs}
    config = DAMAConfig(
        output_dir=str(workdir / f"{regime.name}-{method.replace(' ', '-')}-seed{seed}-lr{lr:g}"),
        per_device_train_batch_size=regime.batch_size,
        learning_rate=lr,
        lr_scheduler_type=regime.scheduler,
        warmup_steps=regime.warmup,
        beta=regime.beta,
        seed=seed,
        data_seed=seed,
        use_cpu=True,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        activation_checkpointing=False,
        max_length=None,
        disable_tqdm=True,
        precompute_ref_log_probs=not live_reference,
        **length,
        **METHODS[method],
    )
    trainer = DAMATrainer(
        model=model,
        ref_model=ref_model,
        args=config,
        train_dataset=data,
        processing_class=prep.models.vlm_processor,
        delta_mean=prep.delta_mean,
    )
    trainer.remove_callback(PrinterCallback)  # the demo prints its own one-line summaries
    tracker = MarginTracker(trainer, prep.track, prep.cfg.track_every) if track else None
    if tracker:
        trainer.add_callback(tracker)
    epochs = _EpochValidation(prep, model) if regime.validate_every_epoch else None
    if epochs:
        trainer.add_callback(epochs)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    model.eval()
    history = [{k: h[k] for k in _HISTORY_KEYS if k in h} for h in trainer.state.log_history]
    val = epochs.epochs[-1]["val"] if epochs and epochs.epochs else prep.evaluate(model, prep.valset)
    return {
        "seed": seed,
        "lr": lr,
        "history": history,
        "margins": tracker.history if tracker else [],
        "seconds": seconds,
        "training": training_summary(trainer.state.log_history),
        "val": val,
        "val_epochs": epochs.epochs if epochs else [],
        "test": prep.evaluate(model, prep.testset),
        "beta_h": beta_h_at_end(trainer, prep, method, regime.beta, trainer.state.log_history),
    }


def _units(regime: Regime, n_pairs: int) -> float:
    """Training cost of one run in pair-passes (for the ETA)."""
    return regime.steps * regime.batch_size if regime.steps else regime.epochs * n_pairs


class Study:
    """Runs the regimes of an experiment through the run store, under one progress bar over every run with the
    time left (`dama.demo.console.RunProgress`), and one line per stage."""

    def __init__(self, prep: Prepared, out: Path, log: Callable[[str], None], workers: int = 1) -> None:
        self.prep, self.out, self.log = prep, out, log
        self.store = RunStore(out / "store", store_context(prep))
        self.pool = RunPool(train_run, prep.for_runs(), workers)
        self.done = 0
        self.rates: list[float] = []  # seconds per pair-pass of each run trained (training and scoring)
        self.planned: dict[str, float] = {}  # regime -> units still to run (estimate until its grid is fixed)
        self.calls: dict[str, int] = {}  # regime -> runs asked for (pilot and grid, store hits included)
        self.stage = {"runs": 0, "stored": 0, "started": time.perf_counter()}  # since the last stage line
        cfg = prep.cfg
        for name in cfg.regimes:
            regime = cfg.regime(name)
            n_grid = len(cfg.learning_rates) or cfg.frontier_points
            n = len(cfg.methods) * n_grid * len(cfg.seeds)
            self.calls[name] = n + (0 if cfg.learning_rates else len(cfg.pilot_learning_rates))
            if not cfg.learning_rates:
                n += len(cfg.pilot_learning_rates) - min(3, n_grid)
            self.planned[name] = n * _units(regime, len(prep.data))
        self.progress = RunProgress(sum(self.calls.values()))

    def say(self, line: str) -> None:
        """One stage line, printed above the progress bar."""
        self.progress.write(line, self.log)

    def runs(self, specs: list[tuple[Regime, str, float, int, bool]]) -> list[dict[str, Any]]:
        """The records of runs given as (regime, method, lr, seed, track), in that order: from the store where it
        has them, else trained (in the pool's workers, side by side) and stored as each finishes."""
        settings = [
            {"regime": r.settings(), "method": m, "switches": METHODS[m], "lr": lr, "seed": seed, "track": track}
            for r, m, lr, seed, track in specs
        ]
        records: list[dict[str, Any] | None] = [self.store.get(s) for s in settings]
        for spec, record in zip(specs, records):
            if record is not None:
                self._advance(spec, record, stored=True)
        # the longest runs first, so that the workers finish a batch together (the order changes no number)
        todo = sorted(
            (k for k, record in enumerate(records) if record is None),
            key=lambda k: -_units(specs[k][0], len(self.prep.data)),
        )
        calls = [(*specs[k][:4], self.out / "runs", specs[k][4]) for k in todo]
        for j, record, seconds in self.pool.map(calls):
            k = todo[j]
            self.store.put(settings[k], record)
            self.rates.append(seconds / _units(specs[k][0], len(self.prep.data)))
            records[k] = record
            self._advance(specs[k], record, stored=False)
        return records  # type: ignore[return-value]

    def _advance(self, spec: tuple, record: dict[str, Any], stored: bool) -> None:
        regime, method, lr, seed, _ = spec
        units = _units(regime, len(self.prep.data))
        self.done += 1
        self.stage["runs"] += 1
        self.stage["stored"] += stored
        self.planned[regime.name] = max(0.0, self.planned[regime.name] - units)
        remaining = sum(self.planned.values())
        # seconds per pair-pass: the median of the last runs trained here (robust to a run slowed by other load),
        # over the workers that run side by side
        eta = remaining * statistics.median(self.rates[-8:]) / self.pool.workers / 60 if self.rates else None
        took = "from the store" if stored else f"{record['seconds']:.0f}s"
        test = record["test"]
        self.progress.advance(
            eta,
            f"last: {regime.name} {method} lr {lr:.3g} seed {seed}, test CHAIR_i {_pct(test['CHAIR_i'])} "
            f"recall {_pct(test['recall'])} ({took})",
        )

    def end_stage(self, title: str, methods: list[str]) -> None:
        """The stage line of the runs since the last one: how many, how many came from the store, how long."""
        runs, stored = self.stage["runs"], self.stage["stored"]
        minutes = (time.perf_counter() - self.stage["started"]) / 60
        self.say(f"[demo] {title}: {', '.join(methods)}: {runs} runs ({stored} from the store) in {minutes:.1f} min")
        self.stage = {"runs": 0, "stored": 0, "started": time.perf_counter()}

    def close(self) -> None:
        self.pool.close()
        self.progress.close()

    def grids(self, names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
        """Each regime's learning-rate grid: the preset's, or fixed by DPO's pilot (`frontier_grid`). The pilots of
        every regime are one batch (side by side in the workers): all grids are fixed before any other method runs."""
        cfg, prep = self.prep.cfg, self.prep
        lrs = () if cfg.learning_rates else cfg.pilot_learning_rates
        # tracked like DPO's first seed in the frontier, so that the grid's pilot lrs are reused there
        specs = [(cfg.regime(name), "DPO", lr, cfg.seeds[0], True) for name in names for lr in lrs]
        records = iter(self.runs(specs))
        grids = {}
        for name in names:
            regime = cfg.regime(name)
            pilot = {lr: next(records)["val"] for lr in lrs}
            knee = None
            if not pilot:
                grid = list(cfg.learning_rates)
            else:
                grid, knee = frontier_grid(
                    {lr: v["CHAIR_i"] if v["CHAIR_i"] is not None else math.inf for lr, v in pilot.items()},
                    prep.summary["base"]["val"]["CHAIR_i"],
                    cfg.frontier_points,
                )
                self.planned[name] = len(cfg.methods) * len(grid) * len(cfg.seeds) * _units(regime, len(prep.data))
                self.calls[name] = len(pilot) + len(cfg.methods) * len(grid) * len(cfg.seeds)
                self.progress.set_total(sum(self.calls.values()))
            how = "by DPO's pilot" if pilot else "in the preset"
            self.say(
                f"[demo] {regime.title}: grid {', '.join(f'{lr:.3g}' for lr in grid)} fixed {how} "
                "before any other method runs"
            )
            grids[name] = {"grid": grid, "knee": knee, "pilot": pilot, "track_lr": grid[len(grid) // 2]}
        return grids

    def methods(self, grids: dict[str, dict[str, Any]], methods: list[str]) -> dict[str, dict[str, list[dict]]]:
        """Every run of each method along each regime's grid over the seeds, as one batch (side by side in the
        workers): regime → method → runs. Margins are tracked at the middle lr, and on DPO's first seed at every lr
        as in its pilot (the tracked margins are part of a run's settings)."""
        cfg = self.prep.cfg
        first = cfg.seeds[0]
        specs = [
            (cfg.regime(name), method, lr, seed, lr == grid["track_lr"] or (method == "DPO" and seed == first))
            for name, grid in grids.items()
            for method in methods
            for lr in grid["grid"]
            for seed in cfg.seeds
        ]
        records = iter(self.runs(specs))
        return {
            name: {method: [next(records) for _ in range(len(grid["grid"]) * len(cfg.seeds))] for method in methods}
            for name, grid in grids.items()
        }


def frontier_entry(record: dict[str, Any]) -> dict[str, Any]:
    test, beta_h = record["test"], record["beta_h"]
    return {
        "lr": record["lr"],
        "seed": record["seed"],
        **{k: test[k] for k in ("CHAIR_i", "CHAIR_s", "recall", "avg_len")},
        "beta_h_easy": beta_h["easy"]["mean"] if "easy" in beta_h else None,
        "beta_h_hard": beta_h["hard"]["mean"] if "hard" in beta_h else None,
        "share_past_easy": beta_h["easy"]["share_past"] if "easy" in beta_h else None,
        "share_past_hard": beta_h["hard"]["share_past"] if "hard" in beta_h else None,
        "val": {k: record["val"][k] for k in ("CHAIR_i", "CHAIR_s", "recall", "avg_len")},
        "val_epochs": [
            {"epoch": e["epoch"], **{k: e["val"][k] for k in ("CHAIR_i", "recall")}} for e in record["val_epochs"]
        ],
    }


def _pooled_beta_h(records: list[dict], group: str) -> dict[str, Any] | None:
    values = sorted(v for r in records if group in r["beta_h"] for v in r["beta_h"][group]["values"])
    if not values:
        return None
    return {
        "n": len(values),
        "mean": statistics.fmean(values),
        **{f"p{int(100 * p)}": values[min(len(values) - 1, int(p * len(values)))] for p in (0.1, 0.5, 0.9)},
        "share_past": sum(v > CONSERVATIVE_POINT for v in values) / len(values),
    }


def regime_summary(
    prep: Prepared,
    regime: Regime,
    grid: list[float],
    knee: float | None,
    pilot: dict,
    track_lr: float,
    records: dict[str, list[dict]],
) -> dict[str, Any]:
    """Frontiers, matched-recall and equal-lr comparisons with DPO, the single-point rule, β_C·h and validity."""
    base = prep.summary["base"]
    first = prep.cfg.seeds[0]
    single: dict[str, dict] = {}
    chosen: dict[str, list[dict]] = {}
    for method, runs in records.items():
        candidates = [{"lr": r["lr"], "val": r["val"], "training": r["training"]} for r in runs if r["seed"] == first]
        lr = select_learning_rate(candidates, base["val"]["recall"])
        single[method] = {"lr": lr, "candidates": candidates}
        chosen[method] = [r for r in runs if r["lr"] == lr]
    per_seed = {"base": [base["test"]], **{m: [r["test"] for r in rs] for m, rs in chosen.items()}}
    table = {
        name: {key: summarise([m[key] for m in runs]) for key in ("CHAIR_s", "CHAIR_i", "recall", "avg_len")}
        for name, runs in per_seed.items()
    }
    frontier = {m: [frontier_entry(r) for r in rs] for m, rs in records.items()}
    # DPO is judged at its best grid point on the test images (frontier protocol; `dpo_working_point`)
    dpo_by_lr = (
        {
            lr: {
                key: summarise([r["test"][key] for r in records["DPO"] if r["lr"] == lr])
                for key in ("CHAIR_i", "recall")
            }
            for lr in grid
        }
        if "DPO" in records
        else {}
    )
    working = dpo_working_point(dpo_by_lr, base["test"]["recall"]) if dpo_by_lr else None
    others = [m for m in records if m != "DPO"]
    return {
        "settings": regime.settings(),
        "title": regime.title,
        "description": regime.describe(),
        "grid": grid,
        "knee": knee,
        "track_lr": track_lr,
        "pilot": {str(lr): v for lr, v in pilot.items()},
        "frontier": frontier,
        "matched_recall": {m: matched_recall(frontier[m], frontier["DPO"]) for m in others}
        if "DPO" in records
        else {},
        "equal_lr": {m: equal_learning_rate(frontier[m], frontier["DPO"]) for m in others} if "DPO" in records else {},
        "beta_h": {
            m: {
                f"{lr:.3g}": {g: _pooled_beta_h([r for r in rs if r["lr"] == lr], g) for g in ("easy", "hard")}
                for lr in grid
            }
            for m, rs in records.items()
        },
        "single_point": single,
        "table": table,
        "per_seed": per_seed,
        "comparison": {m: compare(per_seed, m) for m in others} if "DPO" in records else {},
        "dpo_working_lr": working,
        "validity": validity_checks(
            base["test"],
            dpo_by_lr[working],
            prep.summary["length_balance"],
            prep.summary["hardness_signal"],
            f" (DPO at lr {working:.3g}, the grid's best mean test CHAIR_i with mean recall ≥ 0.9 × base)",
        )
        if "DPO" in records
        else {},
        "runs": {
            m: [{k: v for k, v in r.items() if k not in ("val", "beta_h")} for r in rs if r["lr"] == track_lr]
            for m, rs in records.items()
        },
    }


def run_experiment(
    cfg: ExperimentConfig,
    out: Path,
    cache_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
    workers: int = 1,
) -> dict[str, Any]:
    """Prepare (models, pairs, hardness) → each regime's frontiers through the run store → `results.json`.
    `workers` runs train side by side (`dama.demo.pool`); the numbers do not depend on it.

    The first regime is the primary one: its single-point rule, table, comparison and validity checks are also the
    top-level fields that earlier versions of results.json had."""
    out.mkdir(parents=True, exist_ok=True)
    prep = prepare(cfg, out, cache_dir, log)
    study = Study(prep, out, log, workers)
    # DPO and DAMA in every regime first, then the baselines, then the ablations: an interrupted study has the main
    # comparison of every regime first (each regime's grid is fixed by DPO before any other method runs in it)
    first_phase = [m for m in cfg.methods if m in ("DPO", "DAMA")]
    second_phase = [m for m in cfg.methods if m in ("β-DPO", "mDPO")]
    records: dict[str, dict[str, list[dict]]] = {name: {} for name in cfg.regimes}
    timings = prep.summary["timings"]
    try:
        clock = time.perf_counter()
        grids = study.grids(cfg.regimes)
        if not cfg.learning_rates:
            timings["pilots"] = time.perf_counter() - clock
            study.end_stage("pilots of " + ", ".join(cfg.regime(name).title for name in cfg.regimes), ["DPO"])
        for methods in (first_phase, second_phase, [m for m in cfg.methods if m not in first_phase + second_phase]):
            if not methods:
                continue
            clock = time.perf_counter()
            for name, by_method in study.methods(grids, methods).items():
                records[name].update(by_method)
            timings["runs: " + ", ".join(methods)] = time.perf_counter() - clock
            study.end_stage(", ".join(cfg.regime(name).title for name in cfg.regimes), methods)
    finally:
        study.close()
    regime_results = {
        name: regime_summary(
            prep,
            cfg.regime(name),
            grids[name]["grid"],
            grids[name]["knee"],
            grids[name]["pilot"],
            grids[name]["track_lr"],
            {m: records[name][m] for m in cfg.methods},
        )
        for name in cfg.regimes
    }
    primary = regime_results[cfg.regimes[0]]
    summary = {
        "config": asdict(cfg),
        **prep.summary,
        "methods": list(cfg.methods),
        "conservative_point": CONSERVATIVE_POINT,
        "store": {"folder": str(out / "store"), "runs_reused": study.store.hits, "runs": study.done},
        "workers": {"processes": workers, "threads_per_run": RUN_THREADS},
        "regimes": {
            name: {k: v for k, v in r.items() if k not in ("frontier", "matched_recall", "runs")}
            for name, r in regime_results.items()
        },
        "frontier": {name: r["frontier"] for name, r in regime_results.items()},
        "matched_recall": {name: r["matched_recall"] for name, r in regime_results.items()},
        "runs": {name: r["runs"] for name, r in regime_results.items()},
        "sweep": primary["single_point"],
        "table": primary["table"],
        "per_seed": primary["per_seed"],
        "comparison": primary["comparison"],
        "validity": primary["validity"],
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
