"""AMBER scored as its reference `inference.py` scores it, on an excerpt of the real annotation files.

The excerpt (tests/eval/data/amber_excerpt, Apache-2.0, see its NOTICE) keeps AMBER's real type names:
"discriminative-hallucination" (existence), "discriminative-attribute-{state,number,action}",
"discriminative-relation" and "relation". Expected values are worked by hand from inference.py (line references are
to junyangwang0410/AMBER@534babf, inference.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dama.eval import amber

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
    with pytest.raises(amber.RecordError, match=r"annotations.json: id 1 has unknown type 'discriminative-colour'"):
        amber.score(write_responses("a.jsonl", {1: "No"}), folder, "d")
