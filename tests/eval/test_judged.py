"""Judge-based scorers on hand-made fixtures: a scripted judge, so every expected number can be checked by hand."""

from __future__ import annotations

import argparse
import json

import pytest

from dama.eval import judged, judged_rubrics
from dama.eval.judged import score
from dama.eval.judged_rubrics import parse_llava, parse_mmhal, parse_mmvet
from dama.eval.records import RecordError


class Scripted:
    """Replies chosen by the response text found in the prompt; `retry` answers re-asks (prompt quotes the reply)."""

    judge_id = "scripted"

    def __init__(self, first: dict[str, str], retry: dict[str, str] | None = None):
        self.first, self.retry, self.prompts = first, retry or {}, []

    def complete(self, prompt: str) -> str:
        self.prompts.append(prompt)
        table = self.retry if "Your previous reply" in prompt else self.first
        for marker, reply in table.items():
            if marker in prompt:
                return reply
        return "no opinion"


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _responses(path, bench, answers: dict[str, str]):
    rows = [{"id": k, "question": "q", "response": v, "bench": bench, "model": "m", "decoding": {"num_beams": 1}}
            for k, v in answers.items()]  # fmt: skip
    return _jsonl(path, rows)


def test_parsers():
    assert parse_mmhal("Fine answer.\nRating: 3") == 3
    assert parse_mmhal("rating: 4 ... as said, Rating: 4") == 4
    assert isinstance(parse_mmhal("Rating: 2\nRating: 5"), str)
    assert isinstance(parse_mmhal("Rating: 7"), str) and isinstance(parse_mmhal("Rating: 10"), str)
    assert parse_llava("8 6\nbecause") == (8.0, 6.0) and parse_llava("10, 5") == (10.0, 5.0)
    assert isinstance(parse_llava("Assistant 1: 8"), str) and isinstance(parse_llava("8 11"), str)
    assert parse_mmvet("0.5") == 0.5 and parse_mmvet(" 1.0\n") == 1.0
    assert isinstance(parse_mmvet("1.5"), str) and isinstance(parse_mmvet("0.5 or 1.0"), str)


MMHAL = [
    {"question_type": "attribute", "question": "Colour?", "gt_answer": "Black.", "image_content": ["cat"]},
    {"question_type": "attribute", "question": "Shape?", "gt_answer": "Round.", "image_content": ["plate"]},
    {"question_type": "relation", "question": "Where?", "gt_answer": "On the sofa.", "image_content": ["cat", "sofa"]},
    {"question_type": "counting", "question": "How many?", "gt_answer": "Two.", "image_content": ["cup"]},
    {"question_type": "holistic", "question": "Describe.", "gt_answer": "A cat.", "image_content": ["cat"]},
]


def test_mmhal_score_hallucination_rate_per_type_and_flags(tmp_path):
    (tmp_path / "q.json").write_text(json.dumps(MMHAL))
    items = judged_rubrics.load_mmhal(tmp_path / "q.json")
    responses = {"0": "ans-zero", "1": "ans-one", "2": "ans-two", "3": "ans-three"}  # "4" has no response
    judge = Scripted(
        first={"ans-zero": "Rating: 6", "ans-one": "Good.\nrating: 3", "ans-two": "Rating: 2 or Rating: 1",
               "ans-three": "I am not sure."},
        retry={"ans-two": "Rating: 1"},
    )  # fmt: skip
    summary, details = score("mmhal", items, responses, judge, reasks=2)
    metrics = summary["metrics"]
    assert metrics["score"] == pytest.approx(10 / 3)  # (6 + 3 + 1) / 3; the flagged item is not averaged in
    assert metrics["hallucination_rate"] == pytest.approx(1 / 3)  # only the 1 is below 3
    assert metrics["score/attribute"] == 4.5 and metrics["score/relation"] == 1.0
    assert metrics["hallucination_rate/attribute"] == 0.0 and metrics["hallucination_rate/relation"] == 1.0
    assert "score/counting" not in metrics and "score/holistic" not in metrics
    assert summary["n_flagged"] == 1 and summary["flagged_ids"] == ["3"] and summary["n_scored"] == 3
    assert summary["partial"] is True and summary["missing_ids"] == ["4"]
    assert len(judge.prompts) == 1 + 1 + 2 + 3  # ans-two re-asked once, ans-three twice then flagged
    assert "Image contents: cat, sofa" in judge.prompts[2] and "Reference answer: On the sofa." in judge.prompts[2]
    flagged = next(d for d in details if d["id"] == "3")
    assert flagged["flagged"] and flagged["value"] is None and len(flagged["judge_replies"]) == 3


