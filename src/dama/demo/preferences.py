"""Preference pairs made the way RLAIF-V makes them, with the world's ground truth as the labeller.

For each training image, the base model samples several responses (temperature sampling); each response is scored
by counting its hallucinated object mentions against the scene's ground truth; pairs of responses whose scores
differ become (chosen, rejected) pairs. Pairs are not selected by how different they are, so hardness varies
naturally: some pairs differ by one hallucinated object, some by several.

Mentions are read by `dama eval`'s CHAIR engine with the world's synonym list — the same scorer as the evaluation.
"""

from __future__ import annotations

import functools
import random
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence

from datasets import Dataset

from dama.demo.models import prompt_messages, sample_responses
from dama.demo.stats import pearson
from dama.demo.world import QUESTIONS, World, atomic_claims, gt_classes, plural
from dama.eval.chair import ChairEngine
from dama.row_fields import response_text


@functools.lru_cache(maxsize=8)
def _engine(synonym_lines: tuple[str, ...]) -> ChairEngine:
    return ChairEngine(list(synonym_lines), rules=False)


def object_mentions(text: str, synonym_lines: Iterable[str]) -> list[str]:
    """Canonical class of every object mention in `text`, in order, not de-duplicated (CHAIR counts each mention).

    This is `dama eval`'s CHAIR engine with the world's synonym list (plurals, multi-word names), so the labeller
    of the preference pairs and the demo's evaluation read text the same way.
    """
    return [m.cls for m in _engine(tuple(synonym_lines)).extract(text)]


def count_hallucinations(text: str, gt: set[str], synonym_lines: Iterable[str]) -> tuple[int, int]:
    """(hallucinated object mentions, all object mentions) of `text` given the ground-truth classes `gt`."""
    mentions = object_mentions(text, synonym_lines)
    return sum(m not in gt for m in mentions), len(mentions)


def hallucination_rates(responses: Sequence[str], gts: Sequence[set[str]], synonym_lines: list[str]) -> dict:
    """CHAIR_i (hallucinated / all mentions), CHAIR_s (responses with ≥1 hallucination), recall, mean length."""
    hall = mentions = bad = covered = gt_total = words = 0
    for text, gt in zip(responses, gts):
        h, m = count_hallucinations(text, gt, synonym_lines)
        hall, mentions, bad = hall + h, mentions + m, bad + (h > 0)
        covered += len(set(object_mentions(text, synonym_lines)) & gt)
        gt_total += len(gt)
        words += len(text.split())
    n = max(len(responses), 1)
    return {
        "chair_i": hall / max(mentions, 1),
        "chair_s": bad / n,
        "recall": covered / max(gt_total, 1),
        "mentions_per_response": mentions / n,
        "words_per_response": words / n,
        "n": len(responses),
    }


def evaluation_set(world: World, n: int, seed: int = 3) -> list[dict]:
    """Held-out images with ground truth: `id`, `image`, `question`, `gt_classes`, `scene`.

    Seeds 1 and 2 are the models' training and validation scenes; use another seed for held-out data.
    """
    rng = random.Random(f"{world.seed}/eval-questions/{seed}")
    return [
        {
            "id": f"eval-{seed}-{k}",
            "image": world.render(s),
            "question": rng.choice(QUESTIONS),
            "gt_classes": gt_classes(s),
            "scene": s,
        }
        for k, s in enumerate(world.sample_scenes(n, seed))
    ]


def pairs_from_samples(
    responses: Sequence[str],
    gt: set[str],
    synonym_lines: list[str],
    max_pairs: int,
    rng: random.Random,
    same_mentions: bool = True,
    same_statements: bool = False,
) -> list[tuple[str, str, int, int]]:
    """(chosen, rejected, n_hall_chosen, n_hall_rejected) pairs among one image's responses (docs/demo.md, "Preference
    pairs", gives the reason for each rule).

    The label is the count of hallucinated object mentions; a pair needs strictly different counts, and the chosen
    answer names at least as many real objects (exactly as many with `same_mentions`; with `same_statements` both
    make the same number of sentences). Identical texts are dropped. Of the valid pairs, the `max_pairs` closest to a
    minimal pair are kept: the most similar word count, then the fewest words not shared once object names are
    masked (`style_difference`), ties in random order.
    """
    nouns = _object_words(tuple(synonym_lines))
    scored = []
    for text in dict.fromkeys(responses):  # drop duplicate texts, keep order
        hallucinated, mentions = count_hallucinations(text, gt, synonym_lines)
        scored.append((text, hallucinated, mentions, len(text.split()), len(statements(text))))
    candidates = []
    for i in range(len(scored)):
        for j in range(i + 1, len(scored)):
            a, b = scored[i], scored[j]
            if a[1] == b[1]:
                continue
            win, lose = (a, b) if a[1] < b[1] else (b, a)
            if win[2] - win[1] < lose[2] - lose[1]:
                continue  # the chosen answer would name fewer real objects: a lesson in saying less
            if same_mentions and win[2] != lose[2]:
                continue  # one names more objects than the other: the pair would differ in length
            if same_statements and win[4] != lose[4]:
                continue  # one says more sentences than the other
            changed = style_difference(a[0], b[0], nouns)
            candidates.append(((abs(a[3] - b[3]), changed), rng.random(), (win[0], lose[0], win[1], lose[1])))
    candidates.sort()
    return [pair for _, _, pair in candidates[:max_pairs]]


