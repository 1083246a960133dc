"""Exact resume (R̄ and losses) and global model-aware statistics across two gloo processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import cpu_config, make_vision_pairs
from transformers import TrainerCallback

from dama import DAMATrainer
from dama.tiny import build_llava, clone


class StopAt(TrainerCallback):
    """Simulates a run killed right after the checkpoint of step `step`."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True
        return control


def make_trainer(output_dir: Path, stop_at: int | None = None) -> DAMATrainer:
    model, processor = build_llava(seed=7)
    config = cpu_config(
        str(output_dir),
        max_steps=4,
        save_strategy="steps",
        save_steps=2,
        keep_ratio=0.75,
        per_device_train_batch_size=4,
    )
    return DAMATrainer(
        model=model,
        ref_model=clone(model),
        args=config,
        train_dataset=make_vision_pairs(16),
        processing_class=processor,
        callbacks=[StopAt(stop_at)] if stop_at else None,
    )


def test_resume_is_exact(tmp_path):
    straight = make_trainer(tmp_path / "straight")
    straight.train()
    straight_losses = [h["loss"] for h in straight.state.log_history if "loss" in h]

    first = make_trainer(tmp_path / "resumed", stop_at=2)
    first.train()
    state_file = tmp_path / "resumed" / "checkpoint-2" / "dama_state.json"
    saved = json.loads(state_file.read_text())["reward_gap"]
    assert saved["num_updates"] == 2 and saved["mean"] == pytest.approx(first.reward_gap.mean)

    second = make_trainer(tmp_path / "resumed")
    second.train(resume_from_checkpoint=True)
    resumed_losses = [h["loss"] for h in second.state.log_history if "loss" in h]

    assert len(straight_losses) == 4
    assert resumed_losses[-2:] == pytest.approx(straight_losses[-2:], rel=1e-6, abs=1e-7)
    assert second.reward_gap.mean == pytest.approx(straight.reward_gap.mean, rel=1e-6, abs=1e-9)
    assert second.reward_gap.num_updates == straight.reward_gap.num_updates == 4


def test_resume_refuses_a_checkpoint_without_dama_state(tmp_path):
    first = make_trainer(tmp_path, stop_at=2)
    first.train()
    os.remove(tmp_path / "checkpoint-2" / "dama_state.json")
    with pytest.raises(FileNotFoundError, match="dama_state.json"):
        make_trainer(tmp_path).train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))


