"""The CHAIR engine (Rohrbach et al., "Object Hallucination in Image Captioning", EMNLP 2018), as docs/eval.md describes.

Per response (docs/eval.md, "CHAIR"):
1. lower-case, tokenise Treebank-style (punctuation glued to words is split off), singularise each word;
2. merge two-word names left to right, one bigram at a time, as both reference implementations do (the original
   CHAIR code and RLAIF-V's look only at `words[i:i+2]`, so a three-word synonym such as "stove top oven" never
   merges and counts as "stove" + "oven", two mentions). The two-word names are, for the original list, the
   original code's own `coco_double_words`; for the refined and custom lists, every two-word synonym plus "home
   plate", "train track" (RLAIF-V). Then "baby X" / "adult X" -> X for animals, "passenger jet/train" -> jet/train,
   "bow tie" -> tie, "toilet seat" -> toilet;
3. if "toilet" and "seat" both occur, drop "seat" (else it counts as a chair);
4. keep words of the synonym vocabulary and map each to its canonical class. Mentions are not de-duplicated.

By default no language data is read at run time: singularisation looks words up in `data/chair_table.tsv`,
generated from the synonym lists by `python -m dama.eval.build_chair_table` (plural rules + irregular nouns, see
`plurals.py`). A custom synonym list (the demo's synthetic world has its own classes) gets its table generated in
memory the same way. `ChairEngine(lemmatizer=WordNetTokens())` replaces step 1 with RLAIF-V's: NLTK's tokeniser on
the lower-cased text and WordNet's noun lemma of every token (`dama.eval.nltk_reference`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Protocol

from dama.eval.plurals import lemma_table
from dama.eval.records import RecordError

ORIGINAL = "chair-original"
REFINED = "chair-refined-v1"
VERSIONS = (ORIGINAL, REFINED)

# The original CHAIR code's `coco_double_words` (LisaAnne/Hallucination, utils/chair.py), without its duplicates and
# without "stove top oven", which a bigram never matches: with the original list only these are merged.
ORIGINAL_DOUBLE_WORDS: tuple[str, ...] = (
    "motor bike", "motor cycle", "air plane", "traffic light", "street light", "traffic signal", "stop light",
    "fire hydrant", "stop sign", "parking meter", "suit case", "sports ball", "baseball bat", "baseball glove",
    "tennis racket", "wine glass", "hot dog", "cell phone", "mobile phone", "teddy bear", "hair drier",
    "potted plant", "bow tie", "laptop computer", "home plate", "train track",
)  # fmt: skip
# Bumped whenever the extraction rules change, so caches keyed on ChairEngine.fingerprint are rebuilt.
RULES_VERSION = "bigram-merge-v2"

# Multi-word names that are not synonyms but must still be merged so their parts do not count ("home plate" is not
# a plate, "train track" is not a train).
EXTRA_MULTIWORD: tuple[str, ...] = ("home plate", "train track")
# "baby bird" is a bird, not a baby (person); "adult elephant" is an elephant.
QUALIFIED_ANIMALS: tuple[str, ...] = (
    "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "animal", "cub",
)  # fmt: skip
# "passenger jet" is a jet, not a passenger (person).
QUALIFIED_VEHICLES: tuple[str, ...] = ("jet", "train")

# Treebank-style: clitics split off ("dog's" -> "dog" "'s", "don't" -> "do" "n't"), hyphenated compounds kept whole,
# every other non-space character its own token, so punctuation separates words that must not be merged.
_NEGATION = re.compile(r"(?<=[^\W_])n't\b")
_TOKEN = re.compile(r"n't\b|'(?:s|re|ve|ll|d|m)\b|[^\W_]+(?:-[^\W_]+)*|\S")


def tokenize(text: str) -> list[str]:
    """Lower-case Treebank-style word tokens of `text`, punctuation included as separate tokens."""
    return _TOKEN.findall(_NEGATION.sub(" n't", text.lower()))


def is_word(token: str) -> bool:
    """A token that counts as a word for response length (not punctuation, not a clitic)."""
    return any(ch.isalnum() for ch in token) and not token.startswith("'") and token != "n't"


def _data_text(name: str) -> str:
    return resources.files("dama.eval").joinpath("data", name).read_text(encoding="utf-8")


def shipped_synonym_lines(version: str = REFINED) -> list[str]:
    """The shipped synonym list: `ORIGINAL` (the CHAIR authors' 80 lines, as published) or `REFINED`."""
    if version not in VERSIONS:
        raise ValueError(f"unknown CHAIR synonym list {version!r}; choose one of {', '.join(VERSIONS)}")
    lines = _data_text("chair_synonyms.txt").splitlines()
    if version == ORIGINAL:
        return lines
    return lines + [line for line in _data_text("chair_synonyms_refined.txt").splitlines() if line.strip()]


def parse_synonyms(lines: Iterable[str], strip: bool = True) -> dict[str, str]:
    """Map each synonym (and each canonical name) to its canonical class: the first entry of its line.

    With `strip=False` the line is stripped and then split on ", " with the entries kept as they are — the original
    CHAIR parsing (`s.strip().split(', ')`): a stray space at the end of a line goes ("bison", "chesterfield"
    match), one after a comma stays (" motor bike", " cheesecake" can never match a word). A class named on several lines (the refined additions) keeps the
    synonyms of all of them. Lines starting with "#" are comments.
    """
    inverse: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        entries = line.strip().split(", ")
        if strip:
            entries = [" ".join(entry.split()) for entry in entries]
        canonical = " ".join(entries[0].split())
        if not canonical:
            raise RecordError(f"synonym list line {number}: empty class name in {line!r}")
        for entry in entries:
            if entry:
                inverse.setdefault(entry, canonical)
    return inverse


def load_table(name: str = "chair_table.tsv") -> dict[str, str]:
    """Read the shipped "surface form -> singular word" table (tab-separated: surface, singular, canonical class)."""
    table: dict[str, str] = {}
    for line in _data_text(name).splitlines():
        if line and not line.startswith("#"):
            surface, singular, *_ = line.split("\t")
            table[surface] = singular
    return table


class Lemmatizer(Protocol):
    """Step 1 done another way: text -> lower-case, singular tokens (e.g. `nltk_reference.WordNetTokens`)."""

    name: str

    def __call__(self, text: str) -> list[str]: ...


@dataclass(frozen=True)
class Mention:
    """One object mention: the (singular, merged) `word`, its canonical class `cls`, its token `position`."""

    word: str
    cls: str
    position: int


class ChairEngine:
    """Extract object mentions from text with a CHAIR synonym list.

    `synonym_lines=None` uses the shipped list named by `version` (`REFINED` or `ORIGINAL`); otherwise they are
    "canonical, syn1, syn2" lines, and `version` becomes "custom-<hash>". `rules=False` turns off the COCO-specific
    baby/adult/passenger and toilet/seat rules, for synthetic vocabularies. `lemmatizer` replaces the tokeniser and
    the singularisation table (step 1), e.g. with RLAIF-V's NLTK + WordNet front end. Attributes: `version`, `sha256`
    (of the synonym lines), `inverse` (synonym -> class), `singular` (surface form -> singular word), `multiword`,
    `lemmatizer_name` ("table" or the lemmatizer's name).
    """

    def __init__(
        self,
        synonym_lines: Sequence[str] | None = None,
        *,
        version: str = REFINED,
        extra_multiword: Sequence[str] = EXTRA_MULTIWORD,
        rules: bool = True,
        lemmatizer: Lemmatizer | None = None,
    ) -> None:
        self.rules = rules
        self.lemmatizer = lemmatizer
        if synonym_lines is None:
            lines = shipped_synonym_lines(version)
            self.inverse = parse_synonyms(lines, strip=version != ORIGINAL)
            self.version = version
        else:
            lines = list(synonym_lines)
            self.inverse = parse_synonyms(lines)
            self.version = "custom-" + hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]
        self.sha256 = hashlib.sha256("\n".join(lines).encode()).hexdigest()
        if synonym_lines is None and tuple(extra_multiword) == EXTRA_MULTIWORD:
            self.singular = load_table()  # the shipped, WordNet-validated table
        else:
            self.singular = lemma_table(table_words(self.inverse, extra_multiword))
        # two-word name (pair of singular words) -> the word it becomes; longer names never merge (bigram merging)
        self.multiword: dict[tuple[str, ...], str] = {}
        original = synonym_lines is None and version == ORIGINAL
        for name in ORIGINAL_DOUBLE_WORDS if original else [*self.inverse, *extra_multiword]:
            # The merged word is the clean name, so an original-list entry with a stray space (" motor bike") is
            # merged but then found in no vocabulary: no mention, and no false "bike", as in the original code.
            if len(name.split()) == 2:
                self.multiword[tuple(name.split())] = " ".join(name.split())
        if rules:
            for animal in QUALIFIED_ANIMALS:
                self.multiword[("baby", animal)] = animal
                self.multiword[("adult", animal)] = animal
            for vehicle in QUALIFIED_VEHICLES:
                self.multiword[("passenger", vehicle)] = vehicle
            self.multiword[("bow", "tie")] = "tie"
            self.multiword[("toilet", "seat")] = "toilet"
            if lemmatizer is not None and "wine glass" in self.inverse:
                self.multiword[("wine", "glas")] = "wine glass"  # RLAIF-V's double_word_dict has it too
        self.max_words = max((len(key) for key in self.multiword), default=1)

    @property
    def fingerprint(self) -> str:
        """A hash of everything that decides which mentions a text yields: the synonym lines, the singularisation
        table, the merge table, whether the COCO rules are on, and `RULES_VERSION`. Caches key on it."""
        state = [
            RULES_VERSION,
            self.version,
            self.sha256,
            self.rules,
            sorted(self.singular.items()),
            sorted((" ".join(k), v) for k, v in self.multiword.items()),
        ]
        if self.lemmatizer is not None:  # the default engine's fingerprint (and so its caches) stays as it was
            state.append(self.lemmatizer.name)
        return hashlib.sha256(json.dumps(state).encode()).hexdigest()[:16]

    @property
    def classes(self) -> list[str]:
        """The canonical classes, in list order."""
        return list(dict.fromkeys(self.inverse.values()))

    def canonical(self, word: str) -> str | None:
        """The canonical class of a vocabulary word (singular, merged), or None."""
        return self.inverse.get(word)

    @property
    def lemmatizer_name(self) -> str:
        """How step 1 is done: "table" (the singularisation table) or the lemmatizer's name."""
        return "table" if self.lemmatizer is None else self.lemmatizer.name

    def words(self, text: str) -> list[tuple[str, int]]:
        """Steps 1-2: singular, merged words of `text` with the token position where each starts."""
        if self.lemmatizer is not None:
            tokens = self.lemmatizer(text)
        else:
            tokens = [self.singular.get(token, token) for token in tokenize(text)]
        merged: list[tuple[str, int]] = []
        i = 0
        while i < len(tokens):
            for width in range(min(self.max_words, len(tokens) - i), 1, -1):
                name = self.multiword.get(tuple(tokens[i : i + width]))
                if name is not None:
                    merged.append((name, i))
                    i += width
                    break
            else:
                merged.append((tokens[i], i))
                i += 1
        return merged

    def select(self, words: Sequence[tuple[str, int]]) -> list[Mention]:
        """Steps 3-4: the toilet/seat rule, then keep vocabulary words mapped to their class (not de-duplicated)."""
        if self.rules and any(w == "toilet" for w, _ in words) and any(w == "seat" for w, _ in words):
            words = [(w, p) for w, p in words if w != "seat"]
        return [Mention(w, self.inverse[w], p) for w, p in words if w in self.inverse]

    def extract(self, text: str) -> list[Mention]:
        """All object mentions in `text`, in order (CHAIR steps 1-4)."""
        return self.select(self.words(text))


