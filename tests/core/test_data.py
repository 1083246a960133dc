"""Data formats and validation: every bad input fails before anything is written, naming file, row and field."""

from __future__ import annotations

import io
import json
import math
import shutil
from pathlib import Path

import pytest
from datasets import Dataset
from PIL import Image

from dama.delta import OFFICIAL_DELTA_MEAN
from dama.preference_data import DataValidationError, load_preference_dataset
from dama.train import build_trainer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "tiny"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def example_rows() -> list[dict]:
    return [json.loads(line) for line in (EXAMPLE / "pairs.jsonl").read_text().splitlines()]


def copy_example(tmp_path: Path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(EXAMPLE, target)
    return target


def png_bytes(colour=(10, 200, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 12), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_rlaif_v_jsonl_with_image_root_converts_to_trl_conversational():
    data, delta_mean = load_preference_dataset(EXAMPLE / "pairs.jsonl", image_root=str(EXAMPLE))
    assert delta_mean is None and len(data) == 12
    row = data[1]
    assert row["prompt"] == [{"role": "user", "content": "Describe the image."}]
    assert row["chosen"][0]["role"] == "assistant" and "green triangle" in row["chosen"][0]["content"]
    assert isinstance(row["image"], Image.Image) and row["image"].size == (24, 24)


def test_rlaif_v_parquet_with_image_bytes(tmp_path):
    rows = {
        "question": ["What is it?", "Describe."],
        "chosen": ["A cup.", "A dog."],
        "rejected": ["A car.", "A cat."],
        "image": [{"bytes": png_bytes(), "path": None}, {"bytes": png_bytes((1, 2, 3)), "path": None}],
        "idx": [5, 6],
    }
    Dataset.from_dict(rows).to_parquet(str(tmp_path / "rlaif.parquet"))
    data, _ = load_preference_dataset(tmp_path / "rlaif.parquet")
    assert len(data) == 2 and data[0]["image"].getpixel((0, 0)) == (10, 200, 30)


def test_official_json_gives_delta_and_official_mean(tmp_path):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "img" / "a.jpg")
    records = [
        {
            "question": "Q?",
            "chosen": "A red cup.",
            "rejected": "A blue car.",
            "image_path": "a.jpg",
            "chosen_logits": [0.3, 0.2],
            "rejected_logits": [0.1, 0.05, 0.05],
            "logps": [-1.0, -2.0],
        }
    ]
    (tmp_path / "official.json").write_text(json.dumps(records))
    data, delta_mean = load_preference_dataset(
        tmp_path / "official.json", image_root=str(tmp_path / "img"), hardness_column="dama_delta"
    )
    assert delta_mean == OFFICIAL_DELTA_MEAN
    assert data[0]["dama_delta"] == pytest.approx(0.5 - 0.2)
    assert "logps" not in data.column_names


def bad_case(tmp_path: Path, name: str) -> tuple[Path, Path, str]:
    """Build one bad dataset; returns (data file, image root, expected message fragment)."""
    root = copy_example(tmp_path)
    rows = example_rows()
    if name == "missing_image":
        (root / rows[3]["image"]).unlink()
        expect = r"row 3 \(id 3\): field 'image'.*not found"
    elif name == "unreadable_image":
        (root / rows[4]["image"]).write_bytes(b"not a png at all")
        expect = r"row 4 \(id 4\): field 'image'.*not a readable image"
    elif name == "empty_response":
        rows[2]["chosen"] = "   "
        expect = r"row 2 \(id 2\): field 'chosen' is empty"
    elif name == "identical":
        rows[5]["rejected"] = rows[5]["chosen"]
        expect = r"row 5 \(id 5\): fields 'chosen' and 'rejected' are identical"
    elif name == "nonfinite_hardness":
        for i, row in enumerate(rows):
            row["dama_delta"] = 0.1 * i
        rows[6]["dama_delta"] = float("nan")
        expect = r"row 6 \(id 6\): field 'dama_delta' is not a finite number"
    elif name == "escaping_path":
        rows[7]["image"] = "../../etc/passwd"
        expect = r"row 7 \(id 7\): field 'image'.*escapes the image folder"
    elif name == "missing_column":
        for row in rows:
            del row["rejected"]
        expect = "needs columns \\['rejected'\\]"
    else:
        raise AssertionError(name)
    return write_jsonl(root / "pairs.jsonl", rows), root, expect


CASES = [
    "missing_image",
    "unreadable_image",
    "empty_response",
    "identical",
    "nonfinite_hardness",
    "escaping_path",
    "missing_column",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_fails_before_anything_is_written(case, tmp_path):
    data, root, expect = bad_case(tmp_path, case)
    out = tmp_path / "run"
    data_aware = "true" if case == "nonfinite_hardness" else "false"
    with pytest.raises(DataValidationError, match=expect) as info:
        build_trainer(
            [
                "--config",
                str(ROOT / "recipes/tiny/dama.yaml"),
                "--dataset_path",
                str(data),
                "--image_root",
                str(root),
                "--output_dir",
                str(out),
                "--data_aware",
                data_aware,
            ]
        )
    assert str(data) in str(info.value)
    assert not out.exists()


def test_data_aware_without_hardness_says_how_to_produce_it(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(DataValidationError, match="dama hardness --data"):
        build_trainer(
            [
                "--config",
                str(ROOT / "recipes/tiny/dama.yaml"),
                "--dataset_path",
                str(EXAMPLE / "pairs.jsonl"),
                "--image_root",
                str(EXAMPLE),
                "--output_dir",
                str(out),
            ]
        )
    assert not out.exists()


def test_malformed_jsonl_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "q", "chosen": "a", "rejected": "b", "image": "x.png"}\n{"question": \n')
    with pytest.raises(DataValidationError, match="bad.jsonl:2: not valid JSON"):
        load_preference_dataset(path)


def test_all_problems_are_reported_together(tmp_path):
    root = copy_example(tmp_path)
    rows = example_rows()
    rows[0]["chosen"] = ""
    rows[9]["rejected"] = rows[9]["chosen"]
    path = write_jsonl(root / "pairs.jsonl", rows)
    with pytest.raises(DataValidationError) as info:
        load_preference_dataset(path, image_root=str(root))
    message = str(info.value)
    assert message.startswith("2 problem(s)") and "row 0" in message and "row 9" in message


def test_tiny_recipe_trains_end_to_end_with_hardness_column(tmp_path):
    rows = example_rows()
    for i, row in enumerate(rows):
        row["dama_delta"] = math.sin(i)  # any finite hardness; `dama hardness` produces the real one
    root = copy_example(tmp_path)
    data = write_jsonl(root / "scored.jsonl", rows)
    trainer = build_trainer(
        [
            "--config",
            str(ROOT / "recipes/tiny/dama.yaml"),
            "--dataset_path",
            str(data),
            "--image_root",
            str(root),
            "--output_dir",
            str(tmp_path / "run"),
            "--max_steps",
            "3",
        ]
    )
    assert trainer.delta_mean == pytest.approx(sum(math.sin(i) for i in range(12)) / 12)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 3 and all(math.isfinite(h["loss"]) for h in logs)