WORKER = r"""
import json, os, sys
sys.path.insert(0, {helpers!r})
import torch
from helpers import cpu_config, make_vision_pairs
from dama import DAMATrainer
from dama.tiny import build_llava, clone

out, batch = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
model, processor = build_llava(seed=8)
config = cpu_config(out, per_device_train_batch_size=batch, max_steps=3, keep_ratio=0.5, learning_rate=5e-2,
                    keep_file_order=True)
trainer = DAMATrainer(model=model, ref_model=clone(model), args=config, train_dataset=make_vision_pairs(24),
                      processing_class=processor)
records = []
original = trainer._dama_beta
def spy(margins, delta, mode):
    result = original(margins, delta, mode)
    records.append({{"alpha_m": float(result[3]["dama/alpha_m"]), "kept": result[1].tolist(), "n_kept": result[2],
                     "r_bar": trainer.reward_gap.mean, "rank": trainer.accelerator.process_index,
                     "world": trainer.accelerator.num_processes}})
    return result
trainer._dama_beta = spy
trainer.train()
rank = trainer.accelerator.process_index
with open(os.path.join(out, f"records-{{rank}}.json"), "w") as f:
    json.dump(records, f)
trainer.accelerator.wait_for_everyone()  # as `dama train` does: every rank tears gloo down together, not at exit
trainer.accelerator.end_training()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_worker(script: Path, out: Path, batch: int, world: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    if world == 1:
        cmd = [sys.executable, str(script), str(out), str(batch)]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={world}",
            f"--master_port={free_port()}",
            "--master_addr=127.0.0.1",
            str(script),
            str(out),
            str(batch),
        ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]


def test_two_gloo_processes_agree_with_one_process_of_double_batch(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(helpers=str(Path(__file__).parent)))
    run_worker(script, tmp_path / "two", batch=2, world=2)
    run_worker(script, tmp_path / "one", batch=4, world=1)
    rank0 = json.loads((tmp_path / "two" / "records-0.json").read_text())
    rank1 = json.loads((tmp_path / "two" / "records-1.json").read_text())
    single = json.loads((tmp_path / "one" / "records-0.json").read_text())
    assert rank0[0]["world"] == 2 and single[0]["world"] == 1
    assert len(rank0) == len(rank1) == len(single) == 3
    for r0, r1, s in zip(rank0, rank1, single):
        assert r0["alpha_m"] == pytest.approx(r1["alpha_m"], abs=1e-6)
        assert r0["alpha_m"] == pytest.approx(s["alpha_m"], abs=1e-5)
        assert r0["r_bar"] == pytest.approx(r1["r_bar"], abs=1e-7)
        assert r0["r_bar"] == pytest.approx(s["r_bar"], abs=1e-5)
        assert r0["n_kept"] == r1["n_kept"] == s["n_kept"] == 2  # ⌊0.5 · 4⌋ of the global batch
        # the global mask is the single process's mask, split rank-major
        assert r0["kept"] + r1["kept"] == s["kept"]


PER_RANK_WORKER = """
import json, os, sys
sys.path.insert(0, {helpers!r})
import torch
import dama.trainer as trainer_module
from helpers import cpu_config, make_vision_pairs
from dama import DAMATrainer
from dama.tiny import build_llava, clone

out = sys.argv[1]
model, processor = build_llava(seed=8)
config = cpu_config(out, per_device_train_batch_size=4, max_steps=3, keep_ratio=0.5, learning_rate=5e-2,
                    keep_file_order=True, loss_normalisation="per_rank")
trainer = DAMATrainer(model=model, ref_model=clone(model), args=config, train_dataset=make_vision_pairs(24),
                      processing_class=processor)
records = []
original_loss = trainer_module.dama_loss
def loss_spy(*args, **kwargs):
    losses, chosen, rejected = original_loss(*args, **kwargs)
    records.append({{"losses": losses.tolist(), "kept": args[5].tolist()}})
    return losses, chosen, rejected
trainer_module.dama_loss = loss_spy
original_step = trainer._compute_loss
def step_spy(model, inputs, return_outputs):
    loss = original_step(model, inputs, return_outputs)
    records[-1]["loss"] = float(loss)
    return loss
trainer._compute_loss = step_spy
trainer.train()
with open(os.path.join(out, f"records-{{trainer.accelerator.process_index}}.json"), "w") as f:
    json.dump(records, f)
"""


def test_per_rank_normalisation_returns_each_ranks_masked_mean(tmp_path):
    """With `loss_normalisation: per_rank` each of two gloo ranks returns Σ_local m_i ℓ_i / max(K_r, 1) (the official
    train_dpo.py lines 1343-1349), not the global W·Σ_local / K of Eq. 2."""
    script = tmp_path / "worker.py"
    script.write_text(PER_RANK_WORKER.format(helpers=str(Path(__file__).parent)))
    run_worker(script, tmp_path / "two", batch=4, world=2)
    ranks = [json.loads((tmp_path / "two" / f"records-{r}.json").read_text()) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 3
    unequal = 0
    for step in zip(*ranks):
        kept = [sum(r["kept"]) for r in step]
        assert sum(kept) == 4  # ⌊0.5 · 8⌋ over both ranks
        for r, k in zip(step, kept):
            assert r["loss"] == pytest.approx(sum(r["losses"]) / max(k, 1), rel=1e-6)
            if k != 2:
                unequal += 1
                assert r["loss"] != pytest.approx(2 * sum(r["losses"]) / 4, rel=1e-6)  # the global form differs
    assert unequal > 0, "no step kept unequal counts: the test would not tell the two normalisations apart"
