"""COCO ground truth from tiny annotation files, Object HalBench in rule and llm modes, and bad-input handling."""

from __future__ import annotations

import json

import pytest

from dama.eval.chair import ChairEngine
from dama.eval.coco import CocoGroundTruth
from dama.eval.llm_extraction import ApproxTagger, parse_object_list, parse_object_list_rlaif_v
from dama.eval.object_halbench import score_responses
from dama.eval.records import RecordError


@pytest.fixture(scope="module")
def engine() -> ChairEngine:
    return ChairEngine()


@pytest.fixture
def gt(coco_dir, engine, tmp_path) -> CocoGroundTruth:
    return CocoGroundTruth(coco_dir, engine, tmp_path / "cache")


@pytest.fixture
def questions(tmp_path):
    path = tmp_path / "questions.jsonl"
    rows = [{"image_id": i, "question": "Describe the image in detail.", "image": "aGVsbG8="} for i in (1, 2, 3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


RESPONSES = {
    "1": "A man and his dog play with a frisbee near a car.",  # person, dog, frisbee ok; car hallucinated (12 words)
    "2": "A toilet seat next to a sink.",  # toilet, sink (7 words)
    "3": "A dog and a dog.",  # two hallucinated mentions (5 words)
}


def test_ground_truth_is_instances_plus_captions_and_is_cached(gt, coco_dir, engine, tmp_path, monkeypatch):
    assert gt.classes([1, "2", "COCO_val2014_000000000003.jpg"]) == {
        "1": frozenset({"dog", "frisbee", "person"}),  # person only from the caption "A man ..."
        "2": frozenset({"toilet", "sink"}),
        "3": frozenset({"cat"}),  # "kitten" in the caption, no instance annotation
    }
    assert gt.cache_path.is_file()
    monkeypatch.setattr(CocoGroundTruth, "_build", lambda self: pytest.fail("cache not used"))
    again = CocoGroundTruth(coco_dir, engine, tmp_path / "cache")
    assert again.classes([3]) == {"3": frozenset({"cat"})}
    with pytest.raises(RecordError, match=r"1 image id\(s\) not in the COCO annotations.*: 999"):
        again.classes([1, 999])


def test_ground_truth_needs_both_files(coco_dir, engine, tmp_path):
    (coco_dir / "captions_val2014.json").unlink()
    with pytest.raises(RecordError, match="captions_val2014.json: missing"):
        CocoGroundTruth(coco_dir, engine, tmp_path)
    with pytest.raises(RecordError, match="not found"):
        CocoGroundTruth(tmp_path / "nope", engine, tmp_path)


def test_rule_mode_by_hand(write_responses, questions, gt, engine):
    path = write_responses("r.jsonl", RESPONSES)
    [(stem, result, details)] = score_responses(path, engine, gt, questions_path=questions)
    assert stem == "object-halbench_rule"
    m = result["metrics"]
    assert (m["n_mentions"], m["n_hallucinated_mentions"]) == (8, 3)
    assert m["CHAIR_i"] == pytest.approx(37.5)
    assert m["CHAIR_s"] == pytest.approx(200 / 3) and m["CHAIR_s_refined"] == pytest.approx(200 / 3)
    assert m["recall"] == pytest.approx(500 / 6)  # (3 + 2 + 0) of (3 + 2 + 1)
    assert m["avg_len"] == pytest.approx(8.0)  # (12 + 7 + 5) / 3
    assert (
        result["extraction"]
        == {
            "mode": "rule",
            "length": "rlaif-v: len(text.strip().split(' '))",
            "lemmatizer": "table",
            "answer_cleanup": "rlaif-v: remove 'Assistant:', strip",
        }
        and result["synonyms"]["version"] == "chair-refined-v1"
    )
    assert result["partial"] is False and result["n_items"] == 3 and result["completeness_checked"] is True
    assert result["model"] == "tiny" and result["decoding"] == {"num_beams": 1}
    assert details[2]["hallucinated"] == [["dog", "dog"], ["dog", "dog"]]


class ListingJudge:
    """A local stand-in for `dama.eval.judge`: replies with a fixed object list per answer."""

    judge_id = "test:listing"

    def __init__(self, replies: dict[str, str]) -> None:
        self.replies, self.calls, self.roles = replies, 0, []

    def complete(self, prompt: str, role: str = "user") -> str:
        self.calls += 1
        self.roles.append(role)
        return next(reply for answer, reply in self.replies.items() if f"\n{answer}\n" in prompt)


def test_llm_mode_by_hand(write_responses, questions, gt, engine):
    judge = ListingJudge(
        {
            # "a a man" -> man; "brown" is no noun -> dog; "car door" is one noun run, not a COCO name -> nothing
            RESPONSES["1"]: '["a man", "brown dogs", "frisbee", "car door", "dog"]',
            RESPONSES["2"]: 'Sure:\n["toilet", "seat", "sink"]',  # seat dropped next to a toilet
            RESPONSES["3"]: '["dog", "dogs"]',  # de-duplicated: one hallucinated mention
        }
    )
    path = write_responses("r.jsonl", RESPONSES)
    outputs = score_responses(
        path, engine, gt, questions_path=questions, modes=("rule", "llm"), judge=judge, tagger=ApproxTagger(engine)
    )
    assert [stem for stem, _, _ in outputs] == ["object-halbench_rule", "object-halbench_llm"]
    _, result, details = outputs[1]
    m = result["metrics"]
    assert (m["n_mentions"], m["n_hallucinated_mentions"]) == (6, 1)
    assert m["CHAIR_i"] == pytest.approx(100 / 6) and m["CHAIR_s"] == pytest.approx(100 / 3)
    assert m["recall"] == pytest.approx(500 / 6)
    assert result["extraction"]["mode"] == "llm" and result["extraction"]["judge_id"] == "test:listing"
    assert details[0]["mentions"] == [["man", "person"], ["dog", "dog"], ["frisbee", "frisbee"]]


def test_llm_mode_short_answers_and_judge_failures(write_responses, questions, gt, engine):
    judge = ListingJudge({RESPONSES["1"]: '["dog"]', "A toilet seat next to a sink.": "I see a toilet."})
    path = write_responses("r.jsonl", {"1": RESPONSES["1"], "2": RESPONSES["2"], "3": "Two dogs."})
    [(_, result, details)] = score_responses(
        path, engine, gt, questions_path=questions, modes=("llm",), judge=judge, tagger=ApproxTagger(engine)
    )
    assert judge.calls == 2  # "Two dogs." has ≤3 words: no objects, no call
    assert result["partial"] is True and result["n_judge_failures"] == 1 and result["judge_failure_ids"] == ["2"]
    assert result["n_items"] == 2 and result["metrics"]["n_mentions"] == 1
    assert {"id": "2", "judge_failure": True} in details


@pytest.mark.parametrize(
    ("reply", "names"),
    [('["a", "b"]', ["a", "b"]), ("Objects:\n[]", []), ("none", None), ('["a", 3]', None), ("[a, b]", None)],
)
def test_parse_object_list(reply, names):
    assert parse_object_list(reply) == names


@pytest.mark.parametrize(
    ("reply", "names"),
    [
        # RLAIF-V eval/eval_gpt_obj_halbench.py: extract_json_content (re.search(r'```json\n(.*?)\n```', DOTALL),
        # json.loads of the group), else, if '["' in the reply, json.loads of its stripped last line, else an error
        ('```json\n["dog", "cat"]\n```', ["dog", "cat"]),
        ("Here they are:\n```json\n[]\n```\nDone.", []),  # the block wins, wherever it is
        ('["dog"]', ["dog"]),  # no block: the last (only) line
        ('Objects:\n["dog", "tree"]', ["dog", "tree"]),  # no block: the last line
        ('["dog",\n "tree"]', None),  # the last line alone is not JSON
        ("[]", None),  # no block and no '["': unreadable there (RLAIF-V retries)
        ('The objects are ["dog"].', None),  # the last line is the whole sentence
        ('```json\n["dog"]```', None),  # no newline before the closing fence; the last line is not JSON either
        ('```json\n{"objects": ["dog"]}\n```', None),  # readable JSON, but not a list of names
        ('```json\n["dog", "cat",]\n```\n["dog", "cat"]', ["dog", "cat"]),  # a broken block: the last line
    ],
)
def test_parse_object_list_as_rlaif_v(reply, names):
    assert parse_object_list_rlaif_v(reply) == names


def test_missing_responses_make_a_partial_result(write_responses, questions, gt, engine):
    path = write_responses("r.jsonl", {"1": RESPONSES["1"], "3": RESPONSES["3"]})
    [(_, result, _)] = score_responses(path, engine, gt, questions_path=questions)
    assert result["partial"] is True and result["n_missing"] == 1 and result["missing_ids"] == ["2"]
    assert result["n_items"] == 2 and result["metrics"]["n_responses"] == 2


def test_without_questions_completeness_is_not_claimed(write_responses, gt, engine):
    path = write_responses("r.jsonl", {"a": RESPONSES["2"]}, image_id=2)
    [(_, result, _)] = score_responses(path, engine, gt, bench="chair")
    assert result["completeness_checked"] is False and result["metrics"]["CHAIR_i"] == 0.0


def test_bad_inputs_are_errors_naming_file_and_line(write_responses, questions, gt, engine, tmp_path):
    path = write_responses("r.jsonl", {**RESPONSES, "42": "A cat."})
    with pytest.raises(
        RecordError, match=r"1 response id\(s\) not in .*questions.jsonl \(first: '42' at .*r.jsonl:4\)"
    ):
        score_responses(path, engine, gt, questions_path=questions)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "response": "ok"}\n{"id": "2", "response": \n')
    with pytest.raises(RecordError, match=r"bad.jsonl:2: not valid JSON"):
        score_responses(bad, engine, gt, questions_path=questions)
    bad.write_text('{"id": "1", "response": "ok"}\n{"id": "1", "response": "again"}\n')
    with pytest.raises(RecordError, match=r"bad.jsonl:2: duplicate id '1' \(first at .*bad.jsonl:1\)"):
        score_responses(bad, engine, gt, questions_path=questions)
    bad.write_text('{"id": "1", "response": null}\n')
    with pytest.raises(RecordError, match=r"bad.jsonl:1: field 'response' must be a string"):
        score_responses(bad, engine, gt, questions_path=questions)
    unknown_image = write_responses("u.jsonl", {"x": "A dog."}, image_id=77)
    with pytest.raises(RecordError, match="not in the COCO annotations.*77"):
        score_responses(unknown_image, engine, gt, bench="chair")
    with pytest.raises(ValueError, match="needs a judge"):
        score_responses(write_responses("ok.jsonl", RESPONSES), engine, gt, modes=("llm",))


def test_image_id_falls_back_to_the_question_and_bom_is_tolerated(write_responses, questions, gt, engine):
    path = write_responses("r.jsonl", {"3": "A cat."}, image_id=None)  # null image_id: the question's (3) is used
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # saved by an editor with a byte-order mark
    [(_, result, details)] = score_responses(path, engine, gt, questions_path=questions)
    assert details[0]["image_id"] == "3" and details[0]["gt"] == ["cat"]
    assert result["metrics"]["CHAIR_i"] == 0.0 and result["n_missing"] == 2


def test_llm_mode_sends_the_rlaif_v_prompt_as_system_and_records_the_reduction(write_responses, questions, gt, engine):
    judge = ListingJudge({RESPONSES["1"]: '["hot dog stand"]', RESPONSES["2"]: "[]", RESPONSES["3"]: "[]"})
    path = write_responses("r.jsonl", RESPONSES)
    [(_, result, details)] = score_responses(
        path, engine, gt, questions_path=questions, modes=("llm",), judge=judge, tagger=ApproxTagger(engine)
    )
    assert judge.roles == ["system"] * 3
    assert result["extraction"]["prompt"] == "rlaif-v" and result["extraction"]["prompt_role"] == "system"
    assert result["extraction"]["reduction"] == "rlaif-v:approx"
    assert result["extraction"]["reference_reduction"] is False
    assert details[0]["mentions"] == [["hot dog", "hot dog"]]


def test_answers_are_cleaned_as_rlaif_v_loads_them(write_responses, questions, gt, engine):
    # load_generated_captions: answer.replace("Assistant:", "").strip(); then avg_len = len(cap.strip().split(" "))
    path = write_responses("r.jsonl", {"1": "Assistant: A dog.", "2": " A sink. ", "3": "A cat."})
    [(_, result, details)] = score_responses(path, engine, gt, questions_path=questions)
    assert result["metrics"]["avg_len"] == pytest.approx(2.0)  # "A dog." / "A sink." / "A cat.": 2 words each
    assert details[0]["mentions"] == [["dog", "dog"]]
    [(_, plain, _)] = score_responses(path, engine, gt, bench="chair")  # plain CHAIR keeps the text as it is
    assert plain["metrics"]["avg_len"] == pytest.approx(7 / 3)  # ["Assistant:", "A", "dog."], ["A", "sink."], ...
