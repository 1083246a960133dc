"""End to end: `dama hardness` output feeds `dama train` with data_aware=True on a tiny LLaVA."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from dama.hardness import read_hardness_output
from dama.hardness.cli import main as hardness_main

REPO = Path(__file__).resolve().parents[2]


def test_hardness_output_trains_with_data_aware(tmp_path):
    pytest.importorskip("trl")
    from dama.train import build_trainer

    out = tmp_path / "hardness"
    code = hardness_main(
        [
            "--data",
            str(REPO / "examples" / "tiny" / "pairs.jsonl"),
            "--image-root",
            str(REPO / "examples" / "tiny"),
            "--clip",
            "tiny:clip",
            "--out",
            str(out),
            "--workers",
            "0",
            "--no-progress",
            "--limit",
            "8",
        ]
    )
    assert code == 0
    data, delta_mean = read_hardness_output(out)
    trainer = build_trainer(
        [
            "--config",
            str(REPO / "recipes" / "tiny" / "dama.yaml"),
            "--dataset_path",
            str(out),
            "--image_root",
            str(REPO / "examples" / "tiny"),
            "--output_dir",
            str(tmp_path / "run"),
            "--max_steps",
            "2",
            "--per_device_train_batch_size",
            "4",
        ]
    )
    assert trainer.args.data_aware and trainer.delta_mean == pytest.approx(delta_mean)
    result = trainer.train()
    assert math.isfinite(result.training_loss)
    logged = [h for h in trainer.state.log_history if "dama/alpha_d_mean" in h]
    assert logged, "the data-aware factor was not logged"
