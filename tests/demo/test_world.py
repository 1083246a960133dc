"""The synthetic world: determinism, rendering, captions, synonyms, co-occurrence."""

import random
from collections import Counter

import numpy as np
import pytest

from dama.demo.preferences import object_mentions
from dama.demo.world import (
    CLASSES,
    COLOURS,
    Captioner,
    ObjectGroup,
    Scene,
    atomic_claims,
    gt_classes,
    make_world,
    plural,
    render,
    statement,
)


def test_same_seed_same_world_and_different_seed_differs():
    a, b, c = make_world(0), make_world(0), make_world(1)
    scenes_a, scenes_b, scenes_c = a.sample_scenes(30, seed=5), b.sample_scenes(30, seed=5), c.sample_scenes(30, 5)
    assert scenes_a == scenes_b
    assert scenes_a != scenes_c
    assert all(a.render(x).tobytes() == b.render(y).tobytes() for x, y in zip(scenes_a, scenes_b))
    caps_a = [a.caption(s, random.Random(7)) for s in scenes_a]
    caps_b = [b.caption(s, random.Random(7)) for s in scenes_b]
    assert caps_a == caps_b


def test_splits_with_different_seeds_are_different():
    world = make_world(0)
    assert world.sample_scenes(20, seed=1) != world.sample_scenes(20, seed=2)


def _single(cls: str, colour: str = "white", size: str = "large") -> Scene:
    return Scene((ObjectGroup(cls, colour, size, 1, ((1, 1),)),), background=40, noise_seed=0)


def test_every_class_renders_and_the_glyphs_differ():
    world = make_world(0)
    assert len(CLASSES) >= 8
    arrays = {}
    for cls in CLASSES:
        image = world.render(_single(cls))
        assert image.size == (world.image_size, world.image_size) and image.mode == "RGB"
        arrays[cls] = np.asarray(image, dtype=np.int16)
        background = np.asarray(world.render(Scene((), 40, 0)), dtype=np.int16)
        assert (np.abs(arrays[cls] - background).max(axis=-1) > 100).sum() >= 20, f"{cls} draws almost nothing"
    names = list(arrays)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            changed = (np.abs(arrays[a] - arrays[b]).max(axis=-1) > 100).sum()
            assert changed >= 15, f"{a} and {b} look alike ({changed} pixels differ)"


def test_colour_size_and_position_change_the_image():
    base = np.asarray(render(_single("cup")), dtype=np.int16)
    for other in (
        _single("cup", colour="red"),
        _single("cup", size="small"),
        Scene((ObjectGroup("cup", "white", "large", 1, ((0, 0),)),), 40, 0),
    ):
        assert np.abs(base - np.asarray(render(other), dtype=np.int16)).max() > 100


def test_captions_mention_exactly_the_ground_truth_objects():
    world = make_world(0)
    rng = random.Random(0)
    lines = world.synonym_lines()
    for scene in world.sample_scenes(300, seed=9):
        text = world.caption(scene, rng)
        mentions = object_mentions(text, lines)
        assert set(mentions) == gt_classes(scene), text
        for group in scene.groups:
            if group.count > 1:
                assert {1: "a", 2: "two", 3: "three"}[group.count] in text.lower().split()


def test_captions_vary():
    world = make_world(0)
    rng = random.Random(0)
    scene = world.sample_scenes(1, seed=9)[0]
    assert len({world.caption(scene, rng) for _ in range(30)}) >= 5


def test_synonym_lines_parse_and_do_not_overlap():
    lines = make_world(0).synonym_lines()
    assert len(lines) == len(CLASSES)
    seen = {}
    for line in lines:
        names = [n.strip() for n in line.split(",")]
        assert names[0] in CLASSES and all(n and n == n.lower() for n in names)
        for n in names:
            assert n not in seen, f"{n} in two lines"
            seen[n] = names[0]
    # no synonym collides with the caption vocabulary (colours, sizes, template words)
    assert not set(seen) & (set(COLOURS) | {"small", "large", "image", "picture", "background", "left", "right"})


@pytest.mark.parametrize(
    "noun, expected",
    [("cup", "cups"), ("kitty", "kitties"), ("fish", "fish"), ("dish", "dishes"), ("house", "houses")],
)
def test_plural(noun, expected):
    assert plural(noun) == expected


