"""The error contract of `dama train` / `dama precompute-ref` through the real CLI.

Each case runs `dama.cli.main([...])` as a user would and checks the exit code (2 for a user error), the one-line
message (file, row, field) without a traceback, and the files left behind. The NaN cases follow docs/errors.md:
nothing non-finite reaches a saved model with exit 0.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from helpers import cpu_config, make_vision_pairs

from dama import DAMATrainer
from dama.cli import main as dama
from dama.errors import DamaError, NonFiniteError
from dama.tiny import build_llava, clone

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "tiny"
RECIPE = ROOT / "recipes" / "tiny" / "dama.yaml"


def example_rows() -> list[dict]:
    return [json.loads(line) for line in (EXAMPLE / "pairs.jsonl").read_text().splitlines() if line.strip()]


def trl_jsonl(path: Path, deltas: list[float]) -> Path:
    """The shipped example in TRL's conversational format with a `dama_delta` column (json writes NaN literals)."""
    rows = [
        {
            "prompt": [{"role": "user", "content": r["question"]}],
            "chosen": [{"role": "assistant", "content": r["chosen"]}],
            "rejected": [{"role": "assistant", "content": r["rejected"]}],
            "image": r["image"],
            "dama_delta": d,
        }
        for r, d in zip(example_rows(), deltas)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def precompute_argv(data: Path, out: Path, run: Path) -> list[str]:
    return [
        "precompute-ref",
        "--out",
        str(out),
        "--config",
        str(RECIPE),
        "--dataset_path",
        str(data),
        "--image_root",
        str(EXAMPLE),
        "--output_dir",
        str(run),
    ]


def train_argv(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--config",
        str(RECIPE),
        "--dataset_path",
        str(data),
        "--image_root",
        str(EXAMPLE),
        "--output_dir",
        str(out),
        "--max_steps",
        "2",
        *extra,
    ]


def official_hardness(tmp_path: Path) -> Path:
    """A real `dama hardness --official` output of the example (δ = Σ chosen_logits − Σ rejected_logits)."""
    rows = [
        {
            "question": r["question"],
            "chosen": r["chosen"],
            "rejected": r["rejected"],
            "image_path": r["image"],
            "chosen_logits": [0.5, 0.1 * i],
            "rejected_logits": [0.25],
            "logps": [0.0],
        }
        for i, r in enumerate(example_rows())
    ]
    (tmp_path / "official.json").write_text(json.dumps(rows))
    out = tmp_path / "hardness"
    assert (
        dama(["hardness", "--data", str(tmp_path / "official.json"), "--official", "--out", str(out), "--no-progress"])
        == 0
    )
    return out


def assert_user_error(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.search(r"dama [a-z-]+: error: ", err), err  # the dispatcher's one line (progress bars may precede it)
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def test_nan_delta_mean_stored_in_hardness_output_is_refused(tmp_path, capsys):
    out = official_hardness(tmp_path)
    meta_path = out / "hardness.json"
    meta = json.loads(meta_path.read_text())
    meta["delta_mean"] = float("nan")  # what an older `dama hardness --delta-mean nan` stored
    meta_path.write_text(json.dumps(meta))
    run = tmp_path / "run"
    assert dama(train_argv(out, run)) == 2
    assert_user_error(capsys, str(meta_path), "'delta_mean'", "nan", "--overwrite")
    assert not run.exists()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_hardness_row_is_refused_with_file_row_field(tmp_path, capsys, bad):
    deltas = [0.1 * i for i in range(12)]
    deltas[3] = bad
    data = trl_jsonl(tmp_path / "pairs.jsonl", deltas)
    run = tmp_path / "run"
    assert dama(train_argv(data, run)) == 2
    assert_user_error(capsys, str(data), "row 3", "'dama_delta'", "not a finite number")
    assert not run.exists()


def test_training_stops_at_the_first_non_finite_loss_and_saves_nothing(tmp_path, capsys):
    # finite inputs, but a learning rate that turns the weights into inf after the first update: step 2's loss is NaN
    data = trl_jsonl(tmp_path / "pairs.jsonl", [0.1 * i for i in range(12)])
    run = tmp_path / "run"
    assert dama(train_argv(data, run, "--learning_rate", "1e30", "--max_steps", "3")) == 2
    assert_user_error(capsys, "non-finite loss at train step 2", "not saved")
    assert not (run / "model.safetensors").exists() and not (run / "config.json").exists()


def test_trainer_init_refuses_a_non_finite_delta_mean(tmp_path):
    model, processor = build_llava(seed=3)
    with pytest.raises(NonFiniteError, match="δ̄"):
        DAMATrainer(
            model=model,
            ref_model=clone(model),
            args=cpu_config(str(tmp_path)),
            train_dataset=make_vision_pairs(4),
            processing_class=processor,
            delta_mean=float("nan"),
        )


def test_a_non_finite_beta_stops_training(tmp_path):
    model, processor = build_llava(seed=3)
    trainer = DAMATrainer(
        model=model,
        ref_model=clone(model),
        args=cpu_config(str(tmp_path)),
        train_dataset=make_vision_pairs(4),
        processing_class=processor,
    )
    trainer.delta_mean = float("nan")  # past every input check (a bug, say): β_C = β·σ(δ)/σ(NaN) must stop the step
    with pytest.raises(NonFiniteError, match="non-finite β_C"):
        trainer.train()


RECIPE_CASES = {
    "unknown_key": ("keep_ration: 0.5\n", "keep_ration"),
    "keep_ratio": ("keep_ratio: 1.5\n", "keep_ratio must be in (0, 1]"),
    "beta": ("beta: 0.0\n", "beta must be > 0"),
    "gamma": ("gamma: 1.0\n", "gamma must be in [0, 1)"),
    "beta_nan": ("beta: .nan\n", "beta must be a finite number"),
    "yaml_syntax": ("beta: [0.1\n", "not valid YAML"),
}


@pytest.mark.parametrize("case", sorted(RECIPE_CASES))
def test_recipe_errors_are_one_line_messages(tmp_path, capsys, case):
    extra, fragment = RECIPE_CASES[case]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.read_text() + "\n" + extra)
    run = tmp_path / "run"
    argv = ["train", "--config", str(recipe), "--dataset_path", str(EXAMPLE / "pairs.jsonl"), "--output_dir", str(run)]
    assert dama(argv) == 2
    err = assert_user_error(capsys, fragment)
    if case == "yaml_syntax":
        assert str(recipe) in err and "line" in err
    assert not run.exists()


def test_missing_recipe_and_missing_data_are_user_errors(tmp_path, capsys):
    assert dama(["train", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert_user_error(capsys, "nope.yaml")
    assert dama(train_argv(tmp_path / "missing.jsonl", tmp_path / "run")) == 2
    assert_user_error(capsys, "missing.jsonl", "no such file or folder")


def test_precompute_ref_reports_data_errors_without_traceback(tmp_path, capsys):
    deltas = [0.1 * i for i in range(12)]
    deltas[5] = float("nan")
    data = trl_jsonl(tmp_path / "pairs.jsonl", deltas)
    out = tmp_path / "with-ref"
    argv = precompute_argv(data, out, tmp_path / "run")
    assert dama(argv) == 2
    assert_user_error(capsys, "row 5", "'dama_delta'")
    assert not out.exists()


def test_debug_shows_the_traceback_of_a_user_error(tmp_path, monkeypatch):
    argv = train_argv(tmp_path / "missing.jsonl", tmp_path / "run")
    with pytest.raises(DamaError, match="missing.jsonl"):
        dama(["--debug", *argv])
    monkeypatch.setenv("DAMA_DEBUG", "1")
    with pytest.raises(DamaError, match="missing.jsonl"):
        dama(argv)


def test_unwritable_output_dir_is_refused_before_training(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    data = trl_jsonl(tmp_path / "pairs.jsonl", [0.1 * i for i in range(12)])
    assert dama(train_argv(data, blocker / "run")) == 2
    assert_user_error(capsys, "output_dir", str(blocker / "run"), "cannot be written")
    assert blocker.read_text() == "not a folder"


def test_finite_run_still_trains_and_saves(tmp_path, capsys):
    data = trl_jsonl(tmp_path / "pairs.jsonl", [math.sin(i) for i in range(12)])
    run = tmp_path / "run"
    assert dama(train_argv(data, run)) == 0
    assert (run / "model.safetensors").is_file()


def test_identical_pair_is_refused_by_dama_train(tmp_path, capsys):
    data = trl_jsonl(tmp_path / "pairs.jsonl", [0.1 * i for i in range(12)])
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    rows[4]["rejected"] = [{"role": "assistant", "content": rows[4]["chosen"][0]["content"]}]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    run = tmp_path / "run"
    assert dama(train_argv(data, run)) == 2
    assert_user_error(capsys, str(data), "row 4", "'chosen' and 'rejected' are identical")
    assert not run.exists()


def test_a_number_where_text_is_expected_names_line_row_and_field(tmp_path, capsys):
    rows = example_rows()
    rows[3]["chosen"] = 5
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert dama(train_argv(data, tmp_path / "run", "--data_aware", "false")) == 2
    assert_user_error(capsys, f"{data} line 4 (row 3): field 'chosen' is number 5")


def test_a_non_utf8_byte_names_file_and_line(tmp_path, capsys):
    lines = (EXAMPLE / "pairs.jsonl").read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b"image shows", b"image \xff shows", 1)
    data = tmp_path / "pairs.jsonl"
    data.write_bytes(b"".join(lines))
    assert dama(train_argv(data, tmp_path / "run", "--data_aware", "false")) == 2
    assert_user_error(capsys, f"{data}:3: not UTF-8 text")


def test_a_byte_order_mark_before_a_json_list_is_accepted(tmp_path):
    data = tmp_path / "pairs.json"
    data.write_text("\ufeff" + json.dumps(example_rows()), encoding="utf-8")
    from dama.preference_data import load_preference_dataset

    dataset, _ = load_preference_dataset(data, image_root=str(EXAMPLE))
    assert len(dataset) == 12


def test_official_record_with_a_null_logit_names_the_logit_field(tmp_path, capsys):
    rows = [
        {
            "question": r["question"],
            "chosen": r["chosen"],
            "rejected": r["rejected"],
            "image_path": r["image"],
            "chosen_logits": [0.5],
            "rejected_logits": [0.25],
            "logps": [0.0],
        }
        for r in example_rows()
    ]
    rows[2]["chosen_logits"] = [0.5, None]
    data = tmp_path / "official.json"
    data.write_text(json.dumps(rows))
    assert dama(train_argv(data, tmp_path / "run")) == 2
    err = assert_user_error(capsys, f"{data} row 2: field 'chosen_logits'")
    assert "dama_delta" not in err


def test_precompute_ref_refuses_an_unwritable_out_before_the_reference_pass(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    data = trl_jsonl(tmp_path / "pairs.jsonl", [0.1 * i for i in range(12)])
    argv = precompute_argv(data, blocker / "with-ref", tmp_path / "run")
    assert dama(argv) == 2
    assert_user_error(capsys, "--out", "cannot be written", "Nothing was computed")


@pytest.mark.parametrize("extra", [["--seeds", "0"], ["--out", "FILE/demo"]])
def test_demo_refuses_bad_options_before_any_work(tmp_path, capsys, extra):
    blocker = tmp_path / "FILE"
    blocker.write_text("x")
    argv = ["demo", "--quick", *[a.replace("FILE", str(blocker)) for a in extra]]
    assert dama(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "dama demo: error: " in err


def test_a_checkpoint_with_non_finite_weights_is_not_written(tmp_path, capsys):
    data = trl_jsonl(tmp_path / "pairs.jsonl", [0.1 * i for i in range(12)])
    run = tmp_path / "run"
    argv = train_argv(
        data, run, "--learning_rate", "1e39", "--max_steps", "3", "--save_strategy", "steps", "--save_steps", "1"
    )
    assert dama(argv) == 2  # 1e39 > float32 max: the update of step 1 makes weights inf; its checkpoint is refused
    assert_user_error(capsys, "non-finite values at step 1", "checkpoint is not written")
    assert not (run / "checkpoint-1").exists()


def test_a_number_as_the_image_names_row_and_field(tmp_path, capsys):
    rows = [{**row, "image": 5} for row in example_rows()]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert dama(train_argv(data, tmp_path / "run", "--data_aware", "false")) == 2
    assert_user_error(capsys, f"{data} row 0 (id 0): field 'image'", "int")


def test_a_damaged_parquet_file_is_a_user_error(tmp_path, capsys):
    data = tmp_path / "pairs.parquet"
    data.write_bytes(b"PAR1 cut short")
    assert dama(train_argv(data, tmp_path / "run", "--data_aware", "false")) == 2
    assert_user_error(capsys, f"{data}: not a readable parquet file")


def test_a_plain_text_prompt_without_the_image_placeholder_is_refused(tmp_path, capsys):
    rows = [
        {
            "idx": r["idx"],
            "prompt": r["question"],
            "chosen": r["chosen"],
            "rejected": r["rejected"],
            "image": r["image"],
        }
        for r in example_rows()
    ]
    rows[0]["prompt"] = "<image>\n" + rows[0]["prompt"]  # the tiny LLaVA processor's placeholder: this row is fine
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    run = tmp_path / "run"
    assert dama(train_argv(data, run, "--data_aware", "false")) == 2
    err = assert_user_error(
        capsys,
        "11 problem(s)",
        f"{data} row 1 (id 1): field 'prompt' is plain text with 0 '<image>' placeholder(s) for 1 image(s)",
    )
    assert "row 0 " not in err
    assert not (run / "model.safetensors").exists()


@pytest.mark.parametrize(("name", "content"), [("pairs.jsonl", ""), ("pairs.jsonl", "\n\n"), ("pairs.json", "[]")])
def test_an_empty_data_file_is_named(tmp_path, capsys, name, content):
    data = tmp_path / name
    data.write_text(content)
    run = tmp_path / "run"
    assert dama(train_argv(data, run)) == 2
    err = assert_user_error(capsys, f"{data}: holds no rows")
    assert "cannot tell the data format" not in err
    assert not run.exists()


@pytest.mark.parametrize("value", ["0", "-3"])
def test_max_samples_below_one_is_refused(tmp_path, capsys, value):
    """`--max_samples 0` selects no pair: refused, instead of a run on nothing that exits 0."""
    data = tmp_path / "pairs.jsonl"
    data.write_text(
        json.dumps({"prompt": "<image>What is it?", "chosen": "a", "rejected": "b", "image": "x.png"}) + "\n"
    )
    run = tmp_path / "run"
    assert dama(train_argv(data, run, "--max_samples", value)) == 2
    assert_user_error(capsys, f"max_samples must be ≥ 1 (or unset for every pair), got {value}")
    assert not (run / "model.safetensors").exists()


def test_data_of_an_unknown_format_names_the_file(tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"text": "a", "label": 1}) + "\n")
    assert dama(train_argv(data, tmp_path / "run")) == 2
    assert_user_error(capsys, f"{data}: cannot tell the data format from the columns ['text', 'label']")


def test_a_model_that_cannot_be_found_is_one_line(tmp_path, capsys, no_hub):
    data = trl_jsonl(tmp_path / "pairs.jsonl", [0.1 * i for i in range(12)])
    run = tmp_path / "run"
    assert dama(train_argv(data, run, "--model_name_or_path", "no-such-org/no-such-vlm")) == 2
    err = assert_user_error(capsys, "model_name_or_path 'no-such-org/no-such-vlm' cannot be found", "local folder")
    assert "\n" not in err[err.index("dama train: error: ") :].rstrip("\n"), err
    assert not run.exists()
