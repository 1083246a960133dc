"""Demo models: SFT encoding, CLIP training, sampling and the on-disk cache (tiny sizes, seconds)."""

import json
import math
import random
from dataclasses import replace

import pytest
import torch
from transformers import CLIPModel, LlavaForConditionalGeneration

import dama.demo.models as models_module
from dama.demo.models import (
    SHIPPED_DIR,
    DemoConfig,
    _answer_template,
    _encode_sft,
    build_models,
    clip_texts,
    model_keys,
    prompt_messages,
    sample_responses,
    ship,
    train_clip,
    world_tokenizer,
)
from dama.demo.preferences import object_mentions
from dama.demo.world import QUESTIONS, gt_classes, make_world
from dama.tiny import build_llava


@pytest.fixture(scope="module")
def world():
    return make_world(0, image_size=DemoConfig.tiny().image_size)


def test_presets_fit_their_budgets_on_paper():
    quick, full = DemoConfig.quick(), DemoConfig.full()
    assert quick.clip_steps * quick.clip_batch < full.clip_steps * full.clip_batch
    assert quick.vlm_steps * quick.vlm_batch < full.vlm_steps * full.vlm_batch
    assert full.image_size % full.patch_size == 0 and DemoConfig.tiny().image_size % DemoConfig.tiny().patch_size == 0


def test_sft_labels_cover_the_response_only(world):
    cfg = DemoConfig.tiny()
    tokenizer = world_tokenizer(world, cfg.vocab_size, add_eos=False)
    _, processor = build_llava(tokenizer, image_size=cfg.image_size, patch_size=cfg.patch_size)
    image = world.render(world.sample_scenes(1, 1)[0])
    rng = random.Random(0)
    responses = ["A red cup."] + [world.caption(s, rng) for s in world.sample_scenes(30, seed=1)]
    prompts, expected = [], []
    for k, response in enumerate(responses):
        question = QUESTIONS[k % len(QUESTIONS)]
        messages = prompt_messages(question)
        text = processor.apply_chat_template(messages, add_generation_prompt=True)
        prompt_ids = processor(text=text, images=image)["input_ids"][0]
        prompts.append((prompt_ids, _answer_template(processor, question)))
        # The definition, row by row: the rendered conversation minus the rendered prompt, tokenised on its own.
        full = processor.apply_chat_template(messages + [{"role": "assistant", "content": response}])
        completion = tokenizer(full[len(text) :], add_special_tokens=False)["input_ids"]
        expected.append((prompt_ids + completion, [-100] * len(prompt_ids) + completion))
    rows = _encode_sft(processor, prompts, responses)
    assert rows == expected
    ids, labels = rows[0]
    prompt_ids = prompts[0][0]
    assert len(ids) == len(labels) and ids[: len(prompt_ids)] == prompt_ids
    assert labels[: len(prompt_ids)] == [-100] * len(prompt_ids)
    response = [t for t in labels if t != -100]
    assert tokenizer.decode(response).startswith("A red cup.</s>")
    assert tokenizer.eos_token_id in response


def test_clip_hard_negatives_make_exactly_one_false_claim(world):
    lines = world.synonym_lines()
    scenes = world.sample_scenes(300, seed=1)
    positives, negatives = clip_texts(world, scenes, random.Random(0))
    relations = 0
    for scene, pos, neg in zip(scenes, positives, negatives):
        gt = gt_classes(scene)
        pos_mentions, neg_mentions = object_mentions(pos, lines), object_mentions(neg, lines)
        assert set(pos_mentions) <= gt, pos  # the positive is true
        assert sum(m not in gt for m in neg_mentions) == 1, neg  # the negative makes one false claim
        assert len(pos.split()) == len(neg.split()), (pos, neg)  # in a sentence of the same length
        relations += " beside " in neg
    assert relations > 30  # some negatives are relation claims ("beside a plate" when there is no plate)


def test_clip_training_beats_the_untrained_model(world):
    cfg = DemoConfig.tiny(clip_steps=100, n_train_scenes=200, n_eval_scenes=60)
    model, processor, metrics = train_clip(world, cfg)
    assert metrics["retrieval_chance"] == pytest.approx(0.05)
    assert metrics["retrieval_top1"] > metrics["retrieval_top1_untrained"] + 0.1, metrics
    assert metrics["retrieval_top1"] > 2 * metrics["retrieval_chance"], metrics


