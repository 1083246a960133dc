"""Every shipped recipe parses through the real parser; unknown keys fail; accelerate configs load."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import yaml

from dama.config import DAMAConfig
from dama.train import parse_args

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted(p for p in (ROOT / "recipes").rglob("*.yaml") if p.parent.name != "accelerate")
ACCELERATE = sorted((ROOT / "recipes" / "accelerate").glob("*.yaml"))


def test_recipes_are_shipped():
    names = {str(p.relative_to(ROOT / "recipes")) for p in RECIPES}
    assert {"llava-1.5-7b/dama.yaml", "llava-1.5-7b/dpo.yaml", "tiny/dama.yaml", "tiny/dpo.yaml"} <= names
    assert any(name.startswith("qwen2.5-vl") for name in names)
    assert {p.stem for p in ACCELERATE} >= {"ddp", "zero2", "zero3", "fsdp"}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(ROOT / "recipes")))
def test_recipe_parses_and_keys_map_to_fields(recipe, tmp_path):
    raw = yaml.safe_load(recipe.read_text())
    # bf16 and tf32 need a GPU; everything else parses as written
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config, model_args, data_args, options = parse_args(
            ["--config", str(recipe), "--bf16", "false", "--tf32", "false", "--output_dir", str(tmp_path)]
        )
    deprecated = [str(w.message) for w in caught if "deprecated" in str(w.message).lower()]
    assert not deprecated, f"{recipe.name} uses deprecated arguments: {deprecated}"
    assert isinstance(config, DAMAConfig)
    for key, value in raw.items():
        if key in {"bf16", "tf32", "output_dir"}:
            continue
        owner = next(o for o in (config, model_args, data_args, options) if hasattr(o, key))
        parsed = getattr(owner, key)
        if key == "lr_scheduler_type":
            parsed = parsed.value
        if key == "report_to":
            assert parsed in ([], ["none"], "none")
            continue
        assert parsed == value or str(parsed) == str(value), (key, parsed, value)
    header = recipe.read_text().splitlines()[:12]
    assert any("dama train" in line or "-m dama.train" in line for line in header), (
        "header must give the launch command"
    )


def test_llava_recipes_differ_only_in_dama_switches():
    dama = yaml.safe_load((ROOT / "recipes/llava-1.5-7b/dama.yaml").read_text())
    dpo = yaml.safe_load((ROOT / "recipes/llava-1.5-7b/dpo.yaml").read_text())
    differing = {k for k in dama.keys() | dpo.keys() if dama.get(k) != dpo.get(k)}
    assert differing == {"data_aware", "model_aware", "keep_ratio", "output_dir"}
    assert dama["learning_rate"] == 5e-7 and dama["per_device_train_batch_size"] * 4 == 16


def test_llava_recipes_keep_the_official_order_and_text_and_say_what_differs():
    for name in ("dama", "dpo"):
        text = (ROOT / f"recipes/llava-1.5-7b/{name}.yaml").read_text()
        raw = yaml.safe_load(text)
        # injadlu/DAMA train_dpo.py: SequentialSampler (line 1318), Vicuna-v1 conversation (line 864, preprocess_v1)
        assert raw["keep_file_order"] is True and raw["training_text"] == "vicuna_v1"
        assert "What still differs from the official run" in text


def test_unknown_key_in_recipe_fails(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text((ROOT / "recipes/tiny/dama.yaml").read_text() + "\nkeep_ration: 0.5\n")
    with pytest.raises(ValueError, match="keep_ration"):
        parse_args(["--config", str(recipe)])


def test_unknown_command_line_key_fails():
    with pytest.raises(ValueError, match="not_a_field"):
        parse_args(["--config", str(ROOT / "recipes/tiny/dama.yaml"), "--not_a_field", "1"])


def test_command_line_overrides_recipe():
    config, *_ = parse_args(["--config", str(ROOT / "recipes/tiny/dama.yaml"), "--keep_ratio", "0.5"])
    assert config.keep_ratio == 0.5


def test_out_of_range_values_fail():
    with pytest.raises(ValueError, match="keep_ratio"):
        parse_args(["--config", str(ROOT / "recipes/tiny/dama.yaml"), "--keep_ratio", "1.5"])


@pytest.mark.parametrize(
    ("key", "bad"),
    [
        ("reward_scale", "beta"),
        ("model_aware_form", "mean"),
        ("ema_input", "kep"),
        ("loss_normalisation", "rank"),
        ("training_text", "vicuna"),
    ],
)
def test_fields_with_fixed_values_list_their_choices(key, bad, tmp_path, capsys):
    # on the command line argparse rejects the value and names the choices (exit 2, like every user error)
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--config", str(ROOT / "recipes/tiny/dama.yaml"), f"--{key}", bad])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
    # in a recipe the value bypasses argparse's check (YAML values become defaults); the config rejects it
    recipe = tmp_path / "bad.yaml"
    recipe.write_text((ROOT / "recipes/tiny/dama.yaml").read_text() + f"\n{key}: {bad}\n")
    with pytest.raises(ValueError, match=key):
        parse_args(["--config", str(recipe)])


@pytest.mark.parametrize("path", ACCELERATE, ids=lambda p: p.stem)
def test_accelerate_configs_load(path):
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(str(path))
    assert config.num_processes >= 2
    assert "--config_file recipes/accelerate/" in path.read_text()


def test_tiny_recipe_header_commands_work(tmp_path, monkeypatch):
    """The commands in recipes/tiny/dama.yaml's header, run as written from a copy of the repository layout."""
    import shutil

    from dama.cli import main as dama_main

    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")
    monkeypatch.chdir(tmp_path)
    header = [
        line.lstrip("# ").strip()
        for line in (ROOT / "recipes/tiny/dama.yaml").read_text().splitlines()
        if line.lstrip("# ").startswith("dama ")
    ]
    assert [h.split()[1] for h in header] == ["hardness", "train"]
    hardness = header[0].split()[1:] + ["--no-progress", "--workers", "0"]
    assert dama_main(hardness) == 0
    assert dama_main(header[1].split()[1:] + ["--max_steps", "2"]) == 0
    assert (tmp_path / "runs" / "tiny-dama" / "model.safetensors").is_file()