def _llava_files(tmp_path):
    questions = [
        {"question_id": 1, "image": "a.jpg", "text": "What is on the table?", "category": "conv"},
        {"question_id": 2, "image": "a.jpg", "text": "Describe the scene.", "category": "detail"},
        {"question_id": 3, "image": "b.jpg", "text": "Why is he running?", "category": "conv"},
        {"question_id": 4, "image": "b.jpg", "text": "What could happen next?", "category": "complex"},
    ]
    answers = [{"question_id": i, "text": f"reference answer {i}"} for i in range(1, 5)]
    context = [
        {"image": "a.jpg", "caption": "A cup on a table."},
        {"image": "b.jpg", "captions": ["A man runs.", "A runner in a park."],
         "instances": [{"category": "person", "bbox": [0.1, 0.2, 0.5, 0.9]}]},
    ]  # fmt: skip
    return (
        _jsonl(tmp_path / "q.jsonl", questions),
        _jsonl(tmp_path / "a.jsonl", answers),
        _jsonl(tmp_path / "c.jsonl", context),
    )


def test_llava_bench_relative_score_per_category(tmp_path):
    items = judged_rubrics.load_llava_bench(*_llava_files(tmp_path))
    responses = {"1": "model one", "2": "model two", "3": "model three", "4": "model four"}
    judge = Scripted({"model one": "8 6\nok", "model two": "10, 5", "model three": "7 7", "model four": "great"})
    summary, _ = score("llava-bench", items, responses, judge, reasks=1)
    metrics = summary["metrics"]
    assert metrics["relative_score"] == pytest.approx(72.0)  # 100 * (6 + 5 + 7) / (8 + 10 + 7)
    assert metrics["model_mean"] == pytest.approx(6.0) and metrics["reference_mean"] == pytest.approx(25 / 3)
    assert metrics["relative_score/conv"] == pytest.approx(100 * 13 / 15)
    assert metrics["relative_score/detail"] == pytest.approx(50.0) and metrics["model_mean/detail"] == 5.0
    assert "relative_score/complex" not in metrics and summary["flagged_ids"] == ["4"]
    assert summary["partial"] is True  # a flagged item is as absent from the metrics as a missing one
    prompt = judge.prompts[2]
    assert "A man runs.\nA runner in a park.\nperson: [0.100, 0.200, 0.500, 0.900]" in prompt
    assert prompt.index("reference answer 3") < prompt.index("model three")  # the reference is Assistant 1


def test_mmvet_total_per_capability(tmp_path):
    data = {
        "v1": {"imagename": "v1.png", "question": "What animal?", "answer": "cat", "capability": ["rec"]},
        "v2": {"imagename": "v2.png", "question": "Sum?", "answer": "12", "capability": ["ocr", "math"]},
        "v3": {"imagename": "v3.png", "question": "Brand?", "answer": "ACME <OR> Acme", "capability": ["rec", "ocr"]},
        "v4": {"imagename": "v4.png", "question": "Text?", "answer": "STOP", "capability": ["ocr"]},
    }
    (tmp_path / "mm-vet.json").write_text(json.dumps(data))
    items = judged_rubrics.load_mmvet(tmp_path / "mm-vet.json")
    responses = {"v1": "A cat.", "v2": "It is 7\nplus 5.", "v3": "Nike", "v4": "stop sign"}
    judge = Scripted({"A cat.": "1.0", "It is 7 plus 5.": "0.5", "Nike": "0.0", "stop sign": "maybe"})
    summary, details = score("mmvet", items, responses, judge, reasks=1)
    assert score("mmvet", items, responses, judge, reasks=1, workers=3) == (summary, details)  # threads keep order
    metrics = summary["metrics"]
    assert metrics["total"] == pytest.approx(50.0)  # 100 * (1.0 + 0.5 + 0.0) / 3
    assert metrics["total/rec"] == pytest.approx(50.0) and metrics["total/math"] == pytest.approx(50.0)
    assert metrics["total/ocr"] == pytest.approx(25.0)  # (0.5 + 0.0) / 2: v2 and v3 are the scored ocr items
    assert metrics["combination/rec"] == 100.0 and metrics["combination/math+ocr"] == 50.0
    assert metrics["combination/ocr+rec"] == 0.0 and "combination/ocr" not in metrics
    assert summary["flagged_ids"] == ["v4"] and summary["n_missing"] == 0


def _run(tmp_path, *extra):
    parser = argparse.ArgumentParser()
    judged.add_arguments(parser)
    return judged.run(parser.parse_args(list(extra)))