def test_build_models_caches_and_samples(world, tmp_path):
    cfg = DemoConfig.tiny(clip_steps=5, vlm_steps=5)  # untrained is fine: this tests plumbing
    first = build_models(cfg, world, cache_dir=tmp_path)
    assert (first.clip_path / "build.json").exists() and (first.vlm_path / "build.json").exists()
    # the frozen vision tower is CLIP's
    clip_patch = first.clip.vision_model.embeddings.patch_embedding.weight
    assert torch.equal(first.vlm.model.vision_tower.embeddings.patch_embedding.weight, clip_patch)
    second = build_models(cfg, world, cache_dir=tmp_path)
    assert second.metrics == first.metrics
    for a, b in zip(first.vlm.state_dict().values(), second.vlm.state_dict().values()):
        assert torch.equal(a, b)
    changed = build_models(replace(cfg, vlm_steps=cfg.vlm_steps + 1), world, cache_dir=tmp_path)
    assert changed.vlm_path != first.vlm_path and changed.clip_path == first.clip_path

    images = [world.render(s) for s in world.sample_scenes(3, seed=7)]
    sampling = dict(n=2, temperature=1.0, max_new_tokens=8, batch_size=2, seed=1)
    sampled = sample_responses(second.vlm, second.vlm_processor, images, "Describe the image.", **sampling)
    assert len(sampled) == 3 and all(len(r) == 2 and all(isinstance(t, str) for t in r) for r in sampled)
    assert sampled == sample_responses(second.vlm, second.vlm_processor, images, "Describe the image.", **sampling)
    greedy = sample_responses(
        second.vlm, second.vlm_processor, images, "Describe the image.", n=1, temperature=0.0, max_new_tokens=8
    )
    assert greedy == sample_responses(
        second.vlm,
        second.vlm_processor,
        images,
        "Describe the image.",
        n=1,
        temperature=0.0,
        max_new_tokens=8,
        batch_size=1,
    )
    state = random.getstate(), torch.random.get_rng_state()
    sample_responses(second.vlm, second.vlm_processor, images[:1], "Describe the image.", n=1, max_new_tokens=4)
    assert torch.equal(torch.random.get_rng_state(), state[1])


def test_shipped_models_are_the_full_presets_pair():
    """The shipped folders are named by the keys the full preset and world 0 give today (so the default demo loads
    them, and a change to what the config builds without a new `--ship` fails here), and they are a real build: the
    VLM's frozen vision tower is the CLIP's, and the CLIP retrieves far better than untrained."""
    cfg = DemoConfig.full()
    keys = model_keys(cfg, make_world(cfg.seed, image_size=cfg.image_size))
    folders = sorted(p.name for p in SHIPPED_DIR.iterdir() if p.is_dir() and not p.name.startswith("__"))
    assert folders == sorted(keys.values()), "refresh the shipped pair: python -m dama.demo.models --ship"
    clip = CLIPModel.from_pretrained(SHIPPED_DIR / keys["clip"])
    vlm = LlavaForConditionalGeneration.from_pretrained(SHIPPED_DIR / keys["vlm"])
    patch = clip.vision_model.embeddings.patch_embedding.weight
    assert torch.equal(vlm.model.vision_tower.embeddings.patch_embedding.weight, patch)
    for key in keys.values():
        folder = SHIPPED_DIR / key
        assert (folder / "build.json").is_file() and (folder / "provenance.json").is_file()
        assert json.loads((folder / "provenance.json").read_text())["built_on"]["cpu"]
        assert sum(f.stat().st_size for f in folder.iterdir()) < 5e6
    for kind in ("clip", "vlm"):
        assert math.isfinite(json.loads((SHIPPED_DIR / keys[kind] / "build.json").read_text())["final_loss"])
    clip_metrics = json.loads((SHIPPED_DIR / keys["clip"] / "build.json").read_text())
    assert clip_metrics["retrieval_top1"] > clip_metrics["retrieval_top1_untrained"] + 0.1


def test_build_models_prefers_the_shipped_pair(world, tmp_path, monkeypatch):
    cfg = DemoConfig.tiny(clip_steps=3, vlm_steps=3)
    shipped = tmp_path / "shipped"
    copied = ship(tmp_path / "cache-a", dest=shipped, cfg=cfg)
    assert sorted(p.name for p in copied) == sorted(model_keys(cfg, world).values())
    assert sorted(p.name for p in shipped.iterdir()) == sorted(p.name for p in copied)
    monkeypatch.setattr(models_module, "SHIPPED_DIR", shipped)
    loaded = build_models(cfg, world, cache_dir=tmp_path / "cache-b")
    assert loaded.source == "shipped" and loaded.vlm_path.parent == shipped
    assert not (tmp_path / "cache-b").exists()  # nothing trained
    local = build_models(cfg, world, cache_dir=tmp_path / "cache-b", shipped=False)
    assert local.source == "built" and local.vlm_path.parent == tmp_path / "cache-b"
    assert build_models(cfg, world, cache_dir=tmp_path / "cache-b", shipped=False).source == "cache"
    # shipping again replaces the folders instead of adding to them
    (shipped / "vlm-000000000000").mkdir()
    ship(tmp_path / "cache-a", dest=shipped, cfg=cfg)
    assert sorted(p.name for p in shipped.iterdir()) == sorted(p.name for p in copied)
