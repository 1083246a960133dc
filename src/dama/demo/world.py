"""A small synthetic visual world: scenes of coloured glyph objects, their pictures, captions and ground truth.

The world stands in for COCO in the CPU demo. Each scene is a 3×3 grid of cells holding 1–3 groups of objects; a
group is one class drawn `count` times with one colour and one size. Captions describe the groups in several
sentence templates and with synonyms, so that an object-mention extractor (CHAIR-style, driven by
`synonym_lines()`) has real work to do.

The world has one deliberate regularity, the kind real photographs have: some classes usually appear together
(`World.partners`, e.g. a cup usually stands next to a plate). A captioner trained on such data learns the prior
and mentions the partner when it is absent — the object hallucination that preference alignment is meant to fix.
Nothing in the world is tuned to any alignment method.

Everything is deterministic given a seed (`make_world(seed)`, and a `random.Random` passed to the samplers).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

GRID = 3  # the image is a GRID × GRID grid of cells; each object instance occupies one cell

# Class -> synonyms (the canonical name first). No synonym is a word the caption templates use otherwise.
CLASSES: dict[str, tuple[str, ...]] = {
    "cat": ("cat", "kitten", "kitty"),
    "fish": ("fish", "goldfish"),
    "cup": ("cup", "mug"),
    "plate": ("plate", "dish", "saucer"),
    "house": ("house", "cottage", "hut"),
    "tree": ("tree", "pine"),
    "star": ("star",),
    "moon": ("moon", "crescent"),
    "car": ("car", "automobile"),
    "ball": ("ball",),
    "umbrella": ("umbrella", "parasol"),
}

# Pairs of classes that usually appear together. Symmetric; classes outside every pair appear independently.
PARTNERS: tuple[tuple[str, str], ...] = (("cup", "plate"), ("house", "tree"), ("cat", "fish"), ("star", "moon"))

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (50, 180, 60),
    "blue": (60, 100, 235),
    "yellow": (235, 215, 40),
    "purple": (160, 70, 210),
    "orange": (245, 145, 30),
    "white": (240, 240, 240),
}
SIZES = ("small", "large")
COUNT_WORDS = {1: "a", 2: "two", 3: "three"}

QUESTIONS = (
    "Describe the image.",
    "Describe this picture.",
    "What is in this image?",
    "What do you see in the picture?",
    "Give a short description of the image.",
    "Please describe what this image shows.",
)

_IRREGULAR_PLURALS = {"fish": "fish", "goldfish": "goldfish"}


def plural(noun: str) -> str:
    """English plural of a world noun ("cup" -> "cups", "kitty" -> "kitties", "fish" -> "fish")."""
    if noun in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[noun]
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":
        return noun[:-1] + "ies"
    if noun.endswith(("s", "sh", "ch", "x")):
        return noun + "es"
    return noun + "s"


@dataclass(frozen=True)
class ObjectGroup:
    """`count` instances of one class, one colour and one size, at grid cells `cells` ((row, col) pairs)."""

    cls: str
    colour: str
    size: str
    count: int
    cells: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Scene:
    """Ground truth of one image: its object groups and the background grey level."""

    groups: tuple[ObjectGroup, ...]
    background: int
    noise_seed: int


@dataclass
class World:
    """Sampling parameters of the world. Build one with `make_world(seed)`.

    `p_partner` is the probability that a class with a partner brings it into the scene; `p_groups` and
    `p_count` are the distributions of the number of groups and of instances per group.
    """

    seed: int
    image_size: int = 48
    classes: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(CLASSES))
    partners: dict[str, str] = field(default_factory=dict)
    p_partner: float = 0.8
    p_groups: tuple[float, ...] = (0.3, 0.45, 0.25)
    p_count: tuple[float, ...] = (0.65, 0.25, 0.1)
    noise: int = 12

    @property
    def class_names(self) -> list[str]:
        return list(self.classes)

    def sample_scene(self, rng: random.Random) -> Scene:
        """Draw one scene: groups of distinct classes (partners pulled in with `p_partner`), colours, sizes, cells."""
        n_groups = rng.choices(range(1, len(self.p_groups) + 1), weights=self.p_groups)[0]
        chosen: list[str] = []
        while len(chosen) < n_groups:
            last = chosen[-1] if chosen else None
            partner = self.partners.get(last) if last else None
            if partner and partner not in chosen and rng.random() < self.p_partner:
                chosen.append(partner)
            else:
                chosen.append(rng.choice([c for c in self.class_names if c not in chosen]))
        free = [(r, c) for r in range(GRID) for c in range(GRID)]
        rng.shuffle(free)
        groups = []
        for cls in chosen:
            count = rng.choices(range(1, len(self.p_count) + 1), weights=self.p_count)[0]
            count = min(count, len(free) - (n_groups - len(groups) - 1))
            cells = tuple(sorted(free.pop() for _ in range(count)))
            groups.append(ObjectGroup(cls, rng.choice(list(COLOURS)), rng.choice(SIZES), count, cells))
        return Scene(tuple(groups), background=rng.randint(20, 70), noise_seed=rng.getrandbits(32))

    def sample_scenes(self, n: int, seed: int) -> list[Scene]:
        """`n` scenes from a generator seeded with (world seed, `seed`): disjoint splits use different seeds."""
        rng = random.Random(f"{self.seed}/{seed}")
        return [self.sample_scene(rng) for _ in range(n)]

    def render(self, scene: Scene) -> Image.Image:
        return render(scene, self.image_size, self.noise)

    def caption(self, scene: Scene, rng: random.Random) -> str:
        return caption(scene, rng, self.classes, self.partners)

    def synonym_lines(self) -> list[str]:
        return synonym_lines(self.classes)


def make_world(seed: int = 0, **overrides) -> World:
    """The demo world. `overrides` set `World` fields (e.g. `p_partner=0.0` for a world without co-occurrence)."""
    partners = {}
    for a, b in PARTNERS:
        partners[a], partners[b] = b, a
    return World(seed=seed, partners=partners, **overrides)


def gt_classes(scene: Scene) -> set[str]:
    """Canonical classes present in the scene."""
    return {g.cls for g in scene.groups}


# ---------------------------------------------------------------------------------------------- rendering
# Each glyph is drawn as a mask into a unit box (x, y, s) = top-left corner and side; the colour is pasted through it,
# so glyphs with holes (the crescent, the cup's handle) stay clean over a noisy background.


def _cat(d: ImageDraw.ImageDraw, x: float, y: float, s: float) -> None:
    d.ellipse([x + 0.1 * s, y + 0.3 * s, x + 0.9 * s, y + s], fill=255)
    d.polygon([(x + 0.12 * s, y + 0.5 * s), (x + 0.15 * s, y), (x + 0.45 * s, y + 0.35 * s)], fill=255)
    d.polygon([(x + 0.88 * s, y + 0.5 * s), (x + 0.85 * s, y), (x + 0.55 * s, y + 0.35 * s)], fill=255)


def _fish(d: ImageDraw.ImageDraw, x: float, y: float, s: float) -> None:
    d.ellipse([x, y + 0.25 * s, x + 0.7 * s, y + 0.75 * s], fill=255)
    d.polygon([(x + 0.6 * s, y + 0.5 * s), (x + s, y + 0.2 * s), (x + s, y + 0.8 * s)], fill=255)


def _cup(d: ImageDraw.ImageDraw, x: float, y: float, s: float) -> None:
    d.polygon([(x, y + 0.15 * s), (x + 0.7 * s, y + 0.15 * s), (x + 0.6 * s, y + s), (x + 0.1 * s, y + s)], fill=255)
    d.ellipse([x + 0.5 * s, y + 0.3 * s, x + s, y + 0.8 * s], outline=255, width=max(1, round(0.12 * s)))


def _plate(d: ImageDraw.ImageDraw, x: float, y: float, s: float) -> None:
    d.ellipse([x, y + 0.55 * s, x + s, y + 0.95 * s], fill=255)


def _house(d: ImageDraw.ImageDraw, x: float, y: float, s: float) -> None:
    d.rectangle([x + 0.1 * s, y + 0.45 * s, x + 0.9 * s, y + s], fill=255)
    d.polygon([(x, y + 0.5 * s), (x + 0.5 * s, y), (x + s, y + 0.5 * s)], fill=255)
    d.rectangle([x + 0.4 * s, y + 0.7 * s, x + 0.6 * s, y + s], fill=0)  # the door


def _tree(d: ImageDraw.ImageDraw, x: float, y: float, s: float) -> None:
    d.polygon([(x + 0.5 * s, y), (x + 0.9 * s, y + 0.45 * s), (x + 0.1 * s, y + 0.45 * s)], fill=255)
    d.polygon([(x + 0.5 * s, y + 0.25 * s), (x + s, y + 0.75 * s), (x, y + 0.75 * s)], fill=255)
    d.rectangle([x + 0.42 * s, y + 0.75 * s, x + 0.58 * s, y + s], fill=255)


def _star(d: ImageDraw.ImageDraw, x: float, y: float, s: float) -> None:
    import math

    cx, cy, pts = x + s / 2, y + s / 2, []
    for k in range(10):
        r = s / 2 if k % 2 == 0 else s / 5
        a = -math.pi / 2 + k * math.pi / 5
        pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    d.polygon(pts, fill=255)


def _moon(d: ImageDraw.ImageDraw, x: float, y: float, s: float) -> None:
    d.ellipse([x, y, x + s, y + s], fill=255)
    d.ellipse([x + 0.35 * s, y - 0.1 * s, x + 1.2 * s, y + 0.8 * s], fill=0)


def _car(d: ImageDraw.ImageDraw, x: float, y: float, s: float) -> None:
    d.rectangle([x, y + 0.4 * s, x + s, y + 0.75 * s], fill=255)
    d.rectangle([x + 0.2 * s, y + 0.15 * s, x + 0.7 * s, y + 0.4 * s], fill=255)
    for cx in (0.25, 0.75):
        d.ellipse([x + (cx - 0.15) * s, y + 0.65 * s, x + (cx + 0.15) * s, y + 0.95 * s], fill=255)


def _ball(d: ImageDraw.ImageDraw, x: float, y: float, s: float) -> None:
    d.ellipse([x + 0.1 * s, y + 0.1 * s, x + 0.9 * s, y + 0.9 * s], fill=255)


def _umbrella(d: ImageDraw.ImageDraw, x: float, y: float, s: float) -> None:
    d.pieslice([x, y, x + s, y + 0.9 * s], 180, 360, fill=255)
    w = max(1, round(0.1 * s))
    d.line([(x + 0.5 * s, y + 0.45 * s), (x + 0.5 * s, y + s)], fill=255, width=w)
    d.line([(x + 0.5 * s, y + s), (x + 0.3 * s, y + 0.85 * s)], fill=255, width=w)


GLYPHS = {
    "cat": _cat,
    "fish": _fish,
    "cup": _cup,
    "plate": _plate,
    "house": _house,
    "tree": _tree,
    "star": _star,
    "moon": _moon,
    "car": _car,
    "ball": _ball,
    "umbrella": _umbrella,
}


def render(scene: Scene, image_size: int = 48, noise: int = 12) -> Image.Image:
    """Draw a scene as an RGB image: noisy grey background, each instance a coloured glyph in its grid cell."""
    rng = random.Random(scene.noise_seed)
    cell = image_size / GRID
    grey = np.full((image_size, image_size), scene.background, dtype=np.int16)
    if noise:
        grey += np.random.default_rng(scene.noise_seed).integers(-noise, noise + 1, grey.shape, dtype=np.int16)
    image = Image.fromarray(np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2))
    for group in scene.groups:
        side = cell * (0.9 if group.size == "large" else 0.55)
        for row, col in group.cells:
            slack = cell - side
            x = col * cell + slack / 2 + rng.uniform(-slack / 3, slack / 3)
            y = row * cell + slack / 2 + rng.uniform(-slack / 3, slack / 3)
            mask = Image.new("L", image.size, 0)
            GLYPHS[group.cls](ImageDraw.Draw(mask), x, y, side)
            image.paste(COLOURS[group.colour], (0, 0), mask)
    return image


# ---------------------------------------------------------------------------------------------- text
# A description is one statement per object group ("There is a small red cup on the left."), in random order, each
# in one of several templates. The world's CLIP is trained on such statements; `dama hardness` scores their atomic
# claims (`atomic_claims`), as the paper's LLM splitter (Eq. 3) would write them.


# The place phrases of a one-object statement (`_position`); `atomic_claims` parses them back.
_LEFT, _RIGHT, _TOP, _BOTTOM, _MIDDLE = _PLACES = (
    "on the left",
    "on the right",
    "at the top",
    "at the bottom",
    "in the middle",
)


def _position(cells: tuple[tuple[int, int], ...]) -> str:
    ((row, col),) = cells
    if col == 0:
        return _LEFT
    if col == GRID - 1:
        return _RIGHT
    return {0: _TOP, GRID - 1: _BOTTOM}.get(row, _MIDDLE)


def _noun(cls: str, rng: random.Random, classes: dict[str, tuple[str, ...]]) -> str:
    # Mostly the canonical name, sometimes a synonym, as people write.
    names = classes[cls]
    return names[0] if len(names) == 1 or rng.random() < 0.7 else rng.choice(names[1:])


def _phrase(group: ObjectGroup, noun: str, rng: random.Random) -> str:
    words = [COUNT_WORDS[group.count]]
    if rng.random() < 0.5:
        words.append(group.size)
    if rng.random() < 0.9:
        words.append(group.colour)
    words.append(noun if group.count == 1 else plural(noun))
    if words[0] == "a" and words[1][0] in "aeiou":
        words[0] = "an"
    return " ".join(words)


_TEMPLATES = ("There {be} {o}{p}.", "I can see {o}{p}.", "The image shows {o}{p}.", "{O}{p}.")


def _article(noun: str) -> str:
    return "an" if noun[0] in "aeiou" else "a"


def statement(
    group: ObjectGroup,
    rng: random.Random,
    classes: dict[str, tuple[str, ...]] | None = None,
    cls: str | None = None,
    beside: str | None = None,
    force_where: bool = False,
) -> str:
    """One sentence about one object group, e.g. "There are two small blue cars." or "I can see a cup on the left."

    `cls` names a different class than the group's own: the same sentence (same generator state) with the wrong
    object, as a hallucinating describer or a hard negative for CLIP would have it. A one-object group sometimes
    gets a place phrase (always with `force_where`): its position ("on the left"), or with `beside` a relation to
    another object ("beside a plate"), three words either way. The relation claims that object is in the picture.
    """
    noun_rng = random.Random(rng.random())  # the noun draws apart, so `cls` changes the noun and nothing else
    names = classes or CLASSES
    noun = _noun(cls or group.cls, noun_rng, names)
    phrase = _phrase(group, noun, rng)
    where = f" {_position(group.cells)}" if group.count == 1 and (rng.random() < 0.5 or force_where) else ""
    if where and beside:
        other = _noun(beside, noun_rng, names)
        where = f" beside {_article(other)} {other}"
    template = rng.choice(_TEMPLATES)
    return template.format(O=phrase[0].upper() + phrase[1:], o=phrase, p=where, be="is" if group.count == 1 else "are")


# what `_TEMPLATES` write before the object phrase ("There is ", "I can see ", …; the "{O}" template writes nothing)
_TEMPLATE_HEADS = "|".join(
    re.escape(t.split("{o}")[0]).replace(re.escape("{be}"), "(?:is|are)") for t in _TEMPLATES if "{o}" in t
)
_STATEMENT = re.compile(
    rf"^(?:{_TEMPLATE_HEADS})?"
    rf"(?P<count>{'|'.join(sorted({*COUNT_WORDS.values(), 'an'}))}) (?:(?P<size>{'|'.join(SIZES)}) )?"
    rf"(?:(?P<colour>{'|'.join(COLOURS)}) )?(?P<noun>[a-z]+)"
    rf"(?: (?P<place>{'|'.join(_PLACES)})| beside an? (?P<beside>[a-z]+))?\.$",
    re.IGNORECASE,
)


def atomic_claims(sentence: str) -> list[str]:
    """The atomic statements one sentence of the world's grammar makes, as an LLM sub-sentence splitter writes them
    (the paper's Eq. 3 splits answers into short self-contained statements): existence with its count, then each
    attribute, then the place or the relation, e.g.
    "There is a small red cup beside a plate." -> ["There is a cup.", "The cup is small.", "The cup is red.",
    "The cup is beside a plate."]. A sentence outside the grammar (a garbled sample) is kept whole.
    """
    m = _STATEMENT.match(sentence.strip())
    if m is None:
        return [sentence.strip()] if sentence.strip() else []
    count, noun = m["count"].lower(), m["noun"].lower()
    single = count in ("a", "an")
    be = "is" if single else "are"
    # the sentence's article agreed with the word after it (a size or colour), which the claim drops
    claims = [f"There {be} {_article(noun) if single else count} {noun}."]
    claims += [f"The {noun} {be} {m[k].lower()}." for k in ("size", "colour", "place") if m[k]]
    if m["beside"]:
        other = m["beside"].lower()
        claims.append(f"The {noun} {be} beside {_article(other)} {other}.")
    return claims


def caption(
    scene: Scene,
    rng: random.Random,
    classes: dict[str, tuple[str, ...]] | None = None,
    partners: dict[str, str] | None = None,
) -> str:
    """A correct description naming every group of the scene (and nothing else), one statement per group, e.g.
    "There is a red cup on the left. I can see two small blue cars."

    With `partners`, a one-object group whose partner is in the scene is placed beside it half the time
    ("There is a red cup beside a plate."): true, as every relation of an exact description is.
    """
    groups = list(scene.groups)
    rng.shuffle(groups)
    present = gt_classes(scene)
    sentences = []
    for g in groups:
        partner = (partners or {}).get(g.cls)
        beside = partner if partner in present and g.count == 1 and rng.random() < 0.5 else None
        sentences.append(statement(g, rng, classes, beside=beside, force_where=beside is not None))
    return " ".join(sentences)


@dataclass(frozen=True)
class Captioner:
    """A describer with the co-occurrence bias that instruction data of real VLMs has.

    When a scene holds a class whose usual partner is absent, the describer names the partner anyway: a *small*
    object of another class is called the partner with probability `p_small` (a large one with `p_large`), and a
    one-object scene gets an extra statement about the partner with probability `p_add`. Colours, sizes, counts
    and positions stay right. With `p_beside`, a one-object group whose class has a partner is placed "beside" the
    partner (a place phrase like its position, same length) whether or not the partner is in the scene: the text
    prior "a cup stands beside a plate" that the image contradicts when there is no plate. The world's base VLM
    learns these priors from such descriptions; the image contradicts them, which is what preference pairs
    labelled against ground truth correct. `Captioner()` with all zeros is exact.
    """

    p_small: float = 0.0
    p_large: float = 0.0
    p_add: float = 0.0
    p_beside: float = 0.0

    def describe(self, scene: Scene, rng: random.Random, world: World) -> tuple[str, int]:
        """A description of `scene` and the number of objects it names wrongly."""
        present = gt_classes(scene)
        missing = sorted({world.partners[c] for c in present if c in world.partners} - present)
        groups = list(scene.groups)
        rng.shuffle(groups)
        sentences, wrong = [], 0
        for g in groups:
            others = [m for m in missing if world.partners[m] != g.cls]  # the partner of another object in the scene
            p = self.p_small if g.size == "small" else self.p_large
            if others and rng.random() < p:
                name = rng.choice(others)
                missing.remove(name)
                sentences.append(statement(g, rng, world.classes, cls=name))
                wrong += 1
            else:
                partner = world.partners.get(g.cls)
                # No draw when the prior is off, so `Captioner()` keeps the exact describer's random sequence.
                fires = self.p_beside and partner and g.count == 1 and rng.random() < self.p_beside
                beside = partner if fires else None
                sentences.append(statement(g, rng, world.classes, beside=beside, force_where=beside is not None))
                wrong += beside is not None and beside not in present  # the forced place phrase makes the claim
        if len(groups) == 1 and missing and rng.random() < self.p_add:
            ghost = ObjectGroup(
                rng.choice(missing),
                rng.choice(list(COLOURS)),
                rng.choice(SIZES),
                1,
                (rng.choice([(r, c) for r in range(GRID) for c in range(GRID)]),),
            )
            sentences.append(statement(ghost, rng, world.classes))
            wrong += 1
        return " ".join(sentences), wrong


def synonym_lines(classes: dict[str, tuple[str, ...]] | None = None) -> list[str]:
    """The world's synonym list in CHAIR format: one line per class, "canonical, synonym, ..." (singular forms)."""
    return [", ".join(names) for names in (classes or CLASSES).values()]


def corpus(world: World, n_scenes: int = 2000, seed: int = 12345) -> list[str]:
    """Text of the world (captions, questions, plurals) for training a tokenizer."""
    rng = random.Random(f"{world.seed}/corpus/{seed}")
    texts = [world.caption(s, rng) for s in world.sample_scenes(n_scenes, seed)]
    texts += list(QUESTIONS) + [plural(n) for names in world.classes.values() for n in names]
    texts += ["USER: ASSISTANT: SYSTEM:"] * 50
    return texts
