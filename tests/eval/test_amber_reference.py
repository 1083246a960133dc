"""AMBER scored as its reference `inference.py` scores it, on an excerpt of the real annotation files.

The excerpt (tests/eval/data/amber_excerpt, Apache-2.0, see its NOTICE) keeps AMBER's real type names:
"discriminative-hallucination" (existence), "discriminative-attribute-{state,number,action}",
"discriminative-relation" and "relation". Expected values are worked by hand from inference.py (line references are
to junyangwang0410/AMBER@534babf, inference.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from dama.eval import amber, amber_annotations
from dama.eval.records import RecordError

EXCERPT = Path(__file__).parent / "data" / "amber_excerpt"

# AMBER's response format is "Yes" or "No" (README, "Responses Generation").
ANSWERS = {
    1005: "Yes",  # attribute-state, truth yes: correct
    1006: "No",  # attribute-state, truth no: correct, a true No
    1013: "No",  # attribute-number, truth yes: wrong, a false No
    1014: "No",  # attribute-number, truth no: true No
    1017: "Yes",  # attribute-action, truth yes: correct
    1018: "Yes",  # attribute-action, truth no: wrong, a missed No
    8633: "No",  # discriminative-hallucination (existence), truth no: true No
    8634: "No",  # existence, truth no: true No
    8635: "Yes",  # existence, truth no: missed No
    13557: "Yes",  # discriminative-relation, truth yes: correct
    13559: "No",  # discriminative-relation, truth yes: false No
    13558: "No",  # relation, truth no: true No
    13560: "No",  # relation, truth no: true No
}


def test_real_type_names_are_scored_as_inference_py_groups_them(write_responses):
    _, result, details = amber.score(write_responses("amber.jsonl", ANSWERS), EXCERPT, "d")
    assert result["partial"] is False and result["extraction"]["n_not_exact_yes_no"] == 0
    m = result["metrics"]
    # Overall (inference.py L270-273): n 13, correct 9, answered No 8, truth No 8, true No 6.
    assert m["n"] == 13
    assert m["accuracy"] == pytest.approx(900 / 13)
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((75.0, 75.0, 75.0))
    # existence = "discriminative-hallucination" only (L181): 3 items, truth No 3, answered No 2, true No 2
    assert m["existence/n"] == 3
    assert (m["existence/precision"], m["existence/recall"]) == pytest.approx((100.0, 200 / 3))
    assert m["existence/f1"] == pytest.approx(80.0)
    # relation = every other non-generative type, "discriminative-relation" and "relation" (the else branch, L183):
    # 4 items, correct 3, answered No 3, truth No 2, true No 2.
    assert m["relation/n"] == 4
    assert (m["relation/accuracy"], m["relation/precision"], m["relation/recall"]) == pytest.approx(
        (75.0, 200 / 3, 100.0)
    )
    # attribute = state + number + action (L292-295): 6 items, correct 4, answered No 3, truth No 3, true No 2
    assert m["attribute/n"] == 6 and m["attribute-state/n"] == 2 and m["attribute-number/n"] == 2
    assert m["attribute/f1"] == pytest.approx(200 / 3)
    assert {d["type"] for d in details} == {
        "discriminative-attribute-state",
        "discriminative-attribute-number",
        "discriminative-attribute-action",
        "discriminative-hallucination",
        "discriminative-relation",
        "relation",
    }


def test_reported_values_follow_inference_py_rounding_and_epsilon(write_responses):
    m = amber.score(write_responses("amber.jsonl", ANSWERS), EXCERPT, "d")[1]["metrics"]
    # data/metrics.txt starts every *_num at 0.001; inference.py rounds A, P, R to one decimal (L270-272) and
    # F1 = round(2pr / (p + r + 0.0001) * 100, 1) from the rounded values (L273).
    # Overall: A = round(9 / 13.001 * 100, 1) = round(69.225, 1) = 69.2; P = R = round(6 / 8.001 * 100, 1) = 75.0;
    # F1 = round(2 * .75 * .75 / (1.5001) * 100, 1) = round(74.995, 1) = 75.0
    assert (m["accuracy_reported"], m["precision_reported"], m["recall_reported"]) == (69.2, 75.0, 75.0)
    assert m["f1_reported"] == 75.0
    # Existence uses epsilon 0.001 (L284): P = round(2 / 2.001 * 100, 1) = round(99.950, 1) = 100.0,
    # R = round(2 / 3.001 * 100, 1) = round(66.644, 1) = 66.6, F1 = round(2 * 1.0 * .666 / (1.666 + .001) * 100, 1)
    # = round(79.904, 1) = 79.9 (the exact F1 is 80.0); A = round(2 / 3.001 * 100, 1) = 66.6.
    assert (m["existence/precision_reported"], m["existence/recall_reported"]) == (100.0, 66.6)
    assert m["existence/f1_reported"] == 79.9 and m["existence/accuracy_reported"] == 66.6
    # Relation (L330-333): A = round(3 / 4.001 * 100, 1) = round(74.981, 1) = 75.0, P = round(2 / 3.001 * 100, 1)
    # = 66.6, R = round(2 / 2.001 * 100, 1) = 100.0, F1 = round(2 * .666 * 1.0 / (1.666 + .0001) * 100, 1)
    # = round(79.947, 1) = 79.9.
    assert (m["relation/accuracy_reported"], m["relation/precision_reported"]) == (75.0, 66.6)
    assert (m["relation/recall_reported"], m["relation/f1_reported"]) == (100.0, 79.9)
    # Attribute pools three counters, each starting at 0.001 (L292-294): A = round(4 / 6.003 * 100, 1)
    # = round(66.633, 1) = 66.6 (66.7 with a single 0.001); P = R = round(2 / 3.003 * 100, 1) = round(66.600, 1)
    # = 66.6; F1 = round(2 * .666 * .666 / (1.332 + .0001) * 100, 1) = round(66.595, 1) = 66.6 (L295).
    assert (m["attribute/accuracy_reported"], m["attribute/precision_reported"]) == (66.6, 66.6)
    assert m["attribute/f1_reported"] == 66.6
    # A single attribute type starts at 0.001 (L296-299): state, 2 items both right, one true No:
    # A = round(2 / 2.001 * 100, 1) = 100.0, P = R = round(1 / 1.001 * 100, 1) = 99.9,
    # F1 = round(2 * .999 * .999 / (1.998 + .0001) * 100, 1) = round(99.895, 1) = 99.9
    assert (m["attribute-state/accuracy_reported"], m["attribute-state/f1_reported"]) == (100.0, 99.9)


def test_unknown_type_is_an_error_naming_the_file_and_id(tmp_path, write_responses):
    folder = tmp_path / "amber"
    folder.mkdir()
    for name in ("relation.json", "safe_words.txt"):
        (folder / name).write_bytes((EXCERPT / name).read_bytes())
    (folder / "annotations.json").write_text(json.dumps([{"id": 1, "type": "discriminative-colour", "truth": "no"}]))
    with pytest.raises(RecordError, match=r"annotations.json: id 1 has unknown type 'discriminative-colour'"):
        amber.score(write_responses("a.jsonl", {1: "No"}), folder, "d")


class HandNouns:
    """The fixture for inference.py's extract_nouns (L32-37): NLTK-style tokens with Penn tags written by hand as
    nltk.pos_tag gives them, and WordNetLemmatizer's lemmas (checked with NLTK 3.10 over WordNet 3.0): "men" stays
    "men", "flowers" -> "flower"; nothing is lower-cased and WordNet has no capitalised entries, so "Men", "Leaves",
    "Trees", "Boat" stay as they are."""

    name = "hand-tagged"
    TAGGED = {
        "Men can be seen near the lake. Leaves cover the Trees, and a dog sits on the ground.": [
            ("Men", "NNS"), ("can", "MD"), ("be", "VB"), ("seen", "VBN"), ("near", "IN"), ("the", "DT"),
            ("lake", "NN"), (".", "."), ("Leaves", "NNS"), ("cover", "VBP"), ("the", "DT"), ("Trees", "NNS"),
            (",", ","), ("and", "CC"), ("a", "DT"), ("dog", "NN"), ("sits", "VBZ"), ("on", "IN"), ("the", "DT"),
            ("ground", "NN"), (".", "."),
        ],
        "A Boat and a man under the bridge; an individual walks on the street, with flowers on the ground.": [
            ("A", "DT"), ("Boat", "NNP"), ("and", "CC"), ("a", "DT"), ("man", "NN"), ("under", "IN"),
            ("the", "DT"), ("bridge", "NN"), (";", ":"), ("an", "DT"), ("individual", "NN"), ("walks", "VBZ"),
            ("on", "IN"), ("the", "DT"), ("street", "NN"), (",", ","), ("with", "IN"), ("flowers", "NNS"),
            ("on", "IN"), ("the", "DT"), ("ground", "NN"), (".", "."),
        ],
    }  # fmt: skip
    LEMMA = {"flowers": "flower"}  # every other noun here is its own lemma

    def __call__(self, text):
        return [self.LEMMA.get(word, word) for word, tag in self.TAGGED[text] if tag.startswith("NN")]


class HandSimilarity:
    """spaCy similarity > 0.8 (L25-29) as a fixture: a word is similar to itself, and "street" to "bridge"."""

    name = "hand"

    def similar(self, a, b):
        return a == b or {a, b} == {"street", "bridge"}


def test_generative_reference_extraction_by_hand(write_responses):
    texts = {1: list(HandNouns.TAGGED)[0], 2: list(HandNouns.TAGGED)[1]}
    _, result, details = amber.score(
        write_responses("amber.jsonl", texts), EXCERPT, "g", HandSimilarity(), "reference", HandNouns()
    )
    # id 1 (truth sky forest grass person lake mountain road; hallu cloud sun bird dog flower):
    # NN* lemmas Men, lake, Leaves, Trees, dog, ground; in relation.json words (L93-95): lake, dog, ground.
    # "can" is MD: no noun. lake: a truth word (L122-130) -> covers lake. dog: not safe; a hallu word (L132-139)
    # -> hits dog; similarity to hallu words (L141-147) -> dog again; to truth words (L150-159): none ->
    # hallucinated (L161). ground: associate of grass (first in safe_words order) -> covers grass.
    assert details[0]["nouns"] == ["lake", "dog", "ground"]
    assert details[0]["hallucinated"] == ["dog"]
    assert details[0]["covered"] == ["grass", "lake"] and details[0]["hit_hallu"] == ["dog"]
    # id 2 (truth sky man ship ship forest bridge mountain cloud lake building; hallu plane bird sun paddle ground):
    # lemmas Boat (capitalised: not a relation.json word), man, bridge, individual, street, flower, ground.
    # man, bridge: truth words -> covered. individual: global safe word (L119) -> skipped, still a mention.
    # street: no exact match; similar to "bridge" (a truth word) -> covers bridge, not hallucinated.
    # flower: nothing -> hallucinated. ground: a hallu word -> hit, and hallucinated.
    assert details[1]["nouns"] == ["man", "bridge", "individual", "street", "flower", "ground"]
    assert details[1]["hallucinated"] == ["flower", "ground"]
    assert details[1]["covered"] == ["bridge", "man"] and details[1]["hit_hallu"] == ["ground"]
    m = result["metrics"]
    # CHAIR = 3 / 9; Cover = (2 + 2) / (7 + 10); Hal = 2 / 2; Cog = (1 + 1) / (5 + 5)
    assert (m["CHAIR"], m["Cover"], m["Hal"], m["Cog"]) == pytest.approx((100 / 3, 400 / 17, 100.0, 20.0))
    # L259-262 with counters from 0.001: round(3 / 9.001 * 100, 1) = 33.3, round(4 / 17.001 * 100, 1) = 23.5,
    # round(100 - 0 / 2.001 * 100, 1) = 100.0, round(2 / 10.001 * 100, 1) = 20.0
    assert (m["CHAIR_reported"], m["Cover_reported"], m["Hal_reported"], m["Cog_reported"]) == (
        33.3,
        23.5,
        100.0,
        20.0,
    )
    assert result["extraction"] == {
        "noun_extraction": "reference",
        "tagger": "hand-tagged",
        "similarity": "hand",
        "reference_exact": False,
    }


def test_offline_fallback_does_not_count_the_modal_can(write_responses):
    data = amber_annotations.Amber(EXCERPT)
    assert "can" in data.vocabulary  # relation.json has the object "can"
    assert data.nouns("A dog can be seen. It can not fly.") == ["dog"]
    assert data.nouns("A can of soda, two cans and a trash can.") == ["can", "can", "can"]
    _, result, _ = amber.score(write_responses("a.jsonl", {1: "A dog can be seen."}), EXCERPT, "g", extraction="auto")
    assert result["extraction"]["noun_extraction"] in ("vocab-match", "reference")  # recorded either way


def test_reference_extraction_without_its_resources_is_an_error(write_responses, monkeypatch):
    # NLTK made unimportable (a None entry in sys.modules), so the error path runs whether or not it is installed.
    for name in [m for m in sys.modules if m == "nltk" or m.startswith("nltk.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "nltk", None)
    with pytest.raises(RecordError, match=r"needs NLTK .*dama\[eval-reference\]"):
        amber.score(write_responses("a.jsonl", {1: "A dog."}), EXCERPT, "g", extraction="reference")
