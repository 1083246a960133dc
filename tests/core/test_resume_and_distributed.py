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


METHODS = {
    "dama": dict(keep_ratio=0.75),
    "beta-dpo": dict(beta_dpo=True, data_aware=False, model_aware=False, keep_ratio=0.75),
    "mdpo": dict(mdpo=True, data_aware=False, model_aware=False, keep_ratio=1.0),
}


def make_trainer(output_dir: Path, stop_at: int | None = None, method: str = "dama") -> DAMATrainer:
    model, processor = build_llava(seed=7)
    config = cpu_config(
        str(output_dir),
        max_steps=4,
        save_strategy="steps",
        save_steps=2,
        per_device_train_batch_size=4,
        **METHODS[method],
    )
    return DAMATrainer(
        model=model,
        ref_model=clone(model),
        args=config,
        train_dataset=make_vision_pairs(16, textured=True),
        processing_class=processor,
        callbacks=[StopAt(stop_at)] if stop_at else None,
    )


@pytest.mark.parametrize("method", list(METHODS))
def test_resume_is_exact(tmp_path, method):
    """Losses after a resume equal those of a straight run: R̄ (DAMA), M₀ and σ̄ (β-DPO) and the crop counter
    (mDPO) come back from the checkpoint."""
    straight = make_trainer(tmp_path / "straight", method=method)
    straight.train()
    straight_losses = [h["loss"] for h in straight.state.log_history if "loss" in h]

    first = make_trainer(tmp_path / "resumed", stop_at=2, method=method)
    first.train()
    state_file = tmp_path / "resumed" / "checkpoint-2" / "dama_state.json"
    saved = json.loads(state_file.read_text())
    if method == "mdpo":
        assert saved["mdpo_draws"] == 2 and first.mdpo_draws == 2
    else:
        assert saved["reward_gap"]["num_updates"] == 2
        assert saved["reward_gap"]["mean"] == pytest.approx(first.reward_gap.mean)
    if method == "beta-dpo":
        assert saved["reward_gap"]["std_ema"] == pytest.approx(first.reward_gap.std) and first.reward_gap.std > 0

    second = make_trainer(tmp_path / "resumed", method=method)
    second.train(resume_from_checkpoint=True)
    resumed_losses = [h["loss"] for h in second.state.log_history if "loss" in h]

    assert len(straight_losses) == 4
    assert resumed_losses[-2:] == pytest.approx(straight_losses[-2:], rel=1e-6, abs=1e-7)
    assert second.reward_gap.mean == pytest.approx(straight.reward_gap.mean, rel=1e-6, abs=1e-9)
    assert second.reward_gap.std == straight.reward_gap.std or method == "dama"
    assert second.reward_gap.num_updates == straight.reward_gap.num_updates
    assert second.mdpo_draws == straight.mdpo_draws


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

out, batch, method = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
torch.manual_seed(0)
model, processor = build_llava(seed=8)
config = cpu_config(out, per_device_train_batch_size=batch, max_steps=3, learning_rate=5e-2, keep_file_order=True,
                    **method)
trainer = DAMATrainer(model=model, ref_model=clone(model), args=config,
                      train_dataset=make_vision_pairs(24, textured=True), processing_class=processor)
records = []
original = trainer._dama_beta
def spy(margins, delta, mode):
    result = original(margins, delta, mode)
    stats = result[3]
    records.append({{"alpha_m": float(stats.get("dama/alpha_m", stats.get("beta_dpo/beta_used", 0.0))),
                     "kept": result[1].tolist(), "n_kept": result[2], "r_bar": trainer.reward_gap.mean,
                     "std": trainer.reward_gap.std, "rank": trainer.accelerator.process_index,
                     "world": trainer.accelerator.num_processes}})
    return result
trainer._dama_beta = spy
losses = []
original_step = trainer._compute_loss
def step_spy(model, inputs, return_outputs):
    loss = original_step(model, inputs, return_outputs)
    losses.append(float(loss))
    return loss
trainer._compute_loss = step_spy
trainer.train()
rank = trainer.accelerator.process_index
with open(os.path.join(out, f"records-{{rank}}.json"), "w") as f:
    json.dump({{"beta": records, "losses": losses, "world": trainer.accelerator.num_processes}}, f)
trainer.accelerator.wait_for_everyone()  # as `dama train` does: every rank tears gloo down together, not at exit
trainer.accelerator.end_training()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_worker(script: Path, out: Path, batch: int, world: int, *extra: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    if world == 1:
        cmd = [sys.executable, str(script), str(out), str(batch), *extra]
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
            *extra,
        ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]


TWO_PROCESS_METHODS = {
    "dama": dict(keep_ratio=0.5),
    "beta-dpo": dict(beta_dpo=True, data_aware=False, model_aware=False, keep_ratio=0.5),
    "mdpo": dict(mdpo=True, data_aware=False, model_aware=False, keep_ratio=1.0),
}


@pytest.mark.parametrize("method", list(TWO_PROCESS_METHODS))
def test_two_gloo_processes_agree_with_one_process_of_double_batch(tmp_path, method):
    """Kept set, α_M or β-DPO's β, the running statistics, and the loss: two ranks of 2 pairs equal one rank of 4
    (DDP averages the two ranks' losses; mDPO's crops follow each pair's index in the global batch)."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(helpers=str(Path(__file__).parent)))
    switches = json.dumps(TWO_PROCESS_METHODS[method])
    run_worker(script, tmp_path / "two", 2, 2, switches)
    run_worker(script, tmp_path / "one", 4, 1, switches)
    rank0, rank1, single = (json.loads((tmp_path / d / f"records-{r}.json").read_text())
                            for d, r in (("two", 0), ("two", 1), ("one", 0)))  # fmt: skip
    assert rank0["world"] == 2 and single["world"] == 1
    assert len(rank0["losses"]) == len(rank1["losses"]) == len(single["losses"]) == 3
    for l0, l1, s in zip(rank0["losses"], rank1["losses"], single["losses"]):
        assert (l0 + l1) / 2 == pytest.approx(s, rel=1e-4, abs=1e-6)
    if method == "mdpo":
        assert rank0["beta"] == rank1["beta"] == single["beta"] == []
        return
    assert len(rank0["beta"]) == len(rank1["beta"]) == len(single["beta"]) == 3
    for r0, r1, s in zip(rank0["beta"], rank1["beta"], single["beta"]):
        assert r0["alpha_m"] == pytest.approx(r1["alpha_m"], abs=1e-6)
        assert r0["alpha_m"] == pytest.approx(s["alpha_m"], abs=1e-5)
        assert r0["r_bar"] == pytest.approx(r1["r_bar"], abs=1e-7)
        assert r0["r_bar"] == pytest.approx(s["r_bar"], abs=1e-5)
        if method == "beta-dpo":
            assert r0["std"] == pytest.approx(s["std"], abs=1e-5) and r0["std"] == r1["std"]
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
