"""Object HalBench llm mode: RLAIF-V's reduction of judge-listed names and its prompt, worked by hand.

Reference: RLHF-V/RLAIF-V eval/eval_gpt_obj_halbench.py — `get_pred_objs_match` (each listed `text` becomes
`nlp(f"a {text}")`; `get_double_words_only` keeps merge-table bigrams of the token lemmas; if there are none,
`postagging` keeps every maximal run of NN/NNS/NNP/NNPS lemmas; results de-duplicated in order),
`caption_objects_to_coco_objects` (toilet/seat rule, then synonyms), `get_gpt_resp` (the prompt as one message with
role "system"; answers of ≤3 words get no call).
"""

from __future__ import annotations

import pytest

from dama.eval.chair import ChairEngine
from dama.eval.llm_extraction import (
    PROMPTS,
    RLAIF_V_PROMPT,
    ApproxTagger,
    bigram_names,
    build_tagger,
    fill_prompt,
    llm_mentions,
    noun_runs,
    reduce_names,
)
from dama.eval.records import RecordError


class HandTagger:
    """The fixture: Penn tags and lemmas written by hand as a POS tagger gives them for these phrases."""

    name = "hand"
    TAGS = {
        "a a group of people": [("a", "DT"), ("a", "DT"), ("group", "NN"), ("of", "IN"), ("people", "NNS")],
        "a person riding a bike": [("a", "DT"), ("person", "NN"), ("ride", "VBG"), ("a", "DT"), ("bike", "NN")],
        "a hot dog stand": [("a", "DT"), ("hot", "JJ"), ("dog", "NN"), ("stand", "NN")],
        "a man with a teddy bear": [("a", "DT"), ("man", "NN"), ("with", "IN"), ("a", "DT"), ("teddy", "NN"),
                                    ("bear", "NN")],
        "a car door": [("a", "DT"), ("car", "NN"), ("door", "NN")],
        "a a car door": [("a", "DT"), ("a", "DT"), ("car", "NN"), ("door", "NN")],
        "a red car": [("a", "DT"), ("red", "JJ"), ("car", "NN")],
        "a toilet": [("a", "DT"), ("toilet", "NN")],
        "a seat": [("a", "DT"), ("seat", "NN")],
    }  # fmt: skip

    def tag(self, text):
        return self.TAGS[text]


@pytest.fixture(scope="module")
def engine():
    return ChairEngine()


@pytest.mark.parametrize(
    ("name", "words", "classes"),
    [
        # the judge's "a group of people" is read as "a a group of people"; no bigram of it is in the merge table; noun runs: "group", "people"; only people is
        # a COCO synonym (of person)
        ("a group of people", ["group", "people"], ["person"]),
        # runs "person" and "bike" (VBG and DT break runs); bike is a synonym of bicycle
        ("person riding a bike", ["person", "bike"], ["person", "bicycle"]),
        # the bigram "hot dog" is in the merge table: it alone is kept, "stand" is never looked at
        ("hot dog stand", ["hot dog"], ["hot dog"]),
        # a bigram wins over the noun runs of the same entry: "man" is dropped, as in the reference
        ("man with a teddy bear", ["teddy bear"], ["teddy bear"]),
        # one run "car door", not a COCO name: no object (not "car", not "door")
        ("car door", ["car door"], []),
        ("red car", ["car"], ["car"]),
    ],
)
def test_reference_reduction_with_a_hand_tagged_fixture(engine, name, words, classes):
    assert reduce_names(engine, [name], HandTagger()) == words
    assert [m.cls for m in llm_mentions(engine, [name], HandTagger())] == classes


@pytest.mark.parametrize(
    ("name", "classes"),
    [
        ("a group of people", ["person"]),
        ("person riding a bike", ["person", "bicycle"]),
        ("hot dog stand", ["hot dog"]),
        ("man with a teddy bear", ["teddy bear"]),
        ("car door", []),
        ("two red cars", ["car"]),
        ("traffic lights", ["traffic light"]),
    ],
)
def test_offline_approximation_keeps_noun_runs_and_prefers_two_word_names(engine, name, classes):
    assert [m.cls for m in llm_mentions(engine, [name], ApproxTagger(engine))] == classes


def test_pieces_and_toilet_seat_rule(engine):
    assert bigram_names(engine, ["a", "hot", "dog", "stand"]) == ["hot dog"]
    assert bigram_names(engine, ["a", "baby", "elephant"]) == ["elephant"]  # "baby X" -> X (merge rules)
    assert noun_runs([("a", "DT"), ("x", "NN"), ("y", "NNS"), ("of", "IN"), ("z", "NNP")]) == ["x y", "z"]
    # per response, not per entry: toilet and seat listed separately -> seat dropped
    assert [m.cls for m in llm_mentions(engine, ["toilet", "seat"], HandTagger())] == ["toilet"]
    # de-duplicated across entries
    assert reduce_names(engine, ["red car", "a car door", "red car"], HandTagger()) == ["car", "car door"]


def test_rlaif_v_prompt_is_filled_by_replace_and_sent_as_system():
    text, role = fill_prompt("rlaif-v", "Describe {this}.", "A dog {and} a cat.")
    assert role == "system" and PROMPTS["rlaif-v"][1] == "system"
    assert "<image> Describe {this}.\n\n[End of Question]" in text
    assert "[Start of Examiner's Answer]\n\nA dog {and} a cat.\n\n[End of Examiner's Answer]" in text
    assert text.startswith("You are an expert in image objects extraction") and RLAIF_V_PROMPT.endswith("found.\n")
    assert fill_prompt("dama-v1", "Q", "A")[1] == "user"


def test_tagger_choice(engine):
    assert build_tagger("approx", engine).name == "approx"
    try:
        import spacy  # noqa: F401
    except ImportError:
        with pytest.raises(RecordError, match="needs spaCy and its en_core_web_trf model"):
            build_tagger("spacy", engine)
        assert build_tagger("auto", engine).name == "approx"
    with pytest.raises(ValueError, match="unknown tagger"):
        build_tagger("nltk", engine)