def table_words(inverse: dict[str, str], extra: Iterable[str]) -> list[str]:
    """Words whose forms the singularisation table needs: synonyms, class names, merge-rule words (no stray spaces)."""
    words = [*inverse, *inverse.values(), *extra]
    words += ["baby", "adult", "passenger", "seat", "toilet", "tie", "bow", *QUALIFIED_ANIMALS, *QUALIFIED_VEHICLES]
    return [w for w in words if w == w.strip()]


def reference_length(text: str) -> int:
    """Response length as RLAIF-V's Object HalBench computes `avg_len`: `len(text.strip().split(" "))` (single
    spaces, so "" is 1 word and a double space adds an empty word)."""
    return len(text.strip().split(" "))


def count_words(text: str) -> int:
    """Response length in words: Treebank tokens that contain a letter or digit (punctuation and clitics excluded)."""
    return sum(1 for token in tokenize(text) if is_word(token))


@dataclass
class ChairItem:
    """One scored response: its mentions, the image's ground-truth classes, its length in words."""

    id: str
    mentions: list[Mention]
    gt: frozenset[str]
    n_words: int
    image_id: object = None

    @property
    def hallucinated(self) -> list[Mention]:
        return [m for m in self.mentions if m.cls not in self.gt]

    def detail(self) -> dict:
        """Per-response record for the details sidecar."""
        return {
            "id": self.id,
            "image_id": self.image_id,
            "mentions": [[m.word, m.cls] for m in self.mentions],
            "hallucinated": [[m.word, m.cls] for m in self.hallucinated],
            "gt": sorted(self.gt),
            "n_words": self.n_words,
        }


