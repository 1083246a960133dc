"""`dama eval score` and `dama eval compare` end to end through the real CLI (`dama eval ...`), including bad input."""

from __future__ import annotations

import json

import pytest

from dama.cli import main as dama
from dama.eval.records import RecordError, load_responses, run_metadata


def main(argv: list[str]) -> int:
    """`dama eval ...` through the dispatcher, which prints a user error and picks its exit code."""
    return dama(["eval", *argv])


def _score(*args: str) -> int:
    return main(["score", *map(str, args)])


@pytest.fixture
def runs(tmp_path, coco_dir, amber_dir, write_responses):
    """Two run folders scored on Object HalBench (rule), POPE and both AMBER halves."""
    pope_questions = tmp_path / "coco_pope_random.json"
    pope_questions.write_text(
        "".join(
            json.dumps({"question_id": i, "image": "x.jpg", "text": "Is there a dog?", "label": y}) + "\n"
            for i, y in ((1, "yes"), (2, "no"))
        )  # fmt: skip
    )
    cache = tmp_path / "cache"
    texts = {
        "base": ({1: "A dog, a cat and a car.", 2: "A toilet."}, {1: "Yes", 2: "Yes"}, "A car, a kitten.", "No"),
        "dama": ({1: "A man with a dog.", 2: "A sink and a toilet."}, {1: "Yes", 2: "No"}, "A puppy on grass.", "No"),
    }
    for name, (chair, answers, description, existence) in texts.items():
        oh = write_responses(f"{name}/object-halbench.jsonl", chair, image_id=None)
        rows = [json.loads(line) for line in oh.read_text().splitlines()]
        oh.write_text("".join(json.dumps({**r, "image_id": int(r["id"])}) + "\n" for r in rows))
        assert _score("--bench", "object-halbench", "--responses", oh, "--coco-annotations", coco_dir,
                      "--cache-dir", cache) == 0  # fmt: skip
        pope_responses = write_responses(f"{name}/pope.jsonl", answers)
        assert _score("--bench", "pope", "--responses", pope_responses, "--questions", pope_questions) == 0
        amber_texts = {1: description, 2: "A car.", 3: existence, 4: "No", 5: "No", 6: "Yes", 7: "No"}
        amber_responses = write_responses(f"{name}/amber.jsonl", amber_texts)
        for half in ("amber-g", "amber-d"):
            assert _score("--bench", half, "--responses", amber_responses, "--amber-dir", amber_dir) == 0
    return tmp_path / "base", tmp_path / "dama"


def test_score_writes_labelled_results_and_details(runs):
    base, _ = runs
    names = sorted(p.name for p in base.iterdir())
    assert "object-halbench_rule.metrics.json" in names and "object-halbench_rule.details.jsonl" in names
    assert {"pope_random.metrics.json", "amber-g.metrics.json", "amber-d.metrics.json"} <= set(names)
    result = json.loads((base / "object-halbench_rule.metrics.json").read_text())
    for key in ("benchmark", "split", "model", "decoding", "extraction", "synonyms", "n_items", "partial", "metrics"):
        assert key in result
    # base: image 1 "dog, cat, car" -> cat and car hallucinated; image 2 "toilet" correct: 2 of 4 mentions
    assert result["metrics"]["CHAIR_i"] == pytest.approx(50.0)
    details = [json.loads(line) for line in (base / result["details_file"]).read_text().splitlines()]
    assert details[0]["hallucinated"] == [["cat", "cat"], ["car", "car"]]


def test_compare_table(runs, tmp_path, capsys):
    base, dama = runs
    out = tmp_path / "table.md"
    assert main(["compare", str(base), str(dama), "--out", str(out)]) == 0
    table = out.read_text()
    assert table == capsys.readouterr().out
    lines = table.splitlines()
    assert lines[0] == "| benchmark / metric | base | dama |"
    assert "| object-halbench [val2014, rule] / CHAIR_i | 50.00 | 0.00 |" in lines
    assert "| pope [random] / accuracy | 50.00 | 100.00 |" in lines
    # AMBER CHAIR, base: car (not a truth object of item 1) and kitten hallucinated of (car, kitten; car) = 66.67;
    # dama: 0. F1 (both): truth-No ids 4, 5, 7 answered No, id 3 (truth yes) too -> P = 75, R = 100, F1 = 85.71.
    # AMBER score: base (33.33 + 85.71) / 2 = 59.52; dama (100 + 85.71) / 2 = 92.86.
    assert "| amber / AMBER_score | 59.52 | 92.86 |" in lines
    assert not any("n_mentions" in line for line in lines)
    assert main(["compare", str(base), "--all-metrics"]) == 0
    assert "object-halbench [val2014, rule] / n_mentions | 4 |" in capsys.readouterr().out


