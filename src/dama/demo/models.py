"""The demo's models, trained locally on the synthetic world through the ordinary transformers classes.

1. A tiny CLIP (`CLIPModel`), trained contrastively on (image, caption or caption sentence) pairs. It is the
   hardness scorer Γ_CLIP of DAMA's data-aware factor, and its vision tower initialises the VLM's.
2. A tiny LLaVA (`LlavaForConditionalGeneration`), supervised on captions (loss on the assistant turn only) with its
   vision tower frozen, as in LLaVA-1.5. Trained briefly on co-occurrence-biased captions, it describes images but
   hallucinates: the base model that preference alignment then improves.

Both are keyed by a hash of everything that determines them (`DemoConfig`, the world, `CACHE_VERSION`). The full
preset's pair ships with the package (`SHIPPED_DIR`, about 2 MB): float kernels differ between CPU types, so a build
is not bit-identical across machines, and the shipped pair makes every machine run the same world (docs/demo.md,
"The world's models"). Any other configuration, or `shipped=False`, is trained here and cached on disk; a second
build with the same settings loads it with `from_pretrained`. `python -m dama.demo.models --ship` refreshes the
shipped pair from a build.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor, LlavaForConditionalGeneration, LlavaProcessor

from dama import tiny
from dama.demo.world import QUESTIONS, Captioner, World, corpus, make_world, statement

CACHE_VERSION = 5  # bump when code changes what a given config builds (and ship the full preset's pair again)
SHIPPED_DIR = Path(__file__).parent / "world_models"  # the full preset's CLIP and VLM, `<kind>-<key>` folders


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and training budgets of the demo models. `quick()` builds in about two minutes on 2 cores, `full()` in
    about four."""

    seed: int = 0
    image_size: int = 48
    patch_size: int = 16  # one patch per grid cell of the world
    vocab_size: int = 400
    n_train_scenes: int = 4000
    n_eval_scenes: int = 200
    # CLIP
    clip_hidden: int = 64
    clip_layers: int = 2
    clip_max_length: int = 48
    clip_steps: int = 3000
    clip_batch: int = 64
    clip_lr: float = 2e-3
    # LLaVA (language model; the vision tower is CLIP's)
    vlm_hidden: int = 64
    vlm_layers: int = 2
    vlm_steps: int = 3000
    vlm_batch: int = 32
    vlm_lr: float = 2e-3
    vlm_train_vision: bool = False  # LLaVA-1.5 keeps the vision tower frozen
    # The co-occurrence bias of the VLM's instruction data (`world.Captioner`): a small / large object of another
    # class is named as the absent partner of an object in the scene with these probabilities; a one-object
    # scene gets the absent partner added with `bias_add`. CLIP is trained on exact descriptions.
    bias_small: float = 0.75
    bias_large: float = 0.2
    bias_add: float = 0.4
    # A one-object group is placed "beside" its partner with this probability, present or not (`Captioner.p_beside`).
    bias_beside: float = 0.7

    @classmethod
    def full(cls, **overrides) -> DemoConfig:
        return replace(cls(), **overrides)

    @classmethod
    def quick(cls, **overrides) -> DemoConfig:
        # A smoke-run budget (CI runs it): weaker models than full()'s, the same pipeline and the same world. CLIP at
        # 900 steps (600 before) and the VLM at 1700 (2000): the quick base model then passes the base-model checks
        # (recall 69.7, CHAIR_i 29.2, CHAIR_s 50.0) and corr(δ, gap) is +0.27 (+0.04 with the 600-step CLIP).
        small = cls(n_train_scenes=1500, n_eval_scenes=60, clip_steps=900, vlm_steps=1700)
        return replace(small, **overrides)

    @classmethod
    def tiny(cls, **overrides) -> DemoConfig:
        """Seconds-scale sizes for tests: the models are barely trained."""
        small = cls(
            image_size=24,
            patch_size=8,
            vocab_size=300,
            n_train_scenes=64,
            n_eval_scenes=40,
            clip_hidden=64,
            clip_steps=40,
            clip_batch=32,
            vlm_hidden=32,
            vlm_steps=20,
            vlm_batch=8,
            clip_max_length=40,
        )
        return replace(small, **overrides)

    def clip_fields(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith(("vlm_", "bias_"))}

    @property
    def captioner(self) -> Captioner:
        return Captioner(self.bias_small, self.bias_large, self.bias_add, self.bias_beside)


