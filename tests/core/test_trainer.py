"""DAMATrainer on tiny config-built VLMs: parity with TRL's DPO, learning, freezing, LoRA, precomputed references."""

from __future__ import annotations

import pytest
import torch
from helpers import cpu_config, make_vision_pairs
from trl import DPOConfig, DPOTrainer

from dama import DAMATrainer
from dama.tiny import build_llava, build_qwen2_vl, clone
from dama.train import find_vision_tower

REWARD_KEYS = [
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
    "entropy",
    "logits/chosen",
    "logits/rejected",
    "mean_token_accuracy",
    "num_tokens",
]


def train_logs(trainer) -> list[dict]:
    trainer.train()
    return [h for h in trainer.state.log_history if "loss" in h]


# switches that reduce the trainer to DPO: DAMA off; β-DPO with a = 0 (β_used = β) and no filter (ρ = 1)
REDUCTIONS = {
    "dama-off": dict(data_aware=False, model_aware=False, keep_ratio=1.0),
    "beta-dpo-a0": dict(beta_dpo=True, beta_dpo_alpha=0.0, data_aware=False, model_aware=False, keep_ratio=1.0),
}


@pytest.mark.parametrize("switches", list(REDUCTIONS))
@pytest.mark.parametrize("loss_weights", [None, [0.5]])
def test_parity_with_trl_dpo_when_dama_is_off(tmp_path, loss_weights, switches):
    data = make_vision_pairs(12, with_delta=False)
    common = dict(
        per_device_train_batch_size=4,
        max_steps=4,
        learning_rate=1e-2,
        use_cpu=True,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        seed=0,
        activation_checkpointing=False,
        max_length=None,
        bf16=False,
        loss_weights=loss_weights,
    )
    model, processor = build_llava(seed=1)
    trl_trainer = DPOTrainer(
        model=model,
        ref_model=clone(model),
        args=DPOConfig(str(tmp_path / "trl"), **common),
        train_dataset=data,
        processing_class=processor,
    )
    trl_logs = train_logs(trl_trainer)

    model, processor = build_llava(seed=1)
    config = cpu_config(str(tmp_path / "dama"), max_steps=4, loss_weights=loss_weights, **REDUCTIONS[switches])
    ours = DAMATrainer(
        model=model, ref_model=clone(model), args=config, train_dataset=data, processing_class=processor
    )
    our_logs = train_logs(ours)

    assert len(trl_logs) == len(our_logs) == 4
    for step, (theirs, mine) in enumerate(zip(trl_logs, our_logs)):
        for key in REWARD_KEYS:
            assert mine[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-6), (step, key)
    assert our_logs[-1]["rewards/margins"] > 0.0  # it actually trained
    if switches == "dama-off":
        assert not any(k.startswith("dama/") for k in our_logs[0])
    else:
        assert all(h["beta_dpo/beta_used"] == pytest.approx(0.1) for h in our_logs)


def test_dama_trains_and_logs_its_metrics_loss_falls_on_an_overfit_batch(tmp_path):
    data = make_vision_pairs(4)
    model, processor = build_llava(seed=2)
    config = cpu_config(str(tmp_path), max_steps=12, learning_rate=2e-2, keep_ratio=0.75)
    trainer = DAMATrainer(
        model=model, ref_model=clone(model), args=config, train_dataset=data, processing_class=processor
    )
    logs = train_logs(trainer)
    assert logs[-1]["loss"] < 0.5 * logs[0]["loss"]
    assert logs[0]["loss"] == pytest.approx(0.693147, abs=1e-5)  # every margin is 0 at step 0
    for key in (
        "dama/beta_mean",
        "dama/beta_min",
        "dama/beta_max",
        "dama/alpha_d_mean",
        "dama/alpha_m",
        "dama/reward_gap_ema",
        "dama/kept_fraction",
        "dama/n_clamped",
    ):
        assert key in logs[-1], key
    assert logs[0]["dama/kept_fraction"] == pytest.approx(0.75)
    assert logs[0]["dama/alpha_m"] == pytest.approx(1.0)  # R_i = 0 = R̄₀ → σ(0)/σ(0)
    assert logs[-1]["dama/reward_gap_ema"] > 0.0
    assert logs[-1]["dama/beta_min"] <= logs[-1]["dama/beta_mean"] <= logs[-1]["dama/beta_max"]
    assert trainer.reward_gap.num_updates == 12


