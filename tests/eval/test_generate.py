"""Generation: question-file readers, batched decoding, and `dama eval generate` end to end with resume and repair."""

from __future__ import annotations

import argparse
import base64
import io
import json

import pytest
from PIL import Image

from dama import tiny
from dama.eval import generate
from dama.eval.generate import Decoding, generate_responses, read_questions
from dama.eval.records import RecordError


def _png(colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 18), colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    model, processor = tiny.build_llava()
    return tiny.save_pretrained(model, processor, tmp_path_factory.mktemp("tiny-llava"))


@pytest.fixture
def generic(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rows = []
    for i in range(5):
        (images / f"{i}.png").write_bytes(_png((40 * i, 200 - 30 * i, 90)))
        rows.append({"id": f"q{i}", "question": "Describe the image." + " Be precise." * i, "image": f"{i}.png"})
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, images


def _run(*argv) -> int:
    parser = argparse.ArgumentParser()
    generate.add_arguments(parser)
    return generate.run(parser.parse_args([str(a) for a in argv]))


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_batched_greedy_matches_one_at_a_time():
    # Right padding would shift the shorter prompts' continuations; left padding must give identical answers.
    model, processor = tiny.build_llava()
    items = [{"question": "Describe." + " More detail." * i, "image": Image.new("RGB", (20, 20), (50 * i, 9, 0))}
             for i in range(4)]  # fmt: skip
    batched = generate_responses(model, processor, items, batch_size=4, decoding=Decoding(1, 8))
    single = generate_responses(model, processor, items, batch_size=1, decoding=Decoding(1, 8))
    assert batched == single and len(set(batched)) > 1
    assert processor.tokenizer.padding_side == "right"  # restored for training code that shares the processor


def test_qwen2_vl_generates_in_memory():
    model, processor = tiny.build_qwen2_vl()
    items = [{"question": "What is here?" + " Look." * i, "image": Image.new("RGB", (16, 16), (9, 80 * i, 0))}
             for i in range(3)]  # fmt: skip
    answers = generate_responses(model, processor, items, batch_size=3, decoding=Decoding(2, 5))
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)


def test_generate_end_to_end_resumes_and_repairs_a_truncated_line(tmp_path, generic, llava_dir):
    questions, images = generic
    out = tmp_path / "run"
    common = ["--model", llava_dir, "--bench", "generic", "--questions", questions, "--out", out, "--image-root",
              images, "--batch-size", 2, "--max-new-tokens", 6, "--model-name", "tiny-llava"]  # fmt: skip
    assert _run(*common, "--limit", 3) == 0
    path = out / "generic.jsonl"
    first = _rows(path)
    assert [r["id"] for r in first] == ["q0", "q1", "q2"]
    assert first[0]["bench"] == "generic" and first[0]["model"] == "tiny-llava"
    assert first[0]["decoding"] == {"do_sample": False, "temperature": 0, "num_beams": 1, "max_new_tokens": 6}

    assert _run(*common) == 0  # resumes: only q3, q4 are new
    full = _rows(path)
    assert [r["id"] for r in full] == ["q0", "q1", "q2", "q3", "q4"] and full[:3] == first

    text = path.read_text()
    path.write_text(text[: len(text) - 15])  # a crash mid-line: the last row loses its end and newline
    assert _run(*common) == 0
    assert _rows(path) == full  # the cut row was removed and regenerated identically (greedy)
    assert "\n\n" not in path.read_text()

    with pytest.raises(RecordError, match="not 'tiny-llava' with .*'num_beams': 2"):
        _run(*common, "--num-beams", 2)  # different decoding into the same file would mix settings


def test_object_halbench_reads_base64_and_uses_beam_preset(tmp_path, llava_dir):
    rows = [{"image_id": 100 + i, "question": "Provide a thorough description of the given image.",
             "image": base64.b64encode(_png((i * 90, 30, 30))).decode()} for i in range(2)]  # fmt: skip
    path = tmp_path / "obj.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert _run("--model", llava_dir, "--bench", "object-halbench", "--questions", path, "--out", tmp_path,
                "--max-new-tokens", 4) == 0  # fmt: skip
    written = _rows(tmp_path / "object-halbench.jsonl")
    assert [r["id"] for r in written] == ["100", "101"] and [r["image_id"] for r in written] == [100, 101]
    assert written[0]["decoding"]["num_beams"] == 3 and written[0]["decoding"]["max_new_tokens"] == 4


def test_readers_for_each_benchmark_format(tmp_path):
    pope = tmp_path / "pope.jsonl"
    pope.write_text('{"question_id": 1, "image": "a.jpg", "text": "Is there a dog in the image?", "label": "no"}\n')
    assert read_questions("pope", pope)[0] | {"where": None} == {
        "id": "1", "question": "Is there a dog in the image?", "image": "a.jpg", "where": None}  # fmt: skip
    amber = tmp_path / "query_all.json"
    amber.write_text(json.dumps([{"id": 1, "image": "AMBER_1.jpg", "query": "Describe this image."}]))
    assert read_questions("amber", amber)[0]["question"] == "Describe this image."
    mmhal = tmp_path / "response_template.json"
    mmhal.write_text(json.dumps([{"question": "Q?", "image_src": "https://x.org/imgs/abc.jpg", "image_id": "abc"}]))
    assert read_questions("mmhal", mmhal)[0] | {"where": None} == {
        "id": "0", "question": "Q?", "image": "abc.jpg", "image_id": "abc", "where": None}  # fmt: skip
    mmvet = tmp_path / "mm-vet.json"
    mmvet.write_text(json.dumps({"v1": {"imagename": "v1.png", "question": "Q?", "answer": "A"}}))
    assert read_questions("mmvet", mmvet)[0]["id"] == "v1"
    assert generate.PRESETS["object-halbench"] == Decoding(num_beams=3, max_new_tokens=1024)
    assert generate.PRESETS["pope"].num_beams == 1 and generate.PRESETS["pope"].max_new_tokens <= 64


