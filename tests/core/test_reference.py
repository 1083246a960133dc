"""`dama precompute-ref`: reference log-probs stored with the data, reused by training (h_i = 0 at step 0)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from dama.reference import main as precompute_main
from dama.train import build_trainer

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("training_text", ["chat_template", "vicuna_v1"])
def test_precompute_ref_cli_then_train_without_reference_model(tmp_path, training_text):
    root = tmp_path / "data"
    shutil.copytree(ROOT / "examples" / "tiny", root)
    rows = [json.loads(line) for line in (root / "pairs.jsonl").read_text().splitlines()]
    for i, row in enumerate(rows):
        row["dama_delta"] = math.cos(i)
    (root / "scored.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = [
        "--config",
        str(ROOT / "recipes/tiny/dama.yaml"),
        "--image_root",
        str(root),
        "--training_text",
        training_text,
    ]

    out = tmp_path / "with-ref"
    assert (
        precompute_main(
            [
                "--out",
                str(out),
                *recipe,
                "--dataset_path",
                str(root / "scored.jsonl"),
                "--output_dir",
                str(tmp_path / "unused"),
            ]
        )
        == 0
    )
    assert json.loads((out / "dama_data.json").read_text())["delta_mean"] == pytest.approx(
        sum(math.cos(i) for i in range(12)) / 12
    )

    trainer = build_trainer(
        [*recipe, "--dataset_path", str(out), "--output_dir", str(tmp_path / "run"), "--max_steps", "2"]
    )
    assert trainer.ref_model is None and trainer.precompute_ref_logps
    if training_text == "vicuna_v1":  # stored rendered, and not rendered a second time
        assert trainer.train_dataset[0]["prompt"].startswith("<s>A chat between a curious user")
        assert trainer.train_dataset[0]["chosen"] == " The image shows a yellow circle.</s>"
    assert trainer.delta_mean == pytest.approx(sum(math.cos(i) for i in range(12)) / 12)
    trainer.train()
    first = next(h for h in trainer.state.log_history if "loss" in h)
    # the tiny model is rebuilt from the same seed, so stored reference = policy at step 0
    assert first["rewards/margins"] == 0.0 and first["loss"] == pytest.approx(math.log(2), abs=1e-6)
