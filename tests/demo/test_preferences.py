"""Hallucination counting and preference-pair construction."""

import random

import pytest
import torch

from dama.demo.models import DemoConfig, prompt_messages, world_tokenizer
from dama.demo.preferences import (
    build_preferences,
    count_hallucinations,
    evaluation_set,
    hallucination_rates,
    object_mentions,
    pairs_from_samples,
)
from dama.demo.world import make_world
from dama.tiny import build_llava

LINES = make_world(0).synonym_lines()


@pytest.mark.parametrize(
    "text, gt, expected",
    [
        ("A red cup and a blue plate.", {"cup", "plate"}, (0, 2)),
        ("A red cup and a blue plate.", {"cup"}, (1, 2)),
        ("Two mugs, three dishes and a kitten.", {"cup"}, (2, 3)),  # synonyms and plurals
        ("Two kitties and two goldfish. The kitty is on the left.", {"cat"}, (1, 3)),  # mentions are not de-duplicated
        ("The image shows a large white background.", {"cup"}, (0, 0)),
        ("Cups, CUPS and cottages!", {"house"}, (2, 3)),
        ("", {"cup"}, (0, 0)),
    ],
)
def test_count_hallucinations(text, gt, expected):
    assert count_hallucinations(text, gt, LINES) == expected


def test_two_word_synonyms_match_first():
    lines = ["cup, coffee cup", "tree"]
    assert object_mentions("Two coffee cups and a tree.", lines) == ["cup", "tree"]


def test_hallucination_rates():
    rates = hallucination_rates(["A cup and a plate.", "A cat.", "Nothing here."], [{"cup"}, {"cat"}, {"car"}], LINES)
    assert rates["chair_i"] == pytest.approx(1 / 3)
    assert rates["chair_s"] == pytest.approx(1 / 3)
    assert rates["recall"] == pytest.approx(2 / 3)


def test_pairs_prefer_fewer_hallucinations_then_more_correct_mentions_and_drop_ties():
    gt = {"cup", "plate"}
    responses = [
        "A cup and a plate.",  # 0 hallucinated, 2 correct
        "A cup.",  # 0 hallucinated, 1 correct
        "A mug.",  # tie with "A cup." -> never paired together
        "A cup and a cat.",  # 1 hallucinated
        "A cup and a plate.",  # duplicate text
    ]
    pairs = pairs_from_samples(responses, gt, LINES, max_pairs=100, rng=random.Random(0))
    as_set = {(c, r) for c, r, _, _ in pairs}
    assert ("A cup and a plate.", "A cup.") in as_set
    assert ("A cup.", "A cup and a cat.") in as_set
    assert ("A cup.", "A mug.") not in as_set and ("A mug.", "A cup.") not in as_set
    assert all(c != r for c, r in as_set)
    assert len(pairs) == 5  # 4 distinct texts: 6 pairs minus the one tie
    for chosen, rejected, hc, hr in pairs:
        assert hc <= hr
        assert (hc, hr) == (count_hallucinations(chosen, gt, LINES)[0], count_hallucinations(rejected, gt, LINES)[0])
    assert len(pairs_from_samples(responses, gt, LINES, max_pairs=2, rng=random.Random(0))) == 2


class StubVLM:
    """Stands in for a VLM: `generate` appends a canned response (drawn at random) to each prompt."""

    def __init__(self, tokenizer, responses):
        self.tokenizer, self.responses = tokenizer, responses

    def generate(self, input_ids, num_return_sequences=1, **kwargs):
        rows = []
        for row in input_ids.repeat_interleave(num_return_sequences, dim=0):
            text = self.responses[torch.randint(len(self.responses), ()).item()]
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
            rows.append(row.tolist() + ids)
        width = max(map(len, rows))
        return torch.tensor([r + [self.tokenizer.pad_token_id] * (width - len(r)) for r in rows])


def test_build_preferences_with_a_stub_model():
    cfg = DemoConfig.tiny()
    world = make_world(0, image_size=cfg.image_size)
    tokenizer = world_tokenizer(world, cfg.vocab_size, add_eos=False)
    _, processor = build_llava(tokenizer, image_size=cfg.image_size, patch_size=cfg.patch_size)
    stub = StubVLM(tokenizer, ["A cup and a plate.", "A red cat.", "Two trees and a house.", "A star and a moon.",
                               "A car.", "A fish, a ball and an umbrella."])
    rows = build_preferences(stub, processor, world, n_images=12, n_samples=4, max_pairs_per_image=2, seed=4)
    assert rows, "no pairs"
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids)
    for r in rows:
        assert r["prompt"][0]["role"] == "user" and r["prompt"][0]["content"][0] == {"type": "image"}
        assert r["prompt"] == prompt_messages(r["prompt"][0]["content"][1]["text"])
        assert r["chosen"][0]["role"] == r["rejected"][0]["role"] == "assistant"
        chosen, rejected = r["chosen"][0]["content"], r["rejected"][0]["content"]
        assert chosen != rejected
        gt = set(r["gt_classes"])
        assert r["n_hall_chosen"] == count_hallucinations(chosen, gt, LINES)[0]
        assert r["n_hall_rejected"] == count_hallucinations(rejected, gt, LINES)[0]
        assert r["n_hall_chosen"] <= r["n_hall_rejected"]
        assert r["image"].size == (cfg.image_size, cfg.image_size)
    dataset = build_preferences(stub, processor, world, n_images=12, n_samples=4, seed=4, as_dataset=True)
    assert {"image", "prompt", "chosen", "rejected", "id", "n_hall_chosen", "n_hall_rejected"} <= set(dataset.features)
    assert dataset[0]["chosen"][0]["role"] == "assistant"


def test_evaluation_set_is_held_out_and_deterministic():
    world = make_world(0)
    a, b = evaluation_set(world, 10), evaluation_set(world, 10)
    assert [x["scene"] for x in a] == [x["scene"] for x in b]
    assert [x["scene"] for x in a] != world.sample_scenes(10, seed=1)
    assert all(x["gt_classes"] for x in a)
