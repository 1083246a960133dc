"""A `dama train` process killed (SIGKILL) while it saves the final model, then the same command run again.

The final model is complete or absent: it is written to `output_dir/.dama-model.partial` and moved into `output_dir`
by renames, `config.json` last and the marker `dama_model.json` after it (`dama.checkpoints.save_final_model`). The
process kills itself with SIGKILL at a fixed point of the save (a real kill: no exception handler or `finally`
runs): once right after the weights file is written, once after the first rename into `output_dir`. What is left
must never be a loadable half model, the checkpoints must be intact, and the same command run again must finish with
a complete final model in place of the leftovers. That run's console still has transformers' "Writing model shards" bar:
only `dama demo` silences the libraries' bars (`dama.demo.console`), never `dama train`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_checkpoint_crash import pairs
from transformers import LlavaForConditionalGeneration

from dama.checkpoints import COMPLETE_MARKER, FINAL_MARKER, FINAL_STAGING

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "tiny"

KILL_MID_SAVE = r"""
import os, signal, sys

import transformers.modeling_utils as modeling_utils

point = sys.argv.pop(1)
write_weights = modeling_utils.safe_save_file
replace = os.replace


def weights_then_kill(tensors, filename, *args, **kwargs):
    write_weights(tensors, filename, *args, **kwargs)
    if point == "after-weights" and ".dama-model.partial" in filename:
        os.kill(os.getpid(), signal.SIGKILL)  # the final model's weights are on disk, nothing after them


def rename_then_kill(src, dst, *args, **kwargs):
    replace(src, dst, *args, **kwargs)
    if point == "after-first-rename" and ".dama-model.partial" in str(src):
        os.kill(os.getpid(), signal.SIGKILL)  # one staged file is in output_dir, the others are not


modeling_utils.safe_save_file = weights_then_kill
os.replace = rename_then_kill
from dama.cli import main

sys.exit(main(sys.argv[1:]))
"""


def train_argv(data: Path, run: Path) -> list[str]:
    return [
        "train", "--config", str(ROOT / "recipes/tiny/dama.yaml"), "--dataset_path", str(data), "--image_root",
        str(EXAMPLE), "--output_dir", str(run), "--max_steps", "2", "--save_strategy", "steps", "--save_steps", "1",
    ]  # fmt: skip


def console_env() -> dict[str, str]:
    """This process's environment with the bars on (tests/conftest.py sets TQDM_DISABLE for in-process runs)."""
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    return {**env, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize("point", ["after-weights", "after-first-rename"])
def test_a_kill_during_the_final_save_leaves_no_half_model_and_a_rerun_completes_it(tmp_path, point):
    run = tmp_path / "run"
    argv = train_argv(pairs(tmp_path), run)
    script = tmp_path / "kill_mid_save.py"
    script.write_text(KILL_MID_SAVE)
    killed = subprocess.run([sys.executable, str(script), point, *argv], env=console_env(), capture_output=True,
                            text=True, timeout=600)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]

    # what is left: the checkpoints, complete; no final model that could be loaded, no marker
    for step in (1, 2):
        assert (run / f"checkpoint-{step}" / COMPLETE_MARKER).is_file()
    assert not (run / FINAL_MARKER).exists() and not (run / "config.json").exists()
    # README.md is TRL's model card, written into output_dir with every checkpoint
    top = sorted(p.name for p in run.iterdir() if p.name != "README.md")
    if point == "after-weights":
        assert top == [FINAL_STAGING, "checkpoint-1", "checkpoint-2"]
        assert (run / FINAL_STAGING / "model.safetensors").is_file()
    else:  # one renamed file (never config.json, which goes last) beside the staging folder
        moved = [name for name in top if name not in (FINAL_STAGING, "checkpoint-1", "checkpoint-2")]
        assert len(moved) == 1 and moved != ["config.json"], top
        assert (run / FINAL_STAGING / "config.json").is_file()
    with pytest.raises(OSError):
        LlavaForConditionalGeneration.from_pretrained(run)

    rerun = subprocess.run([sys.executable, "-m", "dama.cli", *argv], env=console_env(), capture_output=True,
                           text=True, timeout=600)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    marker = json.loads((run / FINAL_MARKER).read_text())
    assert marker["global_step"] == 2 and {"config.json", "model.safetensors"} <= set(marker["files"])
    assert not (run / FINAL_STAGING).exists()
    assert sorted(p.name for p in run.iterdir()) == sorted([*marker["files"], FINAL_MARKER, "README.md",
                                                             "checkpoint-1", "checkpoint-2"])  # fmt: skip
    LlavaForConditionalGeneration.from_pretrained(run)  # loads: the model is whole
    assert "Writing model shards" in rerun.stderr  # dama train keeps the libraries' bars
