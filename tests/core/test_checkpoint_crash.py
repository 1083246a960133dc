"""A process that dies in the middle of a checkpoint save, then `--resume_from_checkpoint true`.

The first `dama train` runs in a subprocess whose optimizer save at step 2 ends the process with `os._exit` (no
cleanup, no exception handlers: what a kill or an out-of-memory kill does). checkpoint-2 then holds the weights but
not the optimizer, trainer state or completion marker. Resuming must skip it with a warning and continue from
checkpoint-1; transformers' own `get_last_checkpoint` would pick the broken one.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from transformers.trainer_utils import get_last_checkpoint

from dama.checkpoints import COMPLETE_MARKER
from dama.cli import main as dama

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "tiny"

DIE_MID_SAVE = r"""
import os, sys
from dama.trainer import DAMATrainer

original = DAMATrainer._save_optimizer_and_scheduler


def die_at_step_2(self, output_dir):
    if self.state.global_step == 2:
        os._exit(9)  # the weights of checkpoint-2 are on disk, nothing after them
    return original(self, output_dir)


DAMATrainer._save_optimizer_and_scheduler = die_at_step_2
from dama.cli import main

sys.exit(main(sys.argv[1:]))
"""


def pairs(tmp_path: Path) -> Path:
    rows = [json.loads(line) for line in (EXAMPLE / "pairs.jsonl").read_text().splitlines() if line.strip()]
    out = tmp_path / "pairs.jsonl"
    out.write_text(
        "".join(
            json.dumps(
                {
                    "prompt": [{"role": "user", "content": r["question"]}],
                    "chosen": [{"role": "assistant", "content": r["chosen"]}],
                    "rejected": [{"role": "assistant", "content": r["rejected"]}],
                    "image": r["image"],
                    "dama_delta": 0.05 * i,
                }
            )
            + "\n"
            for i, r in enumerate(rows)
        )
    )
    return out


def test_resume_skips_a_checkpoint_whose_save_was_killed(tmp_path, caplog, capsys):
    run = tmp_path / "run"
    argv = [
        "train",
        "--config",
        str(ROOT / "recipes/tiny/dama.yaml"),
        "--dataset_path",
        str(pairs(tmp_path)),
        "--image_root",
        str(EXAMPLE),
        "--output_dir",
        str(run),
        "--max_steps",
        "3",
        "--save_strategy",
        "steps",
        "--save_steps",
        "1",
        "--logging_steps",
        "1",
    ]
    script = tmp_path / "die_mid_save.py"
    script.write_text(DIE_MID_SAVE)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    done = subprocess.run([sys.executable, str(script), *argv], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 9, done.stderr[-3000:]
    broken, good = run / "checkpoint-2", run / "checkpoint-1"
    assert (broken / "model.safetensors").is_file() and not (broken / "trainer_state.json").exists()
    assert not (broken / COMPLETE_MARKER).exists() and (good / COMPLETE_MARKER).is_file()
    assert get_last_checkpoint(str(run)) == str(broken)  # what resuming without the marker would pick

    # naming the broken checkpoint explicitly is refused with a message, not a traceback
    assert dama([*argv, "--resume_from_checkpoint", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"checkpoint {broken} is incomplete" in err

    with caplog.at_level(logging.WARNING, logger="dama.trainer"):
        assert dama([*argv, "--resume_from_checkpoint", "true"]) == 0
    assert any(f"skipping {broken}" in r.getMessage() for r in caplog.records)
    state = json.loads((run / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    losses = [h["step"] for h in state["log_history"] if "loss" in h]
    assert losses == [1, 2, 3]  # step 1 from checkpoint-1, steps 2 and 3 trained again after the resume
    for step in (1, 2, 3):
        assert (run / f"checkpoint-{step}" / COMPLETE_MARKER).is_file()
    assert (run / "model.safetensors").is_file()