def test_co_occurrence_partners_usually_appear_together():
    world = make_world(0)
    scenes = world.sample_scenes(3000, seed=11)
    with_cup = [gt_classes(s) for s in scenes if "cup" in gt_classes(s) and len(s.groups) > 1]
    without_cup = [gt_classes(s) for s in scenes if "cup" not in gt_classes(s)]
    p_plate_given_cup = sum("plate" in g for g in with_cup) / len(with_cup)
    p_plate_otherwise = sum("plate" in g for g in without_cup) / len(without_cup)
    assert p_plate_given_cup > 0.6 and p_plate_otherwise < 0.3
    # ...and partners are a real minority of the world, so the prior is wrong some of the time
    assert 0 < sum(("cup" in g) and ("plate" not in g) for g in map(gt_classes, scenes))
    pairs = Counter(tuple(sorted(gt_classes(s))) for s in scenes if len(s.groups) == 2)
    assert pairs.most_common(1)[0][0] in {("cup", "plate"), ("house", "tree"), ("cat", "fish"), ("moon", "star")}


def test_world_without_co_occurrence():
    scenes = make_world(0, p_partner=0.0).sample_scenes(3000, seed=11)
    with_cup = [gt_classes(s) for s in scenes if "cup" in gt_classes(s) and len(s.groups) > 1]
    assert sum("plate" in g for g in with_cup) / len(with_cup) < 0.4


def test_an_unbiased_captioner_is_exact_and_a_biased_one_names_absent_partners():
    world = make_world(0)
    lines = world.synonym_lines()
    scenes = world.sample_scenes(400, seed=9)
    rng = random.Random(0)
    for scene in scenes:
        text, wrong = Captioner().describe(scene, rng, world)
        assert wrong == 0 and set(object_mentions(text, lines)) == gt_classes(scene), text
    biased = Captioner(p_small=1.0, p_large=1.0, p_add=1.0)
    n_wrong = 0
    for scene in scenes:
        text, wrong = biased.describe(scene, rng, world)
        gt = gt_classes(scene)
        mentions = object_mentions(text, lines)
        # Every wrong name is the absent partner of an object in the scene, and the count is what CHAIR counts.
        assert wrong == sum(m not in gt for m in mentions), text
        assert all(world.partners.get(m) in gt for m in mentions if m not in gt), text
        assert len(mentions) == len(scene.groups) + (len(scene.groups) == 1 and wrong == 1), text
        n_wrong += wrong
    assert n_wrong > 50  # with every probability at 1, most scenes with an absent partner get one


def test_statement_with_another_class_changes_only_the_noun():
    world = make_world(0)
    group = ObjectGroup("cup", "red", "small", 1, ((0, 0),))
    for seed in range(50):
        right = statement(group, random.Random(seed), world.classes)
        wrong = statement(group, random.Random(seed), world.classes, cls="fish")
        assert object_mentions(right, world.synonym_lines()) == ["cup"]
        assert object_mentions(wrong, world.synonym_lines()) == ["fish"]
        strip = {n for names in world.classes.values() for n in names}
        assert [w for w in right.split() if w.strip(".") not in strip] == [
            w for w in wrong.split() if w.strip(".") not in strip
        ]


def test_a_beside_phrase_takes_the_place_of_the_position_at_the_same_length():
    world = make_world(0)
    lines = world.synonym_lines()
    group = ObjectGroup("cup", "red", "small", 1, ((1, 0),))
    for seed in range(40):
        plain = statement(group, random.Random(seed), world.classes, force_where=True)
        beside = statement(group, random.Random(seed), world.classes, beside="plate", force_where=True)
        # "... cup on the left." vs "... cup beside a plate." (or "dish", "saucer"): three words either way.
        assert "on the left" in plain and " beside a " in beside, (plain, beside)
        assert len(plain.split()) == len(beside.split())
        assert object_mentions(plain, lines) == ["cup"] and object_mentions(beside, lines) == ["cup", "plate"]
    # "an" before a vowel ("an umbrella", "a parasol"); without `force_where` the phrase comes with the position's
    # probability (1/2).
    umbrellas = [
        statement(group, random.Random(s), world.classes, beside="umbrella", force_where=True) for s in range(40)
    ]
    assert {t.split(" beside ")[1] for t in umbrellas} == {"an umbrella.", "a parasol."}
    drawn = [statement(group, random.Random(s), world.classes, beside="plate") for s in range(400)]
    assert 0.4 < sum(" beside " in t for t in drawn) / 400 < 0.6