def test_precomputed_reference_matches_live_reference_and_releases_it(tmp_path):
    data = make_vision_pairs(8)
    model, processor = build_llava(seed=3)
    live = DAMATrainer(
        model=model,
        ref_model=clone(model),
        args=cpu_config(str(tmp_path / "a")),
        train_dataset=data,
        processing_class=processor,
    )
    live_logs = train_logs(live)

    model, processor = build_llava(seed=3)
    stored = DAMATrainer(
        model=model,
        ref_model=clone(model),
        args=cpu_config(str(tmp_path / "b"), precompute_ref_log_probs=True),
        train_dataset=data,
        processing_class=processor,
    )
    assert stored.ref_model is None
    assert {"ref_chosen_logps", "ref_rejected_logps"} <= set(stored.train_dataset.column_names)
    stored_logs = train_logs(stored)
    assert stored_logs[0]["rewards/margins"] == 0.0  # policy margin is exactly 0 at step 0
    for a, b in zip(live_logs, stored_logs):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)


def test_frozen_vision_tower_stays_bit_identical(tmp_path):
    model, processor = build_llava(seed=4)
    tower = find_vision_tower(model)
    tower.requires_grad_(False)
    before = {k: v.clone() for k, v in tower.state_dict().items()}
    lm_before = model.lm_head.weight.detach().clone()
    trainer = DAMATrainer(
        model=model,
        ref_model=clone(model),
        args=cpu_config(str(tmp_path)),
        train_dataset=make_vision_pairs(8),
        processing_class=processor,
    )
    trainer.train()
    for key, value in tower.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not torch.equal(model.lm_head.weight.detach(), lm_before)


def test_lora_trains_only_adapters(tmp_path):
    from peft import LoraConfig

    model, processor = build_llava(seed=5)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = DAMATrainer(
        model=model,
        args=cpu_config(str(tmp_path)),
        train_dataset=make_vision_pairs(8),
        processing_class=processor,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    logs = train_logs(trainer)
    assert logs[-1]["rewards/margins"] != 0.0
    changed_lora = 0
    for name, param in trainer.model.named_parameters():
        if "lora_B" in name and ".default." in name:
            changed_lora += int(param.detach().abs().sum() > 0)
        if "lora_" not in name:
            key = name.replace("base_model.model.", "").replace(".base_layer", "")
            assert torch.equal(param.detach(), base[key]), name
    assert changed_lora > 0


def test_tiny_qwen2_vl_trains_with_dama(tmp_path):
    model, processor = build_qwen2_vl(seed=6)
    trainer = DAMATrainer(
        model=model,
        ref_model=clone(model),
        args=cpu_config(str(tmp_path), max_steps=4),
        train_dataset=make_vision_pairs(8),
        processing_class=processor,
    )
    logs = train_logs(trainer)
    assert logs[0]["loss"] == pytest.approx(0.693147, abs=1e-5)
    assert logs[-1]["loss"] < logs[0]["loss"]
    assert "dama/alpha_m" in logs[-1]


def test_data_aware_without_hardness_column_says_how_to_make_it(tmp_path):
    model, processor = build_llava()
    with pytest.raises(ValueError, match="dama hardness"):
        DAMATrainer(
            model=model,
            ref_model=clone(model),
            args=cpu_config(str(tmp_path)),
            train_dataset=make_vision_pairs(4, with_delta=False),
            processing_class=processor,
        )


def test_keep_file_order_iterates_in_file_order(tmp_path):
    """`keep_file_order: true` gives the official run's sequential sampler; the default shuffles."""
    from torch.utils.data import RandomSampler, SequentialSampler

    data = make_vision_pairs(8)
    for keep, kind in ((True, SequentialSampler), (False, RandomSampler)):
        model, processor = build_llava(seed=1)
        trainer = DAMATrainer(model=model, ref_model=clone(model), args=cpu_config(str(tmp_path), keep_file_order=keep),
                              train_dataset=data, processing_class=processor)  # fmt: skip
        assert isinstance(trainer._get_train_sampler(), kind)
