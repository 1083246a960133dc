"""`--extraction reference` against a recorded run of AMBER's own inference.py, response by response.

tests/eval/data/amber_inference_run was written by `tests/eval/amber_inference_record.py` (see its docstring and the
fixture's NOTICE): AMBER's inference.py (junyangwang0410/AMBER@534babf), imported unchanged and run with real NLTK
3.10.4 on 60 synthetic descriptions of the first 60 generative items, once per word similarity of
`amber_inference_record.SIMILARITIES` standing in for spaCy. The expected values are the counters inference.py
itself accumulated (`chair_score`, `chair_num`, `safe_cover_*`, `hallu_cover_*`, `non_hallu_*`) and the values it
printed. NLTK's steps are replayed from the recording (`nltk.json`: the tags of each response and the WordNet lemma
of each NN* word), so the test needs neither NLTK's data nor AMBER's code.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from dama.eval import amber
from dama.eval.amber_annotations import Amber
from dama.eval.amber_nlp import ReferenceNouns
from dama.eval.records import load_responses

RUN = Path(__file__).parent / "data" / "amber_inference_run"
_spec = importlib.util.spec_from_file_location(
    "amber_inference_record", Path(__file__).parent / "amber_inference_record.py"
)
record = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(record)

EXPECTED = json.loads((RUN / "expected.json").read_text(encoding="utf-8"))
NLTK = json.loads((RUN / "nltk.json").read_text(encoding="utf-8"))


def recorded_nouns() -> ReferenceNouns:
    """inference.py's `extract_nouns` with NLTK's tagger and lemmatiser replayed from the recording."""
    return ReferenceNouns(
        tag=lambda text: [tuple(pair) for pair in NLTK["tags"][text]],
        lemmatize=NLTK["lemmas"].__getitem__,
        name=f"recorded-nltk-{NLTK['nltk_version']}+wordnet",
    )


class StandInSimilarity:
    """The word similarity the recorded run gave spaCy's place, with inference.py's threshold (> 0.8)."""

    def __init__(self, name: str) -> None:
        self.name, self._similarity = f"stand-in:{name}>0.8", record.SIMILARITIES[name]

    def similar(self, a: str, b: str) -> bool:
        return self._similarity(a, b) > 0.8


def counters(detail: dict) -> list[int]:
    """One response's contribution to inference.py's counters, from `Amber.reference_item`'s record."""
    hallucinated = len(detail["hallucinated"])
    return [
        hallucinated,  # chair_score += sum(safe_flag_list)
        len(detail["nouns"]),  # chair_num += len(safe_flag_list): every relation.json word, safe words included
        detail["n_covered"],  # safe_cover_score
        detail["n_truth"],  # safe_cover_num
        detail["n_hit_hallu"],  # hallu_cover_score
        detail["n_hallu"],  # hallu_cover_num
        int(hallucinated == 0),  # non_hallu_score
        1,  # non_hallu_num
    ]


def test_the_fixture_records_what_the_test_replays():
    assert EXPECTED["counters"] == list(record.COUNTERS)
    assert set(EXPECTED) - {"counters"} == set(record.SIMILARITIES)
    responses = load_responses(RUN / "responses.jsonl")
    assert len(responses) == 60 and all(row["response"] in NLTK["tags"] for row in responses.values())
    # the similarity stand-in decides many responses, so its branches (hallu words first, then truth words) are tested
    changed = [k for k, v in EXPECTED["none"]["items"].items() if EXPECTED["initial"]["items"][k] != v]
    assert len(changed) >= 20


@pytest.mark.parametrize("similarity", sorted(record.SIMILARITIES))
def test_each_response_counts_as_in_amber_inference_py(similarity):
    data = Amber(RUN)
    responses = load_responses(RUN / "responses.jsonl")
    nouns, sim = recorded_nouns(), StandInSimilarity(similarity)
    expected = EXPECTED[similarity]["items"]
    got = {key: counters(data.reference_item(key, row["response"], nouns, sim)) for key, row in responses.items()}
    wrong = {key: (got[key], expected[key]) for key in expected if got[key] != expected[key]}
    assert not wrong, f"(ours, inference.py) differ for {len(wrong)} responses: {dict(list(wrong.items())[:3])}"


@pytest.mark.parametrize("similarity", sorted(record.SIMILARITIES))
def test_the_scored_file_reports_what_amber_inference_py_printed(similarity):
    _, result, _ = amber.score(
        RUN / "responses.jsonl", RUN, "g", StandInSimilarity(similarity), "reference", recorded_nouns()
    )
    total, m = EXPECTED[similarity]["total"], result["metrics"]
    assert (m["n_responses"], m["n_mentions"], m["n_hallucinated_mentions"]) == (
        total["non_hallu_num"],
        total["chair_num"],
        total["chair_score"],
    )
    printed = total["printed"]
    assert (m["CHAIR_reported"], m["Cover_reported"], m["Hal_reported"], m["Cog_reported"]) == (
        printed["CHAIR"],
        printed["Cover"],
        printed["Hal"],
        printed["Cog"],
    )
    # a stand-in similarity is not the reference's spaCy model: the result must not claim reference numbers
    assert result["extraction"]["noun_extraction"] == "reference" and result["extraction"]["reference_exact"] is False
