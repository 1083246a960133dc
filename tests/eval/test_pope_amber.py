"""POPE answer parsing and metrics; AMBER generative and discriminative scoring on a hand-checked fixture."""

from __future__ import annotations

import json

import pytest

from dama.eval import amber, amber_annotations, amber_metrics, amber_nlp, pope
from dama.eval.records import RecordError


@pytest.mark.parametrize(
    ("answer", "parsed", "unclear"),
    [
        ("Yes, there is a dog in the image.", "yes", False),
        ("No, there is no dog.", "no", False),
        ("There is not a dog.", "no", False),
        ("No.", "no", False),
        ("no dog", "no", False),
        ("yes, no, maybe", "no", False),  # commas dropped: the "no" token counts
        ("Yes. There is no cat, though.", "yes", False),  # only the first sentence is read
        ("NO", "yes", False),  # POPE's rule is case-sensitive: kept for comparable numbers
        ("I don't know", "yes", True),
        ("Nope", "yes", True),
        ("", "yes", True),
    ],
)
def test_pope_parsing_table(answer, parsed, unclear):
    assert pope.parse_answer(answer) == parsed
    assert pope.is_unclear(answer) is unclear


def _pope_questions(path, labels):
    rows = [{"question_id": i, "image": f"COCO_val2014_{i:012d}.jpg", "text": "Is there a dog?", "label": y}
            for i, y in labels.items()]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_pope_metrics_by_hand(tmp_path, write_responses):
    questions = _pope_questions(tmp_path / "coco_pope_popular.json", {1: "yes", 2: "yes", 3: "no", 4: "no", 5: "no"})
    responses = write_responses(
        "pope.jsonl", {1: "Yes.", 2: "No.", 3: "Yes, there is.", 4: "No", 5: "There is not."}
    )  # TP, FN, FP, TN, TN
    stem, result, details = pope.score(responses, questions)
    assert stem == "pope_popular" and result["split"] == "popular"
    m = result["metrics"]
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (1, 1, 1, 2)
    assert m["accuracy"] == pytest.approx(60.0)
    assert (
        m["precision"] == pytest.approx(50.0) and m["recall"] == pytest.approx(50.0) and m["f1"] == pytest.approx(50.0)
    )
    assert m["yes_ratio"] == pytest.approx(40.0)
    assert result["partial"] is False and details[4]["prediction"] == "no"


def test_pope_bad_inputs(tmp_path, write_responses):
    questions = _pope_questions(tmp_path / "questions.jsonl", {1: "yes", 2: "no"})
    responses = write_responses("pope.jsonl", {1: "Yes."})
    with pytest.raises(RecordError, match="cannot tell the POPE split"):
        pope.score(responses, questions)
    stem, result, _ = pope.score(responses, questions, "random")
    assert result["partial"] is True and result["missing_ids"] == ["2"] and result["metrics"]["tp"] == 1
    with pytest.raises(RecordError, match="not in"):
        pope.score(write_responses("x.jsonl", {1: "Yes", 9: "No"}), questions, "random")
    bad = _pope_questions(tmp_path / "bad.jsonl", {1: "maybe"})
    with pytest.raises(RecordError, match=r"bad.jsonl:1: 'label' must be yes or no"):
        pope.score(responses, bad, "random")


GENERATIVE = {
    # puppy -> dog, lawn -> grass (both covered), tree is a safe word, kitten hits the hallu target cat and is a
    # hallucinated mention, dogs -> dog, "traffic light" (a multi-word vocabulary entry) is hallucinated: 2 of 6.
    1: "A puppy runs on the lawn near a tree and a kitten. The dogs chase a traffic light.",
    # car covers the only truth object; "road" is not in the vocabulary.
    2: "A red car on a road.",
}
DISCRIMINATIVE = {
    3: "Yes, there is.",  # truth yes: correct
    4: "No.",  # truth no: correct (true No)
    5: "Yes",  # truth no: wrong
    6: "No, there are two.",  # truth yes: wrong (false No)
    7: "There is not any.",  # truth no: POPE fallback -> No, correct
}


