"""The CHAIR engine with `--lemmatizer wordnet` against a recorded run of RLAIF-V's own Object HalBench scorer.

tests/eval/data/rlaif_v_chair_run was written by `tests/eval/rlaif_v_chair_record.py` (see its docstring): RLAIF-V's
eval/eval_gpt_obj_halbench.py (RLHF-V/RLAIF-V@83d917b), imported unchanged and run with real NLTK 3.10.4 in rule mode
(`compute_chair(..., gpt_process=False)`) on synthetic COCO 2014 annotations (30 images, 150 captions) and 30
synthetic responses. Expected values are what that code returned: `caption_to_words` for every caption and response,
and `compute_chair`'s per-response and overall results. NLTK's part (`lemma.lemmatize` of each
`nltk.word_tokenize(text.lower())` token) is replayed from the recording, so the test needs neither NLTK's data nor
RLAIF-V's code.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from dama.eval.amber_nlp import nltk_nouns
from dama.eval.chair import REFINED, ChairEngine
from dama.eval.coco import CocoGroundTruth
from dama.eval.object_halbench import chair_lemmatizer, score_responses
from dama.eval.records import RecordError

RUN = Path(__file__).parent / "data" / "rlaif_v_chair_run"
EXPECTED = json.loads((RUN / "expected.json").read_text(encoding="utf-8"))


class RecordedWordNet:
    """RLAIF-V's NLTK front end, replayed: the lemmatised tokens NLTK gave for each recorded text."""

    name = f"recorded-nltk-{EXPECTED['nltk_version']}+wordnet"

    def __call__(self, text: str) -> list[str]:
        return EXPECTED["front_end"][text]


@pytest.fixture(scope="module")
def engine() -> ChairEngine:
    return ChairEngine(version=REFINED, lemmatizer=RecordedWordNet())


def test_every_text_yields_the_words_caption_to_words_found(engine):
    texts = EXPECTED["caption_to_words"]
    assert len(texts) == 162  # 180 texts, 162 distinct
    wrong = {t: ([[m.word, m.cls] for m in engine.extract(t)], want) for t, want in texts.items()}
    wrong = {t: pair for t, pair in wrong.items() if pair[0] != pair[1]}
    assert not wrong, f"{len(wrong)} texts differ (ours, RLAIF-V), e.g. {next(iter(wrong.items()))}"
    # the fixture exercises the merges the reference makes on lemmas: plural two-word names, baby X, bow tie
    found = {word for pairs in texts.values() for word, _ in pairs}
    assert {"wine glass", "hot dog", "toilet"} <= found


def test_rule_mode_scores_as_rlaif_v_compute_chair(engine, tmp_path):
    ground_truth = CocoGroundTruth(RUN / "coco", engine, tmp_path)
    [(_, result, details)] = score_responses(RUN / "responses.jsonl", engine, ground_truth, modes=("rule",))
    assert result["extraction"]["lemmatizer"] == RecordedWordNet.name
    sentences = {str(s["image_id"]): s for s in EXPECTED["sentences"]}
    for detail in details:  # per response: ground truth, mapped words, hallucinated words
        want = sentences[detail["id"]]
        assert detail["gt"] == want["gt"], detail["id"]
        assert detail["mentions"] == want["generated"], detail["id"]
        # mscoco_hallucinated_words holds (word, node_word) with node_word = [word, class]
        assert detail["hallucinated"] == [[word, node[1]] for word, node in want["hallucinated"]], detail["id"]
    m, ref = result["metrics"], EXPECTED["overall"]
    assert m["n_responses"] == ref["sentence_num"] == 30 and m["n_gt_objects"] == ref["gt_word_count"]
    assert m["n_recalled_objects"] == ref["coco_word_count"]  # RLAIF-V's name for the distinct recalled classes
    assert m["CHAIR_s"] == pytest.approx(100 * ref["CHAIRs"])
    assert m["CHAIR_s_refined"] == pytest.approx(100 * ref["CHAIRs_refine"])
    assert m["CHAIR_i"] == pytest.approx(100 * ref["CHAIRi"])
    assert m["recall"] == pytest.approx(100 * ref["obj_rec"])
    assert m["avg_len"] == pytest.approx(ref["avg_word_len"])


def test_the_lemmatizer_is_part_of_the_ground_truth_cache_key(engine, tmp_path):
    table = ChairEngine(version=REFINED)
    assert table.fingerprint != engine.fingerprint
    assert (
        CocoGroundTruth(RUN / "coco", table, tmp_path).cache_path
        != CocoGroundTruth(RUN / "coco", engine, tmp_path).cache_path
    )


def test_auto_falls_back_to_the_table_without_nltk_and_says_so(tmp_path, monkeypatch, capsys):
    """`--lemmatizer auto` (the default) uses the table when NLTK is missing and records it; asking for `wordnet`
    without NLTK is a clear error (exit 2), not a traceback."""
    from dama.cli import main as dama

    def main(argv: list[str]) -> int:
        return dama(["eval", *argv])

    monkeypatch.setitem(sys.modules, "nltk", None)  # as if NLTK were not installed
    base = ["score", "--bench", "object-halbench", "--responses", str(RUN / "responses.jsonl"),
            "--coco-annotations", str(RUN / "coco"), "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(base) == 0
    result = json.loads((tmp_path / "o" / "object-halbench_rule.metrics.json").read_text())
    assert result["extraction"]["lemmatizer"] == "table"
    assert main([*base, "--lemmatizer", "wordnet"]) == 2
    assert "needs NLTK" in capsys.readouterr().err


def test_auto_keeps_the_table_for_lists_rlaif_v_did_not_use():
    """The original CHAIR code singularised with `pattern`, not WordNet: auto never switches chair-original."""
    assert chair_lemmatizer("auto", "chair-original") is None
    assert chair_lemmatizer("table", REFINED) is None
    with pytest.raises(ValueError, match="unknown lemmatizer"):
        chair_lemmatizer("spacy", REFINED)


def test_the_wordnet_front_end_needs_no_tagger_data(monkeypatch):
    """RLAIF-V's front end only tokenises and lemmatises: NLTK without its tagger data must not make `auto` fall back
    to the table, while AMBER's reference extraction (which tags) must say the tagger is missing."""
    nltk = types.ModuleType("nltk")
    nltk.__version__ = "0-test"
    nltk.word_tokenize = str.split

    def pos_tag(tokens):
        raise LookupError("Resource averaged_perceptron_tagger_eng not found")

    nltk.pos_tag = pos_tag
    stem = types.ModuleType("nltk.stem")
    stem.WordNetLemmatizer = lambda: types.SimpleNamespace(lemmatize=lambda word: word.rstrip("s"))
    monkeypatch.setitem(sys.modules, "nltk", nltk)
    monkeypatch.setitem(sys.modules, "nltk.stem", stem)
    lemmatizer = chair_lemmatizer("auto", REFINED)
    assert lemmatizer is not None and lemmatizer.name == "nltk-0-test+wordnet"
    assert lemmatizer("Two Dogs") == ["two", "dog"]
    with pytest.raises(RecordError, match="averaged_perceptron_tagger_eng"):
        nltk_nouns()
