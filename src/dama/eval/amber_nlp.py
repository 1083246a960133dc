"""The language tools of AMBER's reference noun extraction: NLTK's noun tagger and WordNet lemmatiser, and word
similarity (spaCy `en_core_web_lg` vectors, > 0.8).

AMBER (Wang et al., "AMBER: An LLM-free Multi-dimensional Benchmark for MLLMs Hallucination Evaluation", 2023):
its inference.py tags every response with `nltk.pos_tag`, keeps NN* words lemmatised by WordNet (`extract_nouns`),
and after the exact checks compares each noun with the annotation words by spaCy similarity. Both need the
`eval-reference` extra and its data; `NoSimilarity` (exact matches only) is the offline default of `vocab-match`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from dama.eval.nltk_reference import load_nltk
from dama.eval.records import RecordError


class Similarity(Protocol):
    """Word-similarity backend: AMBER's reference also matches words whose vectors are similar (> 0.8)."""

    name: str

    def similar(self, a: str, b: str) -> bool: ...


class NoSimilarity:
    """The default: exact (singularised) word matches only."""

    name = "none"

    def similar(self, a: str, b: str) -> bool:
        return False


class SpacySimilarity:
    """spaCy word vectors, as AMBER's reference (`en_core_web_lg`, threshold 0.8); only if spaCy and the model exist."""

    def __init__(self, model: str = "en_core_web_lg", threshold: float = 0.8) -> None:
        try:
            import spacy

            self.nlp = spacy.load(model)
        except (ImportError, OSError) as err:
            raise RecordError(
                f"similarity backend 'spacy' needs spaCy and its {model} model installed ({err})"
            ) from err
        self.name = f"spacy:{model}>{threshold}"
        self.threshold = threshold
        self._docs: dict[str, object] = {}

    def _doc(self, word: str):
        if word not in self._docs:
            self._docs[word] = self.nlp(word)
        return self._docs[word]

    def similar(self, a: str, b: str) -> bool:
        return self._doc(a).similarity(self._doc(b)) > self.threshold


def build_similarity(name: str) -> Similarity:
    """`none` (default) or `spacy`."""
    if name == "none":
        return NoSimilarity()
    if name == "spacy":
        return SpacySimilarity()
    raise ValueError(f"unknown similarity backend {name!r}; choose none or spacy")


class ReferenceNouns:
    """inference.py's `extract_nouns`: `lemmatize(word)` for every (word, tag) of `tag(text)` whose tag starts
    with NN. `tag` and `lemmatize` are NLTK's (`nltk_nouns()`) for reference numbers."""

    def __init__(self, tag: Callable[[str], list[tuple[str, str]]], lemmatize: Callable[[str], str], name: str):
        self.tag, self.lemmatize, self.name = tag, lemmatize, name

    def __call__(self, text: str) -> list[str]:
        return [self.lemmatize(word) for word, pos in self.tag(text) if pos.startswith("NN")]


def nltk_nouns() -> ReferenceNouns:
    """The reference noun extractor: `nltk.word_tokenize` + `nltk.pos_tag` + `WordNetLemmatizer().lemmatize`."""
    nltk = load_nltk("AMBER reference extraction")
    from nltk.stem import WordNetLemmatizer

    def tag(text: str) -> list[tuple[str, str]]:
        return nltk.pos_tag(nltk.word_tokenize(text))

    return ReferenceNouns(tag, WordNetLemmatizer().lemmatize, f"nltk-{nltk.__version__}+wordnet")
