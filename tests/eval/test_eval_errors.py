"""`dama eval score` user errors through the real CLI: exit 2, one message, no result file left behind."""

from __future__ import annotations

import json
import os
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


def test_generate_names_a_model_that_cannot_be_found(tmp_path, capsys, no_hub):
    """`--model` that is neither a folder nor on the hub (no network here): exit 2, one line saying so and how to
    point at a local folder; nothing is written."""
    from PIL import Image

    Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "x.png")
    questions = tmp_path / "pope.jsonl"
    questions.write_text(json.dumps({"question_id": 1, "image": "x.png", "text": "Is there a dog?"}) + "\n")
    out = tmp_path / "run"
    argv = ["eval", "generate", "--bench", "pope", "--questions", str(questions), "--image-root", str(tmp_path),
            "--model", "no-such-org/no-such-vlm", "--out", str(out)]  # fmt: skip
    assert dama(argv) == 2
    err = user_error_of(capsys, "dama eval generate: error: ", "--model 'no-such-org/no-such-vlm' cannot be found")
    assert "local folder" in err and len(err.strip().splitlines()) == 1, err
    assert not (out / "pope.jsonl").exists()


def user_error_of(capsys, prefix: str, *fragments: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and prefix in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def test_a_bad_line_of_a_synonym_file_names_the_file_and_line(tmp_path, capsys, coco_dir, write_responses):
    synonyms = tmp_path / "synonyms.txt"
    synonyms.write_text("dog, puppy\n, kitten\n")  # line 2 has no class name
    responses = write_responses("run/object-halbench.jsonl", {1: "A dog."}, image_id=1)
    argv = ["eval", "score", "--bench", "object-halbench", "--responses", str(responses), "--coco-annotations",
            str(coco_dir), "--cache-dir", str(tmp_path / "cache"), "--synonyms", str(synonyms)]  # fmt: skip
    assert dama(argv) == 2
    user_error(capsys, f"--synonyms {synonyms}: synonym list line 2: empty class name")
    assert sorted(p.name for p in responses.parent.iterdir()) == ["object-halbench.jsonl"]


def _pope_argv(tmp_path: Path, write_responses) -> list[str]:
    responses = write_responses("run/pope.jsonl", {1: "Yes"})
    questions = tmp_path / "coco_pope_random.json"
    questions.write_text(
        json.dumps({"question_id": 1, "image": "x.jpg", "text": "Is there a dog?", "label": "yes"}) + "\n"
    )
    return ["eval", "score", "--bench", "pope", "--responses", str(responses), "--questions", str(questions)]


def test_a_value_error_from_a_bug_keeps_its_traceback(tmp_path, monkeypatch, write_responses):
    """Only `DamaError`s (and OSErrors about the user's files) are user errors: a plain ValueError raised by a bug in
    a scorer reaches the interpreter with its traceback instead of being printed as bad input."""
    from dataclasses import replace

    from dama.eval.registry import BENCHMARKS

    def broken(args):
        raise ValueError("a bug in the scorer")

    monkeypatch.setitem(BENCHMARKS, "pope", replace(BENCHMARKS["pope"], score=broken))
    with pytest.raises(ValueError, match="a bug in the scorer"):
        dama(_pope_argv(tmp_path, write_responses))


def test_debug_reaches_eval_through_the_dispatcher_alone(tmp_path, monkeypatch, write_responses, capsys):
    """`dama --debug eval ...` shows the traceback of a user error without telling eval through the environment."""
    from dataclasses import replace

    from dama.eval.records import RecordError
    from dama.eval.registry import BENCHMARKS

    seen = []

    def refuse(args):
        seen.append(os.environ.get("DAMA_DEBUG"))
        raise RecordError(f"{args.responses}:1: a bad row")

    monkeypatch.delenv("DAMA_DEBUG", raising=False)
    monkeypatch.setitem(BENCHMARKS, "pope", replace(BENCHMARKS["pope"], score=refuse))
    argv = _pope_argv(tmp_path, write_responses)
    with pytest.raises(RecordError, match="a bad row"):
        dama(["--debug", *argv])
    assert dama(argv) == 2
    user_error(capsys, ":1: a bad row")
    assert seen == [None, None]


def test_a_non_utf8_byte_in_a_users_json_or_text_file_names_file_and_line(
    tmp_path, capsys, amber_dir, coco_dir, write_responses
):
    """A UnicodeDecodeError is a ValueError, which the dispatcher treats as a bug: the readers of the user's
    files turn it into a RecordError naming the file and line."""
    responses = amber_responses(tmp_path, write_responses)
    relation = amber_dir / "relation.json"
    relation.write_bytes(b'{\n  "dog": ["puppy", "caf\xe9"]\n}\n')  # Latin-1 é on line 2
    argv = ["eval", "score", "--bench", "amber-g", "--responses", str(responses), "--amber-dir", str(amber_dir)]
    assert dama(argv) == 2
    user_error(capsys, f"{relation}:2: not UTF-8 text")
    synonyms = tmp_path / "synonyms.txt"
    synonyms.write_bytes(b"dog, puppy\ncaf\xe9, coffee\n")
    responses = write_responses("run2/object-halbench.jsonl", {1: "A dog."}, image_id=1)
    argv = ["eval", "score", "--bench", "object-halbench", "--responses", str(responses), "--coco-annotations",
            str(coco_dir), "--cache-dir", str(tmp_path / "cache"), "--synonyms", str(synonyms)]  # fmt: skip
    assert dama(argv) == 2
    user_error(capsys, f"{synonyms}:2: not UTF-8 text")


def test_a_bbox_that_is_not_numbers_names_the_context_line(tmp_path, capsys):
    """LLaVA-Bench's context file: a text bbox value made a bare format ValueError; it names file, line, field."""

    def jsonl(name, rows):
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path

    questions = jsonl("q.jsonl", [{"question_id": 1, "image": "a.jpg", "text": "What?", "category": "conv"}])
    answers = jsonl("a.jsonl", [{"question_id": 1, "text": "A cup."}])
    context = jsonl("c.jsonl", [{"image": "a.jpg", "caption": "A cup.",
                                 "instances": [{"category": "cup", "bbox": ["0.1", 0.2, 0.5, 0.9]}]}])  # fmt: skip
    responses = tmp_path / "run" / "llava-bench.jsonl"
    responses.parent.mkdir()
    responses.write_text(json.dumps({"id": "1", "question": "What?", "response": "A cup.", "model": "m",
                                     "decoding": {"num_beams": 1}}) + "\n")  # fmt: skip
    argv = ["eval", "score", "--bench", "llava-bench", "--responses", str(responses), "--questions", str(questions),
            "--answers", str(answers), "--context", str(context), "--judge", "fake"]  # fmt: skip
    assert dama(argv) == 2
    user_error(capsys, f"{context}:1: field 'instances' item 0: 'bbox' must be a list of numbers")
    assert sorted(p.name for p in responses.parent.iterdir()) == ["llava-bench.jsonl"]