def test_amber_generative_by_hand(amber_dir, write_responses):
    stem, result, details = amber.score(
        write_responses("amber.jsonl", {**GENERATIVE, **DISCRIMINATIVE}), amber_dir, "g"
    )
    assert stem == "amber-g" and result["n_ignored_other_task"] == 5
    assert details[0]["nouns"] == ["puppy", "lawn", "tree", "kitten", "dog", "traffic light"]
    assert details[0]["hallucinated"] == ["kitten", "traffic light"]
    assert details[0]["covered"] == ["dog", "grass"] and details[0]["hit_hallu"] == ["cat"]
    m = result["metrics"]
    assert m["CHAIR"] == pytest.approx(200 / 7)  # 2 hallucinated of 7 mentions
    assert m["Cover"] == pytest.approx(100.0)  # dog, grass, car
    assert m["Hal"] == pytest.approx(50.0)  # 1 of 2 responses
    assert m["Cog"] == pytest.approx(100 / 3)  # cat of (frisbee, cat, person)
    assert result["extraction"] == {"noun_extraction": "vocab-match", "similarity": "none", "reference_exact": False}


def test_amber_discriminative_by_hand(amber_dir, write_responses):
    _, result, details = amber.score(write_responses("amber.jsonl", {**GENERATIVE, **DISCRIMINATIVE}), amber_dir, "d")
    m = result["metrics"]
    assert m["accuracy"] == pytest.approx(60.0)  # 3 of 5
    assert m["precision"] == pytest.approx(200 / 3)  # 2 true No of 3 No answers
    assert m["recall"] == pytest.approx(200 / 3)  # 2 of 3 truth-No items
    assert m["f1"] == pytest.approx(200 / 3)
    assert m["existence/accuracy"] == 100.0 and m["attribute/accuracy"] == 0.0 and m["attribute/f1"] == 0.0
    assert m["relation/recall"] == 100.0 and m["attribute-number/n"] == 1 and m["existence/n"] == 2
    assert result["extraction"]["n_fallback"] == 1 and details[4]["answer"] == "No"
    assert amber.amber_score(200 / 7, m["f1"]) == pytest.approx(((100 - 200 / 7) + 200 / 3) / 2)


def test_amber_nouns_vocab_match(amber_dir):
    data = amber_annotations.Amber(amber_dir)
    assert data.nouns("Traffic lights, a traffic. Light, dogs; a Kitten's toy") == ["traffic light", "dog", "kitten"]
    assert len(data.vocabulary) == 14  # relation keys and values (annotation objects are among them)


def test_amber_partial_and_bad_inputs(amber_dir, write_responses):
    _, result, _ = amber.score(write_responses("a.jsonl", {1: GENERATIVE[1]}), amber_dir, "g")
    assert result["partial"] is True and result["missing_ids"] == ["2"] and result["metrics"]["n_responses"] == 1
    with pytest.raises(RecordError, match=r"not in .*annotations.json \(first: '99'"):
        amber.score(write_responses("b.jsonl", {1: "A dog.", 99: "A cat."}), amber_dir, "g")
    (amber_dir / "safe_words.txt").unlink()
    with pytest.raises(RecordError, match="safe_words.txt: file not found"):
        amber.score(write_responses("c.jsonl", {1: "A dog."}), amber_dir, "g")
    with pytest.raises(ValueError, match="unknown similarity backend"):
        amber_nlp.build_similarity("glove")


@pytest.mark.parametrize(("answer", "normalized"), [("Yes.", ("Yes", False)), ("no, it is not", ("No", False)),
                                                    ("It is not there", ("No", True)), ("Maybe", ("Yes", True))])  # fmt: skip
def test_amber_yes_no_normalisation(answer, normalized):
    assert amber_metrics.normalize_yes_no(answer) == normalized
