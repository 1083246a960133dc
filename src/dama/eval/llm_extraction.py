"""The llm extraction mode of CHAIR and Object HalBench: RLAIF-V's extraction prompt and its reduction of judge-listed
object names to CHAIR words.

As RLHF-V/RLAIF-V's eval/eval_gpt_obj_halbench.py (the protocol behind published Object HalBench numbers): a text
judge gets RLAIF-V's extraction prompt as a system message (`get_gpt_resp`) and lists the objects as a JSON list.
Each listed name is read as "a <name>" by a POS tagger (`get_pred_objs_match`): if any two-word COCO name (a bigram
of the merge table) occurs, those names are kept and nothing else of that entry ("hot dog stand" -> hot dog;
`get_double_words_only`); otherwise every maximal run of nouns (NN, NNS, NNP, NNPS), as lemmas ("a group of people"
-> group, people -> person; "person riding a bike" -> person, bike -> bicycle; `postagging`). Names are
de-duplicated per response, then the toilet/seat rule and the synonym mapping apply (`caption_objects_to_coco_objects`,
here `ChairEngine.select`). The reference tagger is spaCy's `en_core_web_trf` (`SpacyTagger`); without it an offline
approximation (`ApproxTagger`) marks as nouns the words that are not closed-class, not common adjectives and not
-ing/-ed/-ly forms (vocabulary words are always nouns).

The scoring loop that sends the prompts and counts judge failures is `object_halbench.score_responses`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Protocol

from dama.eval.chair import ChairEngine, Mention, is_word, tokenize
from dama.eval.records import RecordError


class Judge(Protocol):
    """What llm mode needs of a judge (`dama.eval.judge.build_judge` returns one)."""

    judge_id: str

    def complete(self, prompt: str, role: str = "user") -> str: ...


# RLAIF-V's extraction prompt (eval/eval_gpt_obj_halbench.py, `prompt_template`), word for word; it is filled with
# str.replace ("{question}", then "{answer}") and sent as the only message, with role "system".
RLAIF_V_PROMPT = """You are an expert in image objects extraction according to a question answer pair. We asked an examiner to answer a question about a picture.

[Start of Question]

<image> {question}

[End of Question]

