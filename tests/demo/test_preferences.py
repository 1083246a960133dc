"""Hallucination counting and preference-pair construction."""

import random

import pytest
import torch

from dama.demo.models import DemoConfig, prompt_messages, world_tokenizer
from dama.demo.preferences import (
    atomic_statements,
    build_preferences,
    count_hallucinations,
    evaluation_set,
    hallucination_rates,
    length_balance,
    object_mentions,
    pairs_from_samples,
    statements,
    style_difference,
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


def test_pairs_need_different_hallucination_counts_and_prefer_equal_lengths():
    gt = {"cup", "plate"}
    responses = [
        "A cup and a plate.",  # 0 hallucinated, 5 words
        "A cup.",  # 0 hallucinated, 2 words: same label as the first -> never paired with it
        "A cup and a cat.",  # 1 hallucinated, 5 words
        "A fish.",  # 1 hallucinated, 2 words
        "A cup and a plate.",  # duplicate text, dropped
    ]
    pairs = pairs_from_samples(responses, gt, LINES, max_pairs=100, rng=random.Random(0), same_mentions=False)
    # Valid pairs: a 0-hallucination answer against a 1-hallucination answer naming no more real objects:
    # "A cup and a plate." (2 real) beats both; "A cup." (1 real) beats "A cup and a cat." (1 real) and "A fish." (0).
    assert {(c, r) for c, r, _, _ in pairs} == {
        ("A cup and a plate.", "A cup and a cat."),
        ("A cup and a plate.", "A fish."),
        ("A cup.", "A cup and a cat."),
        ("A cup.", "A fish."),
    }
    assert all((hc, hr) == (0, 1) for _, _, hc, hr in pairs)
    # With room for two, the closest to minimal pairs are kept: with object names masked, "a <object> and a
    # <object>" twice and "a <object>" twice share every word (0 unshared), while "A cup and a plate." vs "A fish."
    # and "A cup." vs "A cup and a cat." leave "and", "a", "<object>" unshared (3 words each).
    two = pairs_from_samples(responses, gt, LINES, max_pairs=2, rng=random.Random(0), same_mentions=False)
    assert {(c, r) for c, r, _, _ in two} == {("A cup and a plate.", "A cup and a cat."), ("A cup.", "A fish.")}
    # By default both answers must name as many objects: 2 vs 2 and 1 vs 1.
    default = pairs_from_samples(responses, gt, LINES, max_pairs=100, rng=random.Random(0))
    assert {(c, r) for c, r, _, _ in default} == {("A cup and a plate.", "A cup and a cat."), ("A cup.", "A fish.")}
    # A wrong answer that names more real objects never loses to one that names fewer (0 vs 1 hallucination here).
    assert (
        pairs_from_samples(
            ["A cup.", "A cup, a plate and a cat."], gt, LINES, max_pairs=10, rng=random.Random(0), same_mentions=False
        )
        == []
    )


def test_pairs_prefer_equal_length_to_equal_style():
    gt = {"cup"}
    responses = [
        "There is a cup on the left.",  # 0 hallucinated, 7 words
        "There is a cup.",  # 0 hallucinated, 4 words
        "There is a cup beside a plate.",  # 1 hallucinated (plate), 7 words
    ]
    # Both correct answers name the one real object the wrong one names, so both pairs are valid (same_mentions off:
    # the wrong answer names two objects). Against the wrong answer, masked: "on the left" vs "beside a <object>"
    # leaves 6 words unshared at length difference 0; "There is a cup." leaves {beside, a, <object>} = 3 unshared at
    # length difference 3. Length comes first, so the one pair kept is the equal-length one: the false claim in
    # place of a true phrase, not added to a shorter answer (a lesson in saying less).
    pairs = pairs_from_samples(responses, gt, LINES, max_pairs=1, rng=random.Random(0), same_mentions=False)
    assert pairs == [("There is a cup on the left.", "There is a cup beside a plate.", 0, 1)]
    both = pairs_from_samples(responses, gt, LINES, max_pairs=2, rng=random.Random(0), same_mentions=False)
    assert [c for c, _, _, _ in both] == ["There is a cup on the left.", "There is a cup."]


def test_same_statements_drops_pairs_that_teach_saying_fewer_sentences():
    gt = {"cup"}
    responses = [
        "There is a cup.",  # 0 hallucinated, 1 sentence
        "There is a cup. There is a plate.",  # 1 hallucinated (plate), 2 sentences
        "There is a cup beside a plate.",  # 1 hallucinated (plate), 1 sentence
    ]
    loose = pairs_from_samples(responses, gt, LINES, max_pairs=10, rng=random.Random(0), same_mentions=False)
    assert {(c, r) for c, r, _, _ in loose} == {
        ("There is a cup.", "There is a cup. There is a plate."),
        ("There is a cup.", "There is a cup beside a plate."),
    }
    # With `same_statements` only the one-sentence rejected answer is left: the two-sentence one would teach "stop
    # after one sentence", which the model would apply to images with two objects too.
    strict = pairs_from_samples(
        responses, gt, LINES, max_pairs=10, rng=random.Random(0), same_mentions=False, same_statements=True
    )
    assert strict == [("There is a cup.", "There is a cup beside a plate.", 0, 1)]
    assert statements("A cup!  Two plates? A fish.") == ["A cup!", "Two plates?", "A fish."]
    assert statements("  ") == []


def test_style_difference_masks_object_names():
    nouns = {"cup", "plate", "cat", "cats", "fish"}
    # Only the objects differ (and the order of statements): no style difference.
    assert style_difference("A red cup. Two cats.", "Two fish. A red plate!", nouns) == 0
    # "There is a red cup." vs "I can see a red cup.": {there, is} vs {i, can, see} -> 5 words unshared.
    assert style_difference("There is a red cup.", "I can see a red cup.", nouns) == 5
    # Counts matter: "a" twice against once -> 1.
    assert style_difference("A cup and a cat.", "A cup and cat.", nouns) == 1


def test_pairs_two_hallucinations_apart_are_not_ranked_below_one_apart():
    gt = {"cup", "plate"}
    responses = [
        "There is a cup. There is a plate.",  # 0 hallucinated
        "There is a cat. There is a fish.",  # 2 hallucinated, same style as the first
        "I can see a cup. I can see a fish.",  # 1 hallucinated, another template
    ]
    # Masked, the first two are identical (style difference 0); "I can see" against "There is" twice leaves 10 words
    # unshared ({there, is} x2 vs {i, can, see} x2). The one pair kept is the 2-hallucination pair.
    pairs = pairs_from_samples(responses, gt, LINES, max_pairs=1, rng=random.Random(0))
    assert pairs == [("There is a cup. There is a plate.", "There is a cat. There is a fish.", 0, 2)]


def test_length_balance():
    def row(chosen, rejected, hc, hr):
        return {
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "n_hall_chosen": hc,
            "n_hall_rejected": hr,
        }

    rows = [row("a b c", "a b", 0, 1), row("a b", "a b c d", 0, 2), row("a b c d", "a b c d", 0, 3)]
    stats = length_balance(rows)
    # chosen words 3, 2, 4 -> mean 3; rejected 2, 4, 4 -> mean 10/3; relative difference (3 - 10/3) / (19/6).
    assert stats["chosen_words"] == pytest.approx(3.0)
    assert stats["rejected_words"] == pytest.approx(10 / 3)
    assert stats["relative_length_difference"] == pytest.approx((3 - 10 / 3) / (19 / 6))
    # gaps (1, 2, 3), deviations (-1, 0, 1); length differences (1, -2, 0), deviations (4/3, -5/3, 1/3):
    # r = (-4/3 + 1/3) / sqrt(2 * 42/9) = -1 / sqrt(28/3) = -0.327.
    assert stats["corr_gap_length_difference"] == pytest.approx(-1 / (28 / 3) ** 0.5)


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
    stub = StubVLM(
        tokenizer,
        [
            "A cup and a plate.",
            "A red cat.",
            "Two trees and a house.",
            "A star and a moon.",
            "A car.",
            "A fish, a ball and an umbrella.",
        ],
    )
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
        # what `dama hardness --splitter column` scores (its default column names)
        assert r["chosen_subsentences"] == atomic_statements(chosen)
        assert r["rejected_subsentences"] == atomic_statements(rejected)
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


def test_atomic_statements_split_every_sentence_of_an_answer():
    text = "There is a red cup beside a plate. I can see two large stars. A cup and a plate."
    assert atomic_statements(text) == [
        "There is a cup.",
        "The cup is red.",
        "The cup is beside a plate.",
        "There are two stars.",
        "The stars are large.",
        "A cup and a plate.",  # outside the world's grammar: kept whole
    ]
    assert atomic_statements("") == []