def test_run_writes_labelled_results_that_compare_can_read(tmp_path):
    from dama.eval.compare import compare_table

    q, a, c = _llava_files(tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    responses = _responses(run_dir / "llava-bench.jsonl", "llava-bench", {"1": "x", "2": "y", "3": "z"})
    args = ["--bench", "llava-bench", "--responses", responses, "--questions", q, "--answers", a, "--context", c,
            "--judge", "fake:7"]  # fmt: skip
    assert _run(tmp_path, *map(str, args)) == 0
    assert _run(tmp_path, *map(str, args), "--strict") == 3  # the result is partial: question 4 has no response
    path = run_dir / "llava-bench_in-the-wild.fake_7.metrics.json"
    results = json.loads(path.read_text())
    assert results["benchmark"] == "llava-bench" and results["split"] == "in-the-wild"
    assert results["judge_id"] == "fake:7" and results["prompt_version"] == "dama-llava-bench-v1"
    assert results["model"] == "m" and results["decoding"] == {"num_beams": 1}
    assert results["n_items"] == 3 and results["n_expected"] == 4 and results["missing_ids"] == ["4"]
    assert results["partial"] is True and results["n_flagged"] == 0 and results["n_scored"] == 3
    assert results["judge_calls"] == {"new": 0, "cached": 3}  # the second run answered from the cache
    details = [json.loads(line) for line in (run_dir / results["details_file"]).read_text().splitlines()]
    assert [d["id"] for d in details] == ["1", "2", "3"] and all(len(d["value"]) == 2 for d in details)
    assert (run_dir / "judge_cache").is_dir()
    table = compare_table([run_dir])
    assert "| llava-bench [in-the-wild, judge=fake:7] / relative_score |" in table


def test_bad_response_files_are_refused_with_file_and_line(tmp_path):
    (tmp_path / "q.json").write_text(json.dumps(MMHAL))
    items = judged_rubrics.load_mmhal(tmp_path / "q.json")
    dup = _jsonl(tmp_path / "dup.jsonl", [{"id": "0", "response": "a"}, {"id": "1", "response": "b"},
                                          {"id": "0", "response": "c"}])  # fmt: skip
    with pytest.raises(RecordError, match=r"dup.jsonl:3: duplicate id '0' \(first at .*dup.jsonl:1\)"):
        judged.load_responses(dup, "mmhal", items)
    unknown = _jsonl(tmp_path / "unknown.jsonl", [{"id": "0", "response": "a"}, {"id": "77", "response": "b"}])
    with pytest.raises(RecordError, match=r"'77' at .*unknown.jsonl:2"):
        judged.load_responses(unknown, "mmhal", items)
    other = _jsonl(tmp_path / "other.jsonl", [{"id": "0", "response": "a", "bench": "pope"}])
    with pytest.raises(RecordError, match=r"other.jsonl:1: response is for bench 'pope'"):
        judged.load_responses(other, "mmhal", items)
    no_response = _jsonl(tmp_path / "none.jsonl", [{"id": "0", "answer": "a"}])
    with pytest.raises(RecordError, match=r"none.jsonl:1: field 'response' must be a string"):
        judged.load_responses(no_response, "mmhal", items)
    (tmp_path / "broken.jsonl").write_text('{"id": "0", "response": "a"}\n{"id": "1", "resp\n')
    with pytest.raises(RecordError, match=r"broken.jsonl:2: not valid JSON"):
        judged.load_responses(tmp_path / "broken.jsonl", "mmhal", items)
    mixed = _jsonl(tmp_path / "mixed.jsonl", [{"id": "0", "response": "a", "model": "x"},
                                              {"id": "1", "response": "b", "model": "y"}])  # fmt: skip
    with pytest.raises(RecordError, match="several models"):
        judged.load_responses(mixed, "mmhal", items)


def test_bad_annotation_files_and_missing_options(tmp_path):
    (tmp_path / "q.json").write_text(json.dumps([{"question": "Colour?", "gt_answer": "Black."}]))
    with pytest.raises(RecordError, match=r"q.json item 0: missing field 'image_content'"):
        judged_rubrics.load_mmhal(tmp_path / "q.json")
    q, a, c = _llava_files(tmp_path)
    _jsonl(c, [{"image": "a.jpg", "caption": "A cup."}])
    with pytest.raises(RecordError, match=r"q.jsonl:3: image 'b.jpg' has no caption row"):
        judged_rubrics.load_llava_bench(q, a, c)
    responses = _responses(tmp_path / "r.jsonl", "llava-bench", {"1": "x"})
    with pytest.raises(RecordError, match="needs --answers"):
        _run(
            tmp_path, "--bench", "llava-bench", "--responses", str(responses), "--questions", str(q), "--judge", "fake"
        )
    with pytest.raises(RecordError, match="needs --judge"):
        _run(tmp_path, "--bench", "mmvet", "--responses", str(responses), "--questions", str(q))