def default_cache_dir() -> Path:
    """`$DAMA_CACHE/demo`, else `~/.cache/dama/demo`."""
    root = os.environ.get("DAMA_CACHE")
    return Path(root) / "demo" if root else Path.home() / ".cache" / "dama" / "demo"


def _key(kind: str, payload: dict, world: World) -> str:
    world_fields = {k: v for k, v in asdict(world).items()}
    blob = json.dumps({"kind": kind, "v": CACHE_VERSION, "cfg": payload, "world": world_fields}, sort_keys=True)
    return f"{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


# ---------------------------------------------------------------------------------------------- data


def world_tokenizer(world: World, vocab_size: int, add_eos: bool):
    """A BPE trained on the world's text (with EOS appended for CLIP, whose text tower pools there).

    `</s>` is kept off id 2 for both models (same vocabulary): at id 2 CLIP's text tower would pool at the highest
    token id rather than at EOS (see `dama.tiny.build_tokenizer`).
    """
    return tiny.build_tokenizer(
        corpus(world), vocab_size=vocab_size, add_eos=add_eos, special_tokens=tiny.CLIP_SPECIAL_TOKENS
    )


def _pixel_values(processor, images: list[Image.Image], chunk: int = 512) -> torch.Tensor:
    parts = [
        processor.image_processor(images[i : i + chunk], return_tensors="pt")["pixel_values"]
        for i in range(0, len(images), chunk)
    ]
    return torch.cat(parts)  # (N, 3, H, W)