def test_partial_results_are_flagged_everywhere(tmp_path, coco_dir, write_responses, capsys):
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"image_id": i, "question": "Describe.", "image": "eA=="}) + "\n"
                                 for i in (1, 2)))  # fmt: skip
    responses = write_responses("run/object-halbench.jsonl", {1: "A dog."})
    args = ["--bench", "object-halbench", "--responses", responses, "--questions", questions,
            "--coco-annotations", coco_dir, "--cache-dir", tmp_path / "c"]  # fmt: skip
    assert _score(*args) == 0
    assert "partial: 1 response(s) missing" in capsys.readouterr().err
    assert _score(*args, "--strict") == 3
    result = json.loads((tmp_path / "run" / "object-halbench_rule.metrics.json").read_text())
    assert result["partial"] is True and result["n_missing"] == 1
    main(["compare", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert "| object-halbench [val2014, rule] / CHAIR_i | 0.00* |" in out and "partial result" in out


def test_bad_input_exits_2_with_file_and_line(tmp_path, coco_dir, capsys):
    bad = tmp_path / "r.jsonl"
    bad.write_text('{"id": "1", "response": "A dog."}\nnot json\n')
    assert _score("--bench", "chair", "--responses", bad, "--coco-annotations", coco_dir, "--cache-dir", tmp_path) == 2
    assert f"{bad}:2: not valid JSON" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "missing")]) == 2
    assert "run folder not found" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2
    capsys.readouterr()
    # argparse's usage error: llm mode without a judge
    assert _score("--bench", "chair", "--responses", bad, "--coco-annotations", coco_dir, "--mode", "llm") == 2
    assert "--mode llm/both needs --judge" in capsys.readouterr().err


def test_mixed_runs_in_one_response_file_are_refused(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "1", "response": "a", "model": "m1"}\n{"id": "2", "response": "b", "model": "m2"}\n')
    with pytest.raises(RecordError, match="several models"):
        run_metadata(load_responses(path).values(), path)


def test_help_lists_benches(capsys):
    assert main([]) == 0
    assert "dama eval compare" in capsys.readouterr().out
    assert main(["score", "--bench", "pope", "--help"]) == 0
    assert "--questions" in capsys.readouterr().out


def test_llm_mode_through_the_cli_with_the_fake_judge(tmp_path, coco_dir, write_responses, capsys):
    """Both extraction modes in one call, written to separate, labelled files; the judge is dama.eval.judge's fake."""
    responses = write_responses("run/object-halbench.jsonl", {1: "A man with a dog and a car in a park."}, image_id=1)
    args = ["--bench", "object-halbench", "--responses", responses, "--coco-annotations", coco_dir,
            "--cache-dir", tmp_path / "c", "--mode", "both", "--judge", "fake", "--lemmatizer", "table"]  # fmt: skip
    assert _score(*args) == 0
    rule = json.loads((tmp_path / "run" / "object-halbench_rule.metrics.json").read_text())
    llm = json.loads((tmp_path / "run" / "object-halbench_llm.metrics.json").read_text())
    assert rule["metrics"]["n_mentions"] == 3 and rule["extraction"] == {
        "mode": "rule",
        "length": "rlaif-v: len(text.strip().split(' '))",
        "lemmatizer": "table",
        "answer_cleanup": "rlaif-v: remove 'Assistant:', strip",
    }
    assert llm["extraction"]["mode"] == "llm" and llm["extraction"]["judge_id"].startswith("fake")
    assert llm["metrics"]["n_mentions"] == 0  # the fake judge lists no objects
    assert any((tmp_path / "run" / "judge_cache").rglob("*.json"))  # every judge call is cached
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "object-halbench [val2014, llm, judge=fake:0] / CHAIR_i | – |" in out
    assert "object-halbench [val2014, rule] / CHAIR_i | 33.33 |" in out
