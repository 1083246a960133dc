"""One set of preference-row accessors (`dama.row_fields`), the hardness column honoured by the data import, one δ̄ rule."""

from __future__ import annotations

import json
import math

import pytest
from PIL import Image

from dama import delta
from dama import row_fields as rows
from dama.errors import DamaError, NonFiniteError
from dama.images import is_base64_image
from dama.preference_data import load_preference_dataset


def test_text_accessors_on_strings_and_conversations():
    prompt = [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": "<image>\nWhat is"}, {"text": "here?"}],
        },
    ]
    answer = [
        {"role": "assistant", "content": [{"type": "text", "text": "A cat."}, {"type": "text", "text": "A mat."}]}
    ]
    assert rows.prompt_text(prompt) == "What is here?"
    assert rows.prompt_text("  <image>\nWhat is here? ") == "What is here?"
    assert rows.response_text(answer) == "A cat. A mat."
    assert rows.response_text(" A dog. ") == "A dog."
    assert rows.response_text({"role": "assistant", "content": "A bus."}) == "A bus."
    # verbatim, for training text: nothing stripped, no separators, one role
    assert rows.text_of(answer) == "A cat.A mat."
    assert rows.text_of(prompt, role="user") == "<image>\nWhat ishere?"
    assert rows.strip_placeholders("<img>\nQ <image>", "<img>") == "Q "
    assert rows.text_of(None) == rows.response_text(None) == ""


def test_field_choices_and_row_names():
    assert rows.id_field(["idx", "id"]) == "id" and rows.id_field(["idx"]) == "idx" and rows.id_field([]) is None
    assert rows.prompt_field(["prompt", "question"]) == "question" and rows.prompt_field(["prompt"]) == "prompt"
    assert rows.image_field(["images"]) == "images" and rows.image_field(["image_path"]) is None
    assert rows.row_where("d.json", 3, {"idx": 17}, "idx") == "d.json row 3 (idx 17)"
    assert rows.row_where("d.json", 3, {}, None) == "d.json row 3"


def test_base64_or_path_is_decided_once():
    assert is_base64_image("iVBORw0KGgo" + "A" * 300)
    assert not is_base64_image("images/0001.jpg")
    assert not is_base64_image("/data/" + "a" * 300 + ".jpg")  # a long path is still a path


def test_delta_mean_override_then_stored_then_computed():
    assert delta.resolve_delta_mean([0.1, 0.3], override=0.5, stored=0.2) == (0.5, "override")
    assert delta.resolve_delta_mean([0.1, 0.3], stored=0.2) == (0.2, "stored")
    value, source = delta.resolve_delta_mean([0.1, 0.2, 0.4])
    assert source == "computed" and value == math.fsum([0.1, 0.2, 0.4]) / 3
    with pytest.raises(NonFiniteError, match=r"training row 1: field 'my_delta' is not finite \(nan\)"):
        delta.resolve_delta_mean([0.1, float("nan")], column="my_delta", rows="training row")
    with pytest.raises(NonFiniteError, match="--delta-mean"):
        delta.resolve_delta_mean([0.1], override=float("inf"), override_name="--delta-mean")
    with pytest.raises(DamaError, match="no 'dama_delta' value"):
        delta.resolve_delta_mean([])


def _official(tmp_path):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "img" / "a.jpg")
    record = {"idx": 1, "question": "Q?", "chosen": "A cat.", "rejected": "A dog.", "image_path": "a.jpg",
              "chosen_logits": "[0.5, 0.25]", "rejected_logits": "[0.5]", "logps": "[]"}  # fmt: skip
    path = tmp_path / "official.json"
    path.write_text(json.dumps([record, {**record, "idx": 2, "chosen_logits": "[1.0]"}]))
    return path


def test_the_import_writes_delta_under_the_asked_hardness_column(tmp_path):
    path = _official(tmp_path)
    data, _ = load_preference_dataset(path, image_root=str(tmp_path / "img"), hardness_column="my_delta")
    assert data["my_delta"] == pytest.approx([0.25, 0.5]) and delta.HARDNESS_COLUMN not in data.column_names
    data, _ = load_preference_dataset(path, image_root=str(tmp_path / "img"))
    assert data[delta.HARDNESS_COLUMN] == pytest.approx([0.25, 0.5])


def test_a_hardness_output_is_read_under_the_asked_hardness_column(tmp_path):
    from dama.hardness.compute import import_official

    import_official(_official(tmp_path), tmp_path / "out", progress=False)
    data, delta_mean = load_preference_dataset(
        tmp_path / "out", image_root=str(tmp_path / "img"), hardness_column="my_delta"
    )
    assert data["my_delta"] == pytest.approx([0.25, 0.5]) and delta.HARDNESS_COLUMN not in data.column_names
    assert delta_mean == pytest.approx(0.0482190464911681)


def test_the_official_delta_mean_rule_is_one_function():
    """Official data's δ̄ setting: unset → the release's constant; "computed" → the mean of the imported δ (None here);
    a number → that number, named "official" only when it is the constant."""
    assert delta.official_delta_mean(None) == (delta.OFFICIAL_DELTA_MEAN, "official")
    assert delta.official_delta_mean("computed") == (None, "computed")
    assert delta.official_delta_mean(0.1) == (0.1, "override")
    assert delta.official_delta_mean(delta.OFFICIAL_DELTA_MEAN) == (delta.OFFICIAL_DELTA_MEAN, "official")