def _lr(step: int, steps: int, lr: float) -> float:
    warmup = max(1, steps // 20)
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


# ---------------------------------------------------------------------------------------------- CLIP


def clip_texts(world: World, scenes, rng: random.Random) -> tuple[list[str], list[str]]:
    """Per scene a positive text and its hard negative.

    The positive is the exact description or, half the time, one of its statements. (`dama hardness` scores the atomic
    claims of such statements, "There is a cup." / "The cup is red.", a form CLIP is not trained on: docs/demo.md,
    "Hardness".) The negative is the same text with one object named as another class absent from the scene (its
    co-occurrence partner when that is absent) or, for half the one-object targets, placed "beside" such an absent
    object instead of beside one in the scene (the relation statements the base VLM makes): in-batch negatives
    differ from a scene in colours, counts and positions too, so without such negatives nothing forces the encoder
    to tell objects apart by their shape.
    """
    positives, negatives = [], []
    for scene in scenes:
        groups = list(scene.groups)
        rng.shuffle(groups)
        keep = groups if rng.random() < 0.5 else [rng.choice(groups)]
        target = rng.choice(keep)
        present = {g.cls for g in scene.groups}
        partner = world.partners.get(target.cls)
        wrong = (
            partner
            if partner and partner not in present
            else rng.choice([c for c in world.class_names if c not in present])
        )
        states = [rng.random() for _ in keep]
        if target.count == 1 and rng.random() < 0.5:
            # A relation: the target placed beside an object in the scene (or at its position when it is alone),
            # against the same sentence placing it beside an absent one, the claim a biased describer makes.
            others = sorted(present - {target.cls})
            true_beside = rng.choice(others) if others else None
            pos = {"beside": true_beside, "force_where": True}
            neg = {"beside": wrong, "force_where": True}
        else:
            pos, neg = {}, {"cls": wrong}
        positives.append(
            " ".join(
                statement(g, random.Random(s), world.classes, **(pos if g is target else {}))
                for g, s in zip(keep, states)
            )
        )
        negatives.append(
            " ".join(
                statement(g, random.Random(s), world.classes, **(neg if g is target else {}))
                for g, s in zip(keep, states)
            )
        )
    return positives, negatives


def contrastive_loss(model: CLIPModel, pixel_values: torch.Tensor, positive: dict, negative: dict) -> torch.Tensor:
    """CLIP's symmetric InfoNCE with one hard negative text per image added to the image→text side."""
    image = model.get_image_features(pixel_values=pixel_values).pooler_output
    text = model.get_text_features(**positive).pooler_output
    hard = model.get_text_features(**negative).pooler_output
    image, text, hard = (x / x.norm(dim=-1, keepdim=True) for x in (image, text, hard))
    scale = model.logit_scale.exp()
    targets = torch.arange(image.shape[0])
    image_to_text = scale * image @ torch.cat([text, hard]).T  # (B, 2B): the B positives, then the B negatives
    text_to_image = scale * text @ image.T
    return (
        torch.nn.functional.cross_entropy(image_to_text, targets)
        + torch.nn.functional.cross_entropy(text_to_image, targets)
    ) / 2


@torch.no_grad()
def retrieval_accuracy(
    model: CLIPModel, processor: CLIPProcessor, images: list[Image.Image], texts: list[str], n_candidates: int = 20
) -> float:
    """Image→text top-1 accuracy: each image against the texts of its block of `n_candidates` scenes.

    Chance is 1 / `n_candidates`. Blocks keep the number comparable across evaluation-set sizes.
    """
    model.eval()
    pixel_values = _pixel_values(processor, images)
    enc = processor.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    img = model.get_image_features(pixel_values=pixel_values).pooler_output  # (N, D)
    txt = model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).pooler_output
    img, txt = img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)
    hits, total = 0, 0
    for start in range(0, len(images) - n_candidates + 1, n_candidates):
        sims = img[start : start + n_candidates] @ txt[start : start + n_candidates].T  # (n, n)
        hits += (sims.argmax(dim=1) == torch.arange(n_candidates)).sum().item()
        total += n_candidates
    return hits / max(total, 1)


def train_clip(world: World, cfg: DemoConfig, log_every: int = 0) -> tuple[CLIPModel, CLIPProcessor, dict]:
    """Build the tiny CLIP and train it contrastively (symmetric InfoNCE plus hard negatives, `clip_texts`) with AdamW.

    Returns the model, its processor and metrics: held-out retrieval accuracy before and after training.
    """
    start, cpu = time.perf_counter(), time.process_time()
    tokenizer = world_tokenizer(world, cfg.vocab_size, add_eos=True)
    model, processor = tiny.build_clip(
        tokenizer,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        hidden_size=cfg.clip_hidden,
        num_layers=cfg.clip_layers,
        max_position_embeddings=cfg.clip_max_length,
        seed=cfg.seed,
    )
    train = world.sample_scenes(cfg.n_train_scenes, seed=1)
    pixels = _pixel_values(processor, [world.render(s) for s in train])
    eval_images, eval_texts = _eval_pairs(world, cfg)
    acc_before = retrieval_accuracy(model, processor, eval_images, eval_texts)

    rng = random.Random(f"clip/{cfg.seed}")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.clip_lr, weight_decay=0.01)
    model.train()
    for step in range(cfg.clip_steps):
        idx = rng.sample(range(len(train)), min(cfg.clip_batch, len(train)))
        positives, negatives = clip_texts(world, [train[i] for i in idx], rng)
        positive = tokenizer(positives, padding=True, truncation=True, return_tensors="pt")
        negative = tokenizer(negatives, padding=True, truncation=True, return_tensors="pt")
        for group in opt.param_groups:
            group["lr"] = _lr(step, cfg.clip_steps, cfg.clip_lr)
        loss = contrastive_loss(model, pixels[idx], positive, negative)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if log_every and step % log_every == 0:
            print(f"clip step {step} loss {loss.item():.3f}")
    model.eval()
    acc_after = retrieval_accuracy(model, processor, eval_images, eval_texts)
    metrics = {
        "retrieval_top1": acc_after,
        "retrieval_top1_untrained": acc_before,
        "retrieval_chance": 1 / 20,
        "final_loss": loss.item(),
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
    }
    return model, processor, metrics