def _pct(num: float, den: float) -> float | None:
    return None if den == 0 else 100.0 * num / den


def chair_metrics(items: Sequence[ChairItem]) -> dict:
    """CHAIR metrics over `items`, rates in percent (docs/eval.md; Rohrbach et al. 2018, Sec. 3).

    CHAIR_i = 100 · hallucinated mentions / mentions; CHAIR_s = 100 · responses with ≥1 hallucinated mention /
    responses; CHAIR_s_refined = the same over responses with ≥1 mention ("response-level hallucination");
    recall = 100 · Σ distinct correctly mentioned classes / Σ ground-truth classes; avg_len = mean words per response.
    A rate whose denominator is 0 is None.
    """
    n_mentions = sum(len(item.mentions) for item in items)
    n_hall_mentions = sum(len(item.hallucinated) for item in items)
    n_hall_responses = sum(1 for item in items if item.hallucinated)
    n_with_objects = sum(1 for item in items if item.mentions)
    n_gt = sum(len(item.gt) for item in items)
    n_recalled = sum(len({m.cls for m in item.mentions} & item.gt) for item in items)
    return {
        "CHAIR_s": _pct(n_hall_responses, len(items)),
        "CHAIR_s_refined": _pct(n_hall_responses, n_with_objects),
        "CHAIR_i": _pct(n_hall_mentions, n_mentions),
        "recall": _pct(n_recalled, n_gt),
        "avg_len": (sum(item.n_words for item in items) / len(items)) if items else None,
        "n_responses": len(items),
        "n_responses_with_objects": n_with_objects,
        "n_hallucinated_responses": n_hall_responses,
        "n_mentions": n_mentions,
        "n_hallucinated_mentions": n_hall_mentions,
        "n_gt_objects": n_gt,
        "n_recalled_objects": n_recalled,
    }