def test_bad_question_files_fail_before_loading_the_model(tmp_path, generic):
    questions, images = generic
    rows = questions.read_text().splitlines()
    missing = tmp_path / "missing.jsonl"
    missing.write_text("\n".join(rows[:2] + [rows[2].replace("2.png", "gone.png")]) + "\n")
    common = ["--model", tmp_path / "no-model-here", "--bench", "generic", "--out", tmp_path / "o"]
    with pytest.raises(RecordError, match=r"missing.jsonl:3: image file not found: .*gone.png"):
        _run(*common, "--questions", missing, "--image-root", images)
    dup = tmp_path / "dup.jsonl"
    dup.write_text("\n".join([rows[0], rows[1], rows[0]]) + "\n")
    with pytest.raises(RecordError, match=r"dup.jsonl:3: duplicate id 'q0' \(first at .*dup.jsonl:1\)"):
        _run(*common, "--questions", dup, "--image-root", images)
    broken = tmp_path / "broken.jsonl"
    broken.write_text(rows[0] + "\n" + '{"id": "x", "question": \n')
    with pytest.raises(RecordError, match=r"broken.jsonl:2: not valid JSON"):
        _run(*common, "--questions", broken, "--image-root", images)
    no_image = tmp_path / "noimage.jsonl"
    no_image.write_text('{"id": "a", "question": "Q?"}\n')
    with pytest.raises(RecordError, match=r"noimage.jsonl:1: missing field 'image'"):
        _run(*common, "--questions", no_image)


def test_output_from_another_model_or_damaged_in_the_middle_is_refused(tmp_path, generic, llava_dir):
    questions, images = generic
    out = tmp_path / "run"
    out.mkdir()
    common = ["--model", llava_dir, "--bench", "generic", "--questions", questions, "--out", out, "--image-root",
              images, "--max-new-tokens", 2]  # fmt: skip
    decoding = {"do_sample": False, "temperature": 0, "num_beams": 1, "max_new_tokens": 2}
    (out / "generic.jsonl").write_text(
        json.dumps({"id": "zz", "response": "x", "model": "other", "decoding": decoding}) + "\n"
    )
    with pytest.raises(RecordError, match=r"id 'zz' was generated by model 'other'"):
        _run(*common)
    (out / "generic.jsonl").write_text('{"id": "q0", "resp\n{"id": "q1", "response": "x"}\n')
    with pytest.raises(RecordError, match="generic.jsonl:1: not valid JSON.*damaged in the middle"):
        _run(*common)


def test_amber_halves_can_share_one_output_file(tmp_path, generic, llava_dir):
    _, images = generic
    generative, yes_no = tmp_path / "query_generative.json", tmp_path / "query_discriminative.json"
    generative.write_text(
        json.dumps([{"id": i, "image": f"{i}.png", "query": "Describe this image."} for i in (1, 2)])
    )
    yes_no.write_text(json.dumps([{"id": 3, "image": "3.png", "query": "Is there a cat in this image?"}]))
    common = [
        "--model",
        llava_dir,
        "--bench",
        "amber",
        "--out",
        tmp_path,
        "--image-root",
        images,
        "--max-new-tokens",
        3,
    ]
    assert _run(*common, "--questions", generative) == 0
    assert _run(*common, "--questions", yes_no) == 0
    rows = _rows(tmp_path / "amber.jsonl")
    assert [r["id"] for r in rows] == ["1", "2", "3"] and rows[2]["question"] == "Is there a cat in this image?"


def test_mmhal_answers_feed_the_judged_scorer(tmp_path, generic, llava_dir):
    from dama.eval import judged

    _, images = generic
    questions = tmp_path / "response_template.json"
    questions.write_text(json.dumps([
        {"question_type": t, "question": "What colour is it?", "gt_answer": "Red.", "image_content": ["square"],
         "image_src": f"https://example.org/x/{i}.png"} for i, t in enumerate(["attribute", "counting"])
    ]))  # fmt: skip
    assert _run("--model", llava_dir, "--bench", "mmhal", "--questions", questions, "--out", tmp_path,
                "--image-root", images, "--max-new-tokens", 3) == 0  # fmt: skip
    parser = argparse.ArgumentParser()
    judged.add_arguments(parser)
    args = ["--bench", "mmhal", "--responses", tmp_path / "mmhal.jsonl", "--questions", questions, "--judge", "fake"]
    assert judged.run(parser.parse_args([str(a) for a in args])) == 0
    results = json.loads((tmp_path / "mmhal.fake_0.metrics.json").read_text())
    assert results["n_scored"] == 2 and results["partial"] is False and results["model"] == str(llava_dir)
    assert set(results["metrics"]) >= {"score", "score/attribute", "score/counting"}
