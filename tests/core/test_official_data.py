"""The official DAMA JSON in its released encoding imports through both paths, with one parser and no NaN δ.

The official loader (injadlu/DAMA `llava/train/train_dpo.py`, `RLAIFVDataset.__getitem__`) reads every record with

    logps = json.loads(sample['logps'])                                       # line 831
    if type(logps) == type([]): (win_logp, ..., rej_per_token_logp) = logps  # lines 833-835 (six items)
    else:                       (...)                          = logps['logps']  # lines 836-838
    data_dict['vlm_rej_logits'] = sum(json.loads(sample['rejected_logits']))  # line 839
    data_dict['vlm_win_logits'] = sum(json.loads(sample['chosen_logits']))    # line 840

and `dpo_loss` (lines 1251-1255) uses σ(vlm_win − vlm_rej): δ = Σ chosen_logits − Σ rejected_logits. The fixture
below is written in that encoding (the three fields are JSON *strings*, `logps` in both of its forms) and every
expected δ is the sum worked by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from dama import official_release as official
from dama.delta import OFFICIAL_DELTA_MEAN
from dama.errors import DamaError, NonFiniteError
from dama.hardness import read_hardness_output
from dama.hardness.cli import main as hardness_main
from dama.hardness.compute import import_official
from dama.hardness.shard import HardnessDataError
from dama.official_release import official_delta
from dama.preference_data import load_preference_dataset


def logps_list() -> list:
    # [win_logp, win_avg_logp, win_per_token_logps, rej_logp, rej_avg_logp, rej_per_token_logps]
    return [-3.0, -1.5, [-1.0, -2.0], -4.0, -2.0, [-1.5, -2.5]]


def official_records() -> list[dict]:
    """Three records as the official JSON stores them: logits and logps are JSON strings."""
    common = {"origin_dataset": "COCO", "origin_split": "{}", "image_path": "a.jpg"}
    return [
        {
            **common,
            "idx": 10,
            "question": "What is on the table?",
            "chosen": "A red cup.",
            "rejected": "A blue car.",
            "chosen_logits": "[0.25, 0.5]",
            "rejected_logits": "[0.125]",
            "logps": json.dumps(logps_list()),
        },
        {
            **common,
            "idx": 11,
            "question": "Describe the image.",
            "chosen": "A dog.",
            "rejected": "A cat.",
            "chosen_logits": "[0.1]",
            "rejected_logits": "[]",
            "logps": json.dumps({"logps": logps_list()}),
        },
        {
            **common,
            "idx": 12,
            "question": "Is there a bus?",
            "chosen": "No.",
            "rejected": "Yes, a bus.",
            "chosen_logits": "[]",
            "rejected_logits": "[0.2, 0.3]",
            "logps": json.dumps(logps_list()),
        },
    ]


# hand sums: 0.25 + 0.5 − 0.125; 0.1 − sum([]); sum([]) − (0.2 + 0.3)
EXPECTED_DELTA = [0.625, 0.1, -0.5]


def write(tmp_path: Path, records: list[dict]) -> Path:
    (tmp_path / "img").mkdir(exist_ok=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "img" / "a.jpg")
    path = tmp_path / "official.json"
    path.write_text(json.dumps(records))
    return path


def test_official_delta_reads_strings_lists_and_empty_lists():
    assert official_delta("[0.25, 0.5]", "[0.125]") == pytest.approx(0.625)
    assert official_delta([0.25, 0.5], [0.125]) == pytest.approx(0.625)
    assert official_delta("[]", "[]") == 0.0
    assert official_delta("[0.1]", []) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("field", "value", "error", "message"),
    [
        ("chosen_logits", "[0.1, NaN]", NonFiniteError, "field 'chosen_logits': item 1 is nan"),
        ("rejected_logits", "[Infinity]", NonFiniteError, "field 'rejected_logits': item 0 is inf"),
        ("chosen_logits", None, DamaError, "field 'chosen_logits' is null"),
        ("rejected_logits", "[0.1, null]", DamaError, "field 'rejected_logits': item 1 is None, not a number"),
        ("chosen_logits", "0.1, 0.2", DamaError, "field 'chosen_logits': '0.1, 0.2' is not JSON"),
        ("chosen_logits", '{"a": 1}', DamaError, "field 'chosen_logits': expected a list"),
    ],
)
def test_bad_official_values_are_refused_naming_row_and_field(tmp_path, field, value, error, message):
    records = official_records()
    records[1][field] = value
    path = write(tmp_path, records)
    with pytest.raises(error, match=r"official\.json row 1 \(idx 11\): " + message.replace("(", r"\(")):
        load_preference_dataset(path, dataset_format="official", image_root=str(tmp_path / "img"))
    with pytest.raises(HardnessDataError, match=r"row 11: " + message.replace("(", r"\(")):
        import_official(path, tmp_path / "out", progress=False)


def test_training_loader_reads_the_official_encoding(tmp_path):
    path = write(tmp_path, official_records())
    for fmt in ("official", "auto"):
        data, delta_mean = load_preference_dataset(
            path, dataset_format=fmt, image_root=str(tmp_path / "img"), hardness_column="dama_delta"
        )
        assert data["dama_delta"] == pytest.approx(EXPECTED_DELTA)
        assert delta_mean == OFFICIAL_DELTA_MEAN
        assert data[0]["prompt"] == [{"role": "user", "content": "What is on the table?"}]


def test_hardness_import_reads_the_official_encoding(tmp_path):
    path = write(tmp_path, official_records())
    out = tmp_path / "out"
    assert hardness_main(["--data", str(path), "--official", "--out", str(out), "--no-progress"]) == 0
    data, delta_mean = read_hardness_output(out)
    assert data["dama_delta"] == pytest.approx(EXPECTED_DELTA)
    assert data["chosen_clip_probs"] == [[0.25, 0.5], [0.1], []]
    assert delta_mean == OFFICIAL_DELTA_MEAN
    # training on the import re-reads the same fields through the same parser
    trained, stored = load_preference_dataset(out, image_root=str(tmp_path / "img"), hardness_column="dama_delta")
    assert trained["dama_delta"] == pytest.approx(EXPECTED_DELTA) and stored == OFFICIAL_DELTA_MEAN


def test_hardness_import_skips_a_bad_row_when_asked(tmp_path):
    records = official_records()
    records[2]["chosen_logits"] = "[NaN]"
    path = write(tmp_path, records)
    meta = import_official(path, tmp_path / "out", on_error="skip", progress=False)
    data, _ = read_hardness_output(tmp_path / "out")
    assert data["dama_delta"] == pytest.approx(EXPECTED_DELTA[:2]) and meta["n_skipped"] == 1


# --- the paper's RLAIF-V subset (docs/reproduce-paper.md, step 1) --------------------------------------------------


def test_the_generator_is_the_model_field_of_origin_split():
    # the form of a released row of openbmb/RLAIF-V-Dataset: origin_split is a JSON *string*
    row = '{"model": "InstructBLIP-Flan-T5-xxl", "type": "detailed_description"}'
    assert official.rlaif_v_generator(row) == "InstructBLIP-Flan-T5-xxl"
    assert official.rlaif_v_generator("not json") == "not json"
    assert official.rlaif_v_generator('{"type": "qa"}') == '{"type": "qa"}'  # no model field: the raw value
    assert official.rlaif_v_generator(None) == "None"


@pytest.mark.parametrize(
    "name",
    ["LLaVA-1.5-7B", "llava-v1.5-7b", "llava15_7b", "liuhaotian/llava-v1.5-7b", "llava-1.5-7b-hf", "LLaVA 1.5 7B"],
)
def test_llava15_7b_is_found_however_it_is_spelled(name):
    others = ["InstructBLIP-Flan-T5-xxl", "OmniLMM-12B", "llava-v1.5-13b", "LLaVA-NeXT-34B", "llava-v1.6-7b"]
    assert official.llava15_7b_generator([*others, name, name]) == name


def test_no_or_several_llava15_7b_names_is_an_error_listing_them():
    with pytest.raises(official.OfficialDataError, match="no generator name spells LLaVA-1.5-7B.*llava-v1.5-13b"):
        official.llava15_7b_generator(["llava-v1.5-13b", "OmniLMM-12B"])
    with pytest.raises(official.OfficialDataError, match="2 generator names"):
        official.llava15_7b_generator(["llava-v1.5-7b", "LLaVA-1.5-7B"])