[Start of Examiner's Answer]

{answer}

[End of Examiner's Answer]


Assume that the answer is correct, please identify all visible objects that are directly shown in the image. Please following the instructions in below:

1. You should only mention objects that are explicitly mentioned in the examiner's answer.
2. You should only extract the object names without the attributes of the objects.
3. You should not include the properties of the object, like the color, material, etc. as part of the object name in your result.
4. Make your answer precise. Present the results in a JSON list format: [\"object_1\", ..., \"object_n\"].
5. You should return an empty JSON list () if no visible objects can be found.
"""  # noqa: E501

EXTRACTION_PROMPT = """You extract object names from an answer about an image.

Question: {question}

Answer: {answer}

List every physical object the answer says is visible in the image. Rules:
1. Only objects the answer explicitly mentions; do not add any.
2. Give object names only, without attributes (no colours, materials, sizes or counts).
3. Reply with a JSON list of strings and nothing else, for example ["dog", "frisbee", "tree"].
4. Reply [] if the answer mentions no visible object.
"""
# prompt name -> (template, message role); "rlaif-v" is the reference, "dama-v1" this project's earlier wording
PROMPTS = {"rlaif-v": (RLAIF_V_PROMPT, "system"), "dama-v1": (EXTRACTION_PROMPT, "user")}
PROMPT_SHA256 = {name: hashlib.sha256(template.encode()).hexdigest() for name, (template, _) in PROMPTS.items()}
NOUN_TAGS = frozenset({"NN", "NNS", "NNP", "NNPS"})
REFERENCE_TAGGER_MODEL = "en_core_web_trf"


def fill_prompt(name: str, question: str, answer: str) -> tuple[str, str]:
    """(prompt text, message role) of prompt `name` for one question/answer pair."""
    template, role = PROMPTS[name]
    return template.replace("{question}", question).replace("{answer}", answer), role


class Tagger(Protocol):
    """Tokens of a text as (lemma, Penn Treebank tag) pairs."""

    name: str

    def tag(self, text: str) -> list[tuple[str, str]]: ...


class SpacyTagger:
    """RLAIF-V's tagger: spaCy `en_core_web_trf`, `token.lemma_` and `token.tag_`; needs spaCy and the model."""

    def __init__(self, model: str = REFERENCE_TAGGER_MODEL) -> None:
        try:
            import spacy

            self.nlp = spacy.load(model)
        except (ImportError, OSError) as err:
            raise RecordError(
                f"tagger 'spacy' needs spaCy and its {model} model installed "
                f"(pip install 'dama[eval-reference]' && python -m spacy download {model}): {err}"
            ) from err
        self.name = f"spacy:{model}"

    def tag(self, text: str) -> list[tuple[str, str]]:
        return [(token.lemma_, token.tag_) for token in self.nlp(text)]


# Words the offline approximation never calls nouns: closed-class words and common attributes.
_CLOSED_CLASS = frozenset(
    """a an the this that these those some any each every all both either neither no another other such
    of with on in at near under behind from for to by into onto over above below beside next between among around
    through across along against inside outside up down off out about as like than and or but nor so yet
    i you he she it we they me him her us them my your his its our their mine yours hers ours theirs
    is are was were be been being am do does did has have had can could will would shall should may might must
    not very too also just only there here what which who whom whose when where why how
    one two three four five six seven eight nine ten eleven twelve several many few more most much lot lots""".split()
)
_ATTRIBUTES = frozenset(
    """red orange yellow green blue purple pink brown black white gray grey silver golden gold beige dark light
    bright colorful large big small little tiny huge tall short long wide narrow thick thin round square flat
    old new young wooden metallic plastic glass leather paper full empty open closed clean dirty wet dry hot cold
    left right front back top bottom middle center side other various different same single double
    striped plaid""".split()
)
_VERB_LIKE = re.compile(r"(?:ing|ed|ly)$")


class ApproxTagger:
    """Offline stand-in for the reference tagger: CHAIR-table lemmas; a word is a noun ("NN") unless it is
    punctuation, closed-class, a common attribute or an -ing/-ed/-ly form, and every vocabulary word is a noun.
    Two-word names need no tags (`bigram_names` reads lemmas only), so "hot" in "hot dog" is not made a noun."""

    name = "approx"

    def __init__(self, engine: ChairEngine) -> None:
        self.engine = engine

    def tag(self, text: str) -> list[tuple[str, str]]:
        tagged = []
        for token in tokenize(text):
            lemma = self.engine.singular.get(token, token)
            if lemma in self.engine.inverse:
                noun = True
            elif not is_word(token) or token in _CLOSED_CLASS or token in _ATTRIBUTES:
                noun = False
            else:
                noun = not _VERB_LIKE.search(token)
            tagged.append((lemma, "NN" if noun else "X"))
        return tagged


def build_tagger(name: str, engine: ChairEngine) -> Tagger:
    """`spacy` (the reference; an error if not installed), `approx`, or `auto` (spacy when installed, else approx)."""
    if name == "spacy":
        return SpacyTagger()
    if name == "approx":
        return ApproxTagger(engine)
    if name == "auto":
        try:
            return SpacyTagger()
        except RecordError:
            return ApproxTagger(engine)
    raise ValueError(f"unknown tagger {name!r}; choose auto, spacy or approx")


def parse_object_list_rlaif_v(text: str) -> list[str] | None:
    """A judge's reply read as RLAIF-V reads it (`eval/eval_gpt_obj_halbench.py`, `extract_json_content` and
    `parse_object_list`): the JSON in a "```json" block (newline after the fence and before the closing one); if there
    is none or it is not JSON and the reply contains '["', its last line parsed as JSON; otherwise unreadable (None),
    which RLAIF-V retries.
    A bare `[]` is therefore unreadable, as there. The result must be a list of strings (None otherwise)."""
    match = re.search(r"```json\n(.*?)\n```", text, flags=re.DOTALL)
    try:
        if match is None:
            raise ValueError("no json block")
        names = json.loads(match.group(1))
    except ValueError:  # no block, or a block that is not JSON: RLAIF-V's bare `except` tries the last line
        if '["' not in text:
            return None
        try:
            names = json.loads(text.strip().split("\n")[-1])
        except ValueError:
            return None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        return None
    return names


def parse_object_list(text: str) -> list[str] | None:
    """The JSON list of strings in a judge's reply (the first `[...]`), or None if there is none."""
    match = re.search(r"\[.*?\]", text, flags=re.DOTALL)
    if match is None:
        return None
    try:
        names = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        return None
    return names


# prompt name -> (name, function) of the reader of its judge's replies: the reference prompt is read as the
# reference reads it
REPLY_PARSERS = {"rlaif-v": ("rlaif-v", parse_object_list_rlaif_v), "dama-v1": ("first-list", parse_object_list)}


def bigram_names(engine: ChairEngine, lemmas: Sequence[str]) -> list[str]:
    """The merge-table names found scanning `lemmas` one bigram at a time (RLAIF-V's `get_double_words_only`)."""
    found, i = [], 0
    while i < len(lemmas):
        name = engine.multiword.get(tuple(lemmas[i : i + 2]))
        if name is not None:
            found.append(name)
            i += 2
        else:
            i += 1
    return found


def noun_runs(tagged: Sequence[tuple[str, str]]) -> list[str]:
    """Every maximal run of noun-tagged tokens, its lemmas joined by spaces (RLAIF-V's `postagging`)."""
    runs, current = [], []
    for lemma, tag in tagged:
        if tag in NOUN_TAGS:
            current.append(lemma)
        elif current:
            runs.append(" ".join(current))
            current = []
    if current:
        runs.append(" ".join(current))
    return runs


def reduce_names(engine: ChairEngine, names: Sequence[str], tagger: Tagger) -> list[str]:
    """Judge-listed names -> candidate object words, de-duplicated in order (RLAIF-V's `get_pred_objs_match`)."""
    refined: list[str] = []
    for name in names:
        tagged = tagger.tag(f"a {name}")
        doubles = bigram_names(engine, [lemma for lemma, _ in tagged])
        refined += doubles if doubles else noun_runs(tagged)
    return list(dict.fromkeys(refined))


def llm_mentions(engine: ChairEngine, names: Sequence[str], tagger: Tagger) -> list[Mention]:
    """Judge-listed names -> mentions: `reduce_names`, then the toilet/seat rule and the synonym map."""
    unique = reduce_names(engine, names, tagger)
    return engine.select([(word, position) for position, word in enumerate(unique)])
