"""Small behaviours of the reference scorers, worked by hand from their code.

References: POPE evaluate.py (AoiDragon/POPE), the original CHAIR utils/chair.py (LisaAnne/Hallucination) and
RLAIF-V's eval/eval_gpt_obj_halbench.py (RLHF-V/RLAIF-V).
"""

from __future__ import annotations

import pytest

from dama.eval import chair as chair_module
from dama.eval import pope
from dama.eval.chair import ORIGINAL, ChairEngine, reference_length
from dama.eval.coco import CocoGroundTruth


@pytest.mark.parametrize(
    ("answer", "parsed"),
    [
        # evaluate.py: text.split('.')[0], .replace(',', ''), .split(' '), then 'No'/'not'/'no' in words
        ("There is\nno dog.", "yes"),  # ["There", "is\nno", "dog"]: no token equals "no"
        ("No\tthere is.", "yes"),  # ["No\tthere", "is"]
        ("There is  not a dog.", "no"),  # double space: ["There", "is", "", "not", "a", "dog"]
        ("Yes\nNo", "yes"),  # one token "Yes\nNo"
    ],
)
def test_pope_splits_on_single_spaces(answer, parsed):
    assert pope.parse_answer(answer) == parsed


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A dog  runs. ", 4),  # strip -> "A dog  runs." -> ["A", "dog", "", "runs."]
        ("Two dogs.\nA cat.", 3),  # ["Two", "dogs.\nA", "cat."]
        ("", 1),  # [""]
    ],
)
def test_avg_len_is_rlaif_v_single_space_count(text, expected):
    # eval_gpt_obj_halbench.py: total_cap_word_num += len(cap.strip().split(" "))
    assert reference_length(text) == expected


@pytest.mark.parametrize("version", [ORIGINAL, "chair-refined-v1"])
def test_merging_is_bigram_only(version):
    engine = ChairEngine(version=version)
    # caption_to_words joins words[i:i+2] only: "stove top oven" (a synonym of oven) never merges; "stove" and
    # "oven" are both synonyms of oven -> two mentions. "hot dog" is a bigram and merges.
    mentions = engine.extract("A stove top oven and a hot dog.")
    assert [(m.word, m.cls) for m in mentions] == [("stove", "oven"), ("oven", "oven"), ("hot dog", "hot dog")]


def test_original_list_strips_each_line():
    original = ChairEngine(version=ORIGINAL)
    # synonyms.txt lines 20 and 58 end in "bison " and "chesterfield "; s.strip() removes the space
    assert [m.cls for m in original.extract("A bison on a chesterfield.")] == ["cow", "couch"]
    # line 56 "cake,  cheesecake" keeps " cheesecake" after split(', '): never a word
    assert original.extract("A cheesecake.") == []


def test_ground_truth_cache_key_follows_synonyms_and_rules(coco_dir, tmp_path, monkeypatch):
    def cache_name(engine):
        return CocoGroundTruth(coco_dir, engine, tmp_path).cache_path.name

    base = cache_name(ChairEngine())
    assert cache_name(ChairEngine()) == base
    assert cache_name(ChairEngine(rules=False)) != base  # same list and version label, other rules
    monkeypatch.setattr(chair_module, "RULES_VERSION", "changed")
    assert cache_name(ChairEngine()) != base