def test_checkpointing_defaults_on_without_the_deprecated_name(tmp_path):
    """TRL's default (checkpointing on) under transformers' current name, `activation_checkpointing`, with no warning;
    the deprecated `gradient_checkpointing` still takes effect, with transformers' warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        default = DAMAConfig(output_dir=str(tmp_path), use_cpu=True)
        off = DAMAConfig(output_dir=str(tmp_path), use_cpu=True, activation_checkpointing=False)
    assert not [w for w in caught if "deprecated" in str(w.message).lower()]
    assert default.activation_checkpointing is True and default.gradient_checkpointing is True
    assert off.activation_checkpointing is False and off.gradient_checkpointing is False
    with pytest.warns(FutureWarning, match="gradient_checkpointing"):
        old = DAMAConfig(output_dir=str(tmp_path), use_cpu=True, gradient_checkpointing=False)
    assert old.activation_checkpointing is False


def _readme_python_block() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("```python\n", text.index("From Python")) + len("```python\n")
    return text[start : text.index("```\n", start)]


def test_readme_python_example_is_the_example_file_and_runs(tmp_path):
    """The README's Python block is `examples/python_api.py` after its docstring, and that file runs as written."""
    import shutil
    import subprocess
    import sys

    example = (ROOT / "examples/python_api.py").read_text()
    code = example[example.index('"""\n', 10) + 4 :].lstrip("\n")
    assert _readme_python_block() == code
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    done = subprocess.run([sys.executable, "examples/python_api.py", "out"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "out" / "dama" / "model.safetensors").is_file()
    assert (tmp_path / "out" / "hardness" / "hardness.json").is_file()


def test_config_docstring_names_every_field_it_adds():
    """Each field `DAMAConfig` adds to TRL's `DPOConfig` is described in its docstring (`name: …`)."""
    import dataclasses

    from trl import DPOConfig

    added = {f.name for f in dataclasses.fields(DAMAConfig)} - {f.name for f in dataclasses.fields(DPOConfig)}
    assert added, "DAMAConfig adds no field?"
    doc = DAMAConfig.__doc__ or ""
    missing = sorted(name for name in added if f"{name}:" not in doc)
    assert not missing, f"DAMAConfig's docstring does not describe {missing}"