def _eval_pairs(world: World, cfg: DemoConfig) -> tuple[list[Image.Image], list[str]]:
    rng = random.Random(f"clip-eval/{cfg.seed}")
    scenes = world.sample_scenes(cfg.n_eval_scenes, seed=2)
    return [world.render(s) for s in scenes], [world.caption(s, rng) for s in scenes]


# ---------------------------------------------------------------------------------------------- LLaVA


def prompt_messages(question: str) -> list[dict]:
    """The user turn in TRL's conversational vision format."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]


def _answer_template(processor: LlavaProcessor, question: str) -> tuple[str, str]:
    """The chat template's text after the generation prompt of `question`, around an assistant answer: (before,
    after), so that before + answer + after is the rendered conversation minus the rendered prompt."""
    messages = prompt_messages(question)
    prompt_text = processor.apply_chat_template(messages, add_generation_prompt=True)
    sentinel = "\x00"
    full_text = processor.apply_chat_template(messages + [{"role": "assistant", "content": sentinel}])
    if not full_text.startswith(prompt_text) or full_text.count(sentinel) != 1:
        raise ValueError("the chat template does not render the answer verbatim after the generation prompt")
    before, after = full_text[len(prompt_text) :].split(sentinel)
    return before, after


def _encode_sft(
    processor: LlavaProcessor, prompts: list[tuple[list[int], tuple[str, str]]], responses: list[str]
) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) of each response after its prompt (`prompts[k]`: the prompt's ids and
    `_answer_template`), the loss on the response only. Prompt and completion are tokenised separately and
    concatenated, as TRL's collators and generation do, so the boundary token after "ASSISTANT: " is the same in
    SFT, DPO and sampling. One tokenizer call per batch: the template is rendered once per question, not per row."""
    texts = [before + response + after for (_, (before, after)), response in zip(prompts, responses, strict=True)]
    completions = processor.tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [(ids + c, [-100] * len(ids) + c) for (ids, _), c in zip(prompts, completions, strict=True)]


def train_vlm(
    world: World, cfg: DemoConfig, clip: CLIPModel | None = None, log_every: int = 0
) -> tuple[LlavaForConditionalGeneration, LlavaProcessor, dict]:
    """Build the tiny LLaVA (vision tower from `clip`, frozen) and supervise it on captions of training scenes.

    Each step draws scenes, a question from `QUESTIONS` and a fresh caption; the loss is on the response only.
    """
    start, cpu = time.perf_counter(), time.process_time()
    tokenizer = world_tokenizer(world, cfg.vocab_size, add_eos=False)
    model, processor = tiny.build_llava(
        tokenizer,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        hidden_size=cfg.vlm_hidden,
        num_layers=cfg.vlm_layers,
        vision_hidden_size=cfg.clip_hidden,
        seed=cfg.seed,
    )
    if clip is not None:
        model.model.vision_tower.load_state_dict(clip.vision_model.state_dict())
    model.model.vision_tower.requires_grad_(cfg.vlm_train_vision)

    train = world.sample_scenes(cfg.n_train_scenes, seed=1)
    images = [world.render(s) for s in train]
    pixels = _pixel_values(processor, images)
    # The prompt (with its expanded image tokens) depends only on the question: encode each question once.
    prompts = {}
    for q in QUESTIONS:
        text = processor.apply_chat_template(prompt_messages(q), add_generation_prompt=True)
        prompts[q] = (list(processor(text=text, images=images[0])["input_ids"][0]), _answer_template(processor, q))

    rng = random.Random(f"vlm/{cfg.seed}")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.vlm_lr, weight_decay=0.0)
    pad = tokenizer.pad_token_id
    model.train()
    for step in range(cfg.vlm_steps):
        idx = rng.sample(range(len(train)), min(cfg.vlm_batch, len(train)))
        questions, texts = [], []
        for i in idx:
            questions.append(rng.choice(QUESTIONS))
            texts.append(cfg.captioner.describe(train[i], rng, world)[0])
        rows = _encode_sft(processor, [prompts[q] for q in questions], texts)
        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
        attention_mask = (torch.arange(width)[None, :] < torch.tensor([len(ids) for ids, _ in rows])[:, None]).long()
        for group in opt.param_groups:
            group["lr"] = _lr(step, cfg.vlm_steps, cfg.vlm_lr)
        loss = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixels[idx], labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if log_every and step % log_every == 0:
            print(f"vlm step {step} loss {loss.item():.3f}")
    model.eval()
    metrics = {
        "final_loss": loss.item(),
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
    }
    return model, processor, metrics