def statements(text: str) -> list[str]:
    """The sentences of an answer: split after ".", "!" or "?" followed by white space (empty pieces dropped)."""
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


def atomic_statements(text: str) -> list[str]:
    """An answer's sub-sentences for `dama hardness`: every sentence split into its atomic claims
    (`world.atomic_claims`), what the paper's LLM splitter makes of an answer (Eq. 3)."""
    return [claim for sentence in statements(text) for claim in atomic_claims(sentence)]


@functools.lru_cache(maxsize=8)
def _object_words(synonym_lines: tuple[str, ...]) -> frozenset[str]:
    return frozenset(
        w
        for line in synonym_lines
        for name in line.split(",")
        for n in (name.strip().lower(),)
        for form in (n, plural(n))
        for w in form.split()
    )


def style_difference(a: str, b: str, object_words: Iterable[str]) -> int:
    """Words of `a` and `b` not shared by the other, as multisets of lower-case words with every object name
    replaced by one placeholder: 0 when two answers differ only in which objects they name (or in statement order).
    """
    nouns = frozenset(object_words)

    def words(text: str) -> Counter:
        return Counter("<object>" if w in nouns else w for w in re.findall(r"[a-z]+", text.lower()))

    words_a, words_b = words(a), words(b)
    return sum(((words_a - words_b) + (words_b - words_a)).values())


def length_balance(rows: Sequence[dict]) -> dict[str, float]:
    """Mean word count of chosen and rejected answers, their difference relative to the mean length, and the
    Pearson correlation of the label gap (rejected − chosen hallucinations) with the length difference
    (chosen − rejected words): how much of the preference a length heuristic could learn."""
    chosen = [len(response_text(r["chosen"]).split()) for r in rows]
    rejected = [len(response_text(r["rejected"]).split()) for r in rows]
    gaps = [r["n_hall_rejected"] - r["n_hall_chosen"] for r in rows]
    diffs = [c - j for c, j in zip(chosen, rejected)]
    mean_c, mean_r = statistics.fmean(chosen), statistics.fmean(rejected)
    return {
        "chosen_words": mean_c,
        "rejected_words": mean_r,
        "relative_length_difference": (mean_c - mean_r) / ((mean_c + mean_r) / 2),
        "corr_gap_length_difference": pearson(gaps, diffs),
    }


def build_preferences(
    model,
    processor,
    world: World,
    n_images: int,
    n_samples: int = 4,
    temperature: float = 1.0,
    max_new_tokens: int = 48,
    max_pairs_per_image: int = 2,
    seed: int = 4,
    as_dataset: bool = False,
    same_mentions: bool = True,
    same_statements: bool = False,
) -> list[dict] | Dataset:
    """Sample `n_samples` responses per image from `model`, label them with ground truth and make pairs.

    Rows are in TRL's conversational vision preference format: `image` (PIL), `prompt` (user turn with an image
    part), `chosen`/`rejected` (one assistant turn each), plus `id`, `chosen_subsentences`/`rejected_subsentences`
    (`atomic_statements`), `n_hall_chosen`, `n_hall_rejected` and `gt_classes` (sorted list). Images come from
    `world.sample_scenes(n_images, seed)`; keep `seed` apart from the evaluation set's. `same_mentions` and
    `same_statements` are `pairs_from_samples`'s rules.
    """
    rng = random.Random(f"{world.seed}/preferences/{seed}")
    scenes = world.sample_scenes(n_images, seed)
    images = [world.render(s) for s in scenes]
    questions = [rng.choice(QUESTIONS) for _ in scenes]
    lines = world.synonym_lines()
    rows = []
    for q in QUESTIONS:  # one generate call per question keeps prompts in a batch the same length
        idx = [k for k, qk in enumerate(questions) if qk == q]
        if not idx:
            continue
        samples = sample_responses(
            model,
            processor,
            [images[k] for k in idx],
            q,
            n=n_samples,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            seed=seed,
        )
        for k, responses in zip(idx, samples):
            gt = gt_classes(scenes[k])
            for p, (chosen, rejected, hc, hr) in enumerate(
                pairs_from_samples(responses, gt, lines, max_pairs_per_image, rng, same_mentions, same_statements)
            ):
                rows.append(
                    {
                        "id": f"pref-{seed}-{k}-{p}",
                        "image": images[k],
                        "prompt": prompt_messages(q),
                        "chosen": [{"role": "assistant", "content": chosen}],
                        "rejected": [{"role": "assistant", "content": rejected}],
                        # read by `dama hardness --splitter column` (its default column names)
                        "chosen_subsentences": atomic_statements(chosen),
                        "rejected_subsentences": atomic_statements(rejected),
                        "n_hall_chosen": hc,
                        "n_hall_rejected": hr,
                        "gt_classes": sorted(gt),
                    }
                )
    rows.sort(key=lambda r: tuple(int(x) for x in r["id"].split("-")[2:]))
    return Dataset.from_list(rows) if as_dataset else rows
