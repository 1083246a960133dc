"""`dama eval score` user errors through the real CLI: exit 2, one message, no result file left behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dama.cli import main as dama
from dama.eval import records
from dama.eval.records import write_results


def score_argv(bench: str, responses: Path, tmp_path: Path, coco_dir: Path, amber_dir: Path) -> list[str]:
    argv = ["eval", "score", "--bench", bench, "--responses", str(responses)]
    if bench in ("chair", "object-halbench"):
        return [*argv, "--coco-annotations", str(coco_dir), "--cache-dir", str(tmp_path / "cache")]
    if bench == "pope":
        questions = tmp_path / "coco_pope_random.json"
        questions.write_text(
            json.dumps({"question_id": 1, "image": "x.jpg", "text": "Is there a dog?", "label": "yes"}) + "\n"
        )
        return [*argv, "--questions", str(questions)]
    return [*argv, "--amber-dir", str(amber_dir)]


def user_error(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and "dama eval score: error: " in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


@pytest.mark.parametrize("bench", ["chair", "object-halbench", "pope", "amber-g", "amber-d"])
def test_empty_responses_file_is_refused(tmp_path, capsys, coco_dir, amber_dir, bench):
    responses = tmp_path / "run" / "responses.jsonl"
    responses.parent.mkdir()
    responses.write_text("\n")  # nothing but a blank line: no response at all
    assert dama(score_argv(bench, responses, tmp_path, coco_dir, amber_dir)) == 2
    user_error(capsys, str(responses), "no responses")
    assert sorted(p.name for p in responses.parent.iterdir()) == ["responses.jsonl"]


def amber_responses(tmp_path: Path, write_responses) -> Path:
    return write_responses(
        "run/amber.jsonl", {1: "A dog on grass.", 2: "A car.", 3: "Yes", 4: "No", 5: "No", 6: "Yes", 7: "No"}
    )


@pytest.mark.parametrize(
    ("file", "change", "fragment"),
    [
        (
            "annotations.json",
            lambda a, r: a[0].update(truth="dog"),
            "annotations.json entry 0 (id 1): field 'truth' must be a list of words",
        ),
        (
            "annotations.json",
            lambda a, r: a[1].update(hallu=["person", 3]),
            "annotations.json entry 1 (id 2): field 'hallu' must be a list of words",
        ),
        (
            "annotations.json",
            lambda a, r: a[2].update(truth=["yes"]),
            "annotations.json entry 2 (id 3): field 'truth' must be the string 'yes' or 'no'",
        ),
        ("annotations.json", lambda a, r: a[3].update(type=5), "annotations.json entry 3 (id 4): field 'type'"),
        ("relation.json", lambda a, r: r.update(dog="puppy"), "relation.json: entry 'dog' must be a list of words"),
    ],
)
def test_amber_files_with_a_wrong_type_are_refused(
    tmp_path, capsys, amber_dir, write_responses, file, change, fragment
):
    annotations = json.loads((amber_dir / "annotations.json").read_text())
    relation = json.loads((amber_dir / "relation.json").read_text())
    change(annotations, relation)
    (amber_dir / "annotations.json").write_text(json.dumps(annotations))
    (amber_dir / "relation.json").write_text(json.dumps(relation))
    responses = amber_responses(tmp_path, write_responses)
    for half in ("amber-g", "amber-d"):
        assert (
            dama(["eval", "score", "--bench", half, "--responses", str(responses), "--amber-dir", str(amber_dir)]) == 2
        )
        user_error(capsys, str(amber_dir / file), fragment)
    assert sorted(p.name for p in responses.parent.iterdir()) == ["amber.jsonl"]


def test_unwritable_out_is_refused_before_scoring(tmp_path, capsys, amber_dir, write_responses):
    responses = amber_responses(tmp_path, write_responses)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert (
        dama(
            [
                "eval",
                "score",
                "--bench",
                "amber-g",
                "--responses",
                str(responses),
                "--amber-dir",
                str(amber_dir),
                "--out",
                str(blocker / "out"),
            ]
        )
        == 2
    )
    user_error(capsys, "--out", "cannot be written")


def test_a_failed_metrics_write_leaves_no_details_file(tmp_path, monkeypatch):
    original = records.atomic_write_text

    def fail_on_metrics(path, text):
        if str(path).endswith(".metrics.json"):
            raise OSError(28, "No space left on device")
        return original(path, text)

    monkeypatch.setattr(records, "atomic_write_text", fail_on_metrics)
    with pytest.raises(OSError, match="No space"):
        write_results(tmp_path, "pope_random", {"metrics": {"f1": 50.0}}, [{"id": "1"}])
    assert list(tmp_path.iterdir()) == []


def test_a_value_json_cannot_hold_writes_nothing(tmp_path):
    with pytest.raises(ValueError):
        write_results(tmp_path, "pope_random", {"metrics": {"f1": float("nan")}}, [{"id": "1"}])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("file", "change", "fragment"),
    [
        (
            "captions_val2014.json",
            lambda d: d["annotations"][1].update(caption=["Dogs", "park"]),
            "annotations[1] (id 2): field 'caption' has the wrong type (list",
        ),
        (
            "instances_val2014.json",
            lambda d: d["annotations"][2].update(category_id="34"),
            "annotations[2] (id 102): field 'category_id' has the wrong type (str '34')",
        ),
        ("instances_val2014.json", lambda d: d.update(categories="dog"), "'categories' must be a list, got str"),
    ],
)
def test_coco_files_with_a_wrong_type_are_refused(tmp_path, capsys, coco_dir, write_responses, file, change, fragment):
    data = json.loads((coco_dir / file).read_text())
    change(data)
    (coco_dir / file).write_text(json.dumps(data))
    responses = write_responses("run/object-halbench.jsonl", {1: "A dog.", 2: "A toilet."}, image_id=1)
    assert (
        dama(
            [
                "eval",
                "score",
                "--bench",
                "object-halbench",
                "--responses",
                str(responses),
                "--coco-annotations",
                str(coco_dir),
                "--cache-dir",
                str(tmp_path / "cache"),
            ]
        )
        == 2
    )
    user_error(capsys, str(coco_dir / file), fragment)
    assert sorted(p.name for p in responses.parent.iterdir()) == ["object-halbench.jsonl"]


def test_generate_refuses_an_unwritable_out_before_loading_the_model(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "x.png")
    questions = tmp_path / "pope.jsonl"
    questions.write_text(json.dumps({"question_id": 1, "image": "x.png", "text": "Is there a dog?"}) + "\n")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    argv = [
        "eval",
        "generate",
        "--bench",
        "pope",
        "--questions",
        str(questions),
        "--image-root",
        str(tmp_path),
        "--model",
        str(tmp_path / "no-such-model"),
        "--out",
        str(blocker / "run"),
    ]
    assert dama(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--out" in err and "cannot be written" in err
    assert "no-such-model" not in err  # refused before the model was looked up