def test_a_beside_prior_ignores_the_image_and_counts_its_false_claims():
    world = make_world(0)
    lines = world.synonym_lines()
    rng = random.Random(1)
    beside_true = beside_false = 0
    for scene in world.sample_scenes(600, seed=9):
        text, wrong = Captioner(p_beside=1.0).describe(scene, rng, world)
        gt = gt_classes(scene)
        mentions = object_mentions(text, lines)
        assert wrong == sum(m not in gt for m in mentions), text
        assert all(world.partners.get(m) in gt for m in mentions if m not in gt), text
        for sentence in text.split(". "):
            if " beside " in sentence:
                named = object_mentions(sentence, lines)
                assert world.partners[named[0]] == named[1], sentence  # only ever the partner
                beside_true += named[1] in gt
                beside_false += named[1] not in gt
    # The prior speaks whether or not the partner is there: the image alone tells a true claim from a false one.
    assert beside_true > 20 and beside_false > 20


def test_exact_captions_place_objects_beside_present_partners_only():
    world = make_world(0)
    lines = world.synonym_lines()
    rng = random.Random(2)
    n_beside = 0
    for scene in world.sample_scenes(400, seed=9):
        text = world.caption(scene, rng)
        assert set(object_mentions(text, lines)) == gt_classes(scene), text
        n_beside += " beside " in text
    assert n_beside > 10


@pytest.mark.parametrize(
    "sentence, expected",
    [
        # Worked by hand from the grammar of `statement` (template, count, [size], [colour], noun, [place]):
        # existence with the count, each attribute, then the place or the relation.
        (
            "There is a small red cup beside a plate.",
            ["There is a cup.", "The cup is small.", "The cup is red.", "The cup is beside a plate."],
        ),
        ("Two orange balls.", ["There are two balls.", "The balls are orange."]),
        ("I can see an umbrella on the left.", ["There is an umbrella.", "The umbrella is on the left."]),
        (
            "The image shows three large white kitties.",
            ["There are three kitties.", "The kitties are large.", "The kitties are white."],
        ),
        (
            "An orange automobile beside a pine.",
            ["There is an automobile.", "The automobile is orange.", "The automobile is beside a pine."],
        ),
        (
            "There is a blue fish beside an umbrella.",
            ["There is a fish.", "The fish is blue.", "The fish is beside an umbrella."],
        ),
        # the article agrees with the noun, not with the dropped attribute it stood before
        ("An orange cup.", ["There is a cup.", "The cup is orange."]),
        (
            "There is a small umbrella on the left.",
            ["There is an umbrella.", "The umbrella is small.", "The umbrella is on the left."],
        ),
    ],
)
def test_atomic_claims_split_a_statement_into_its_claims(sentence, expected):
    assert atomic_claims(sentence) == expected


@pytest.mark.parametrize("sentence", ["The image shows a a cup.", "A cup and a plate.", "There is a red cup beside."])
def test_atomic_claims_keep_a_sentence_outside_the_grammar_whole(sentence):
    assert atomic_claims(sentence) == [sentence]
    assert atomic_claims("  ") == []


def test_atomic_claims_read_every_statement_the_world_writes():
    # Every generated statement parses (no sentence comes back whole), with one claim for the object, one per
    # attribute word in the text, and one for its place phrase or relation when it has one.
    world = make_world(0)
    places = ("on the left", "on the right", "at the top", "at the bottom", "in the middle", " beside ")
    for k, scene in enumerate(world.sample_scenes(200, seed=9)):
        for g in scene.groups:
            beside = world.partners.get(g.cls) if g.count == 1 and k % 2 else None
            text = statement(g, random.Random(k), world.classes, beside=beside, force_where=beside is not None)
            claims = atomic_claims(text)
            words = f" {text.lower().rstrip('.')} "
            noun = claims[0].split()[3].rstrip(".")
            article = ("an" if noun[0] in "aeiou" else "a") if g.count == 1 else {2: "two", 3: "three"}[g.count]
            assert claims[0] == f"There {'is' if g.count == 1 else 'are'} {article} {noun}.", (text, claims)
            assert noun in world.classes[g.cls] or noun in {plural(n) for n in world.classes[g.cls]}
            expected = 1 + (f" {g.colour} " in words) + (f" {g.size} " in words) + any(p in words for p in places)
            assert len(claims) == expected, (text, claims)
            assert any(c.endswith(f" {g.colour}.") for c in claims) == (f" {g.colour} " in words)
            assert any(c.endswith(f" {g.size}.") for c in claims) == (f" {g.size} " in words)
            assert any(" beside " in c for c in claims) == (" beside " in words)
