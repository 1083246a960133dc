"""NLTK, as the reference scorers call it: loaded on demand, with one error that says what to install.

Two reference scorers run NLTK (both need the `eval-reference` extra and NLTK's data, docs/eval.md):
- AMBER's inference.py tags responses (`nltk.pos_tag(nltk.word_tokenize(text))`) and lemmatises the NN* words with
  WordNet (`dama.eval.amber_nlp.nltk_nouns`);
- RLAIF-V's Object HalBench (eval/eval_gpt_obj_halbench.py, `CHAIR.caption_to_words`) lower-cases a text, tokenises
  it with `nltk.word_tokenize` and lemmatises every token with WordNet's noun lemmatiser, for the COCO reference
  captions in both modes and for the responses in rule mode (`WordNetTokens`).
"""

from __future__ import annotations

from types import ModuleType

from dama.eval.records import RecordError

# NLTK's data packages: the tokeniser (punkt for NLTK < 3.9, punkt_tab after), the tagger (likewise) and WordNet
TOKENIZER_DATA = "punkt punkt_tab"
TAGGER_DATA = "averaged_perceptron_tagger averaged_perceptron_tagger_eng"
WORDNET_DATA = "wordnet"


def load_nltk(purpose: str, tagger: bool = True) -> ModuleType:
    """`nltk`, with its tokeniser, WordNet and (if `tagger`) tagger data checked now, not mid-run; `RecordError`
    saying what is missing and how to install it otherwise."""
    data = " ".join([TOKENIZER_DATA, *([TAGGER_DATA] if tagger else []), WORDNET_DATA])
    try:
        import nltk
        from nltk.stem import WordNetLemmatizer

        tokens = nltk.word_tokenize("A dog.")
        if tagger:
            nltk.pos_tag(tokens)
        WordNetLemmatizer().lemmatize("dogs")
    except (ImportError, LookupError) as err:
        raise RecordError(
            f"{purpose} needs NLTK and its data (pip install 'dama[eval-reference]'; then "
            f"python -m nltk.downloader {data}): {err}"
        ) from err
    return nltk


class WordNetTokens:
    """RLAIF-V's `caption_to_words` front end: `[lemma.lemmatize(w) for w in nltk.word_tokenize(text.lower())]`,
    with `lemma = nltk.wordnet.WordNetLemmatizer()` (noun lemmas for every token, punctuation included)."""

    def __init__(self) -> None:
        nltk = load_nltk("the WordNet lemmatiser (--lemmatizer wordnet)", tagger=False)
        from nltk.stem import WordNetLemmatizer

        self._tokenize, self._lemmatize = nltk.word_tokenize, WordNetLemmatizer().lemmatize
        self.name = f"nltk-{nltk.__version__}+wordnet"

    def __call__(self, text: str) -> list[str]:
        return [self._lemmatize(word) for word in self._tokenize(text.lower())]