@torch.no_grad()
def sample_responses(
    model: LlavaForConditionalGeneration,
    processor: LlavaProcessor,
    images: list[Image.Image],
    question: str,
    n: int = 1,
    temperature: float = 1.0,
    max_new_tokens: int = 48,
    batch_size: int = 32,
    seed: int | None = 0,
) -> list[list[str]]:
    """`n` responses per image to `question` via `model.generate` (left padding, batched); greedy if temperature 0.

    Returns one list of `n` strings per image. `seed` makes sampling reproducible without touching the caller's
    global torch RNG (it is forked and restored).
    """
    tokenizer = processor.tokenizer
    old_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    text = processor.apply_chat_template(prompt_messages(question), add_generation_prompt=True)
    out: list[list[str]] = []
    try:
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            for start in range(0, len(images), batch_size):
                chunk = images[start : start + batch_size]
                inputs = processor(text=[text] * len(chunk), images=chunk, padding=True, return_tensors="pt")
                # Plain temperature sampling (no top-k/top-p truncation), as RLAIF-V samples its candidates.
                if temperature > 0:
                    kwargs = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
                else:
                    kwargs = {"do_sample": False}
                generated = model.generate(
                    **inputs,
                    max_new_tokens=max_new_tokens,
                    num_return_sequences=n,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                    **kwargs,
                )  # (len(chunk) * n, prompt + new)
                texts = tokenizer.batch_decode(generated[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
                out += [[t.strip() for t in texts[k * n : (k + 1) * n]] for k in range(len(chunk))]
    finally:
        tokenizer.padding_side = old_side
    return out


# ---------------------------------------------------------------------------------------------- build + cache


@dataclass
class DemoModels:
    """The trained demo models, their processors, where they were loaded from and what was measured when they were
    built. `source` is "shipped" (the package's copy), "cache" or "built" (trained by this call)."""

    clip: CLIPModel
    clip_processor: CLIPProcessor
    vlm: LlavaForConditionalGeneration
    vlm_processor: LlavaProcessor
    clip_path: Path
    vlm_path: Path
    metrics: dict
    source: str = "built"


def model_keys(cfg: DemoConfig, world: World) -> dict[str, str]:
    """The folder names of a configuration's CLIP and VLM (in the cache and in `SHIPPED_DIR`)."""
    return {"clip": _key("clip", cfg.clip_fields(), world), "vlm": _key("vlm", asdict(cfg), world)}


def _stored(key: str, cache: Path, shipped: bool) -> tuple[Path, str] | None:
    """Where a built model with this key is: the shipped copy first (every machine the same world), then the cache."""
    for root, source in ((SHIPPED_DIR, "shipped"), (cache, "cache")):
        if (root is not SHIPPED_DIR or shipped) and (root / key / "build.json").is_file():
            return root / key, source
    return None


def build_models(
    cfg: DemoConfig | None = None,
    world: World | None = None,
    cache_dir: str | Path | None = None,
    log_every: int = 0,
    shipped: bool = True,
) -> DemoModels:
    """The demo CLIP and LLaVA: the shipped pair when it matches `cfg` (and `shipped`), else the cached one, else
    trained here and cached. Build metrics are stored next to each model (build.json)."""
    cfg = cfg or DemoConfig.full()
    world = world or make_world(cfg.seed, image_size=cfg.image_size)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    keys = model_keys(cfg, world)
    clip, clip_processor, clip_metrics, clip_path, clip_source = _load_or_train(
        keys["clip"], cache, shipped, CLIPModel, CLIPProcessor, lambda: train_clip(world, cfg, log_every)
    )
    vlm, vlm_processor, vlm_metrics, vlm_path, vlm_source = _load_or_train(
        keys["vlm"],
        cache,
        shipped,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        lambda: train_vlm(world, cfg, clip, log_every),
    )
    clip.eval()
    vlm.eval()
    source = clip_source if clip_source == vlm_source else f"{clip_source}+{vlm_source}"
    metrics = {"clip": clip_metrics, "vlm": vlm_metrics}
    return DemoModels(clip, clip_processor, vlm, vlm_processor, clip_path, vlm_path, metrics, source)


def _load_or_train(key: str, cache: Path, shipped: bool, model_class, processor_class, train: Callable):
    """(model, processor, build metrics, folder, source) of one model: loaded where `_stored` finds it, else
    `train()`ed and saved in the cache."""
    found = _stored(key, cache, shipped)
    if found:
        path, source = found
        metrics = json.loads((path / "build.json").read_text())
        return model_class.from_pretrained(path), processor_class.from_pretrained(path), metrics, path, source
    model, processor, metrics = train()
    _save(model, processor, metrics, cache / key)
    return model, processor, metrics, cache / key, "built"


def _save(model, processor, metrics: dict, path: Path) -> None:
    """Save a built model, the machine it was built on (provenance.json) and its build.json last: a folder without
    build.json is an interrupted save, rebuilt."""
    tiny.save_pretrained(model, processor, path)
    (path / "provenance.json").write_text(json.dumps({"built_on": machine()}, indent=2))
    (path / "build.json").write_text(json.dumps(metrics, indent=2))


def cpu_name() -> str:
    """The processor's model name (/proc/cpuinfo on Linux, else what `platform` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine() -> dict[str, str]:
    """What a build ran on (CPU model, Python, torch, transformers): recorded with the shipped models."""
    import transformers

    return {
        "cpu": cpu_name(),
        "cpu_count": str(os.cpu_count()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": str(torch.get_num_threads()),
    }


def ship(cache_dir: str | Path | None = None, dest: Path = SHIPPED_DIR, cfg: DemoConfig | None = None) -> list[Path]:
    """Build (or load from the cache, never the shipped copy) the full preset's CLIP and VLM (or `cfg`'s) and make
    them the shipped pair: `dest` then holds exactly these two folders (each with the provenance.json of its build)."""
    models = build_models(cfg or DemoConfig.full(), cache_dir=cache_dir, shipped=False)
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.iterdir():
        if old.is_dir() and old.name.startswith(("clip-", "vlm-")):
            shutil.rmtree(old)
    copied = []
    for path in (models.clip_path, models.vlm_path):
        target = dest / path.name
        shutil.copytree(path, target)
        copied.append(target)
    return copied


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m dama.demo.models", description="Refresh the demo's shipped world models (maintainers)."
    )
    parser.add_argument("--ship", action="store_true", required=True, help=f"build the full preset into {SHIPPED_DIR}")
    parser.add_argument("--cache-dir", default=None, help="reuse (or fill) this build cache")
    args = parser.parse_args(argv)
    for path in ship(args.cache_dir):
        size = sum(f.stat().st_size for f in path.iterdir())
        print(f"shipped {path} ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
