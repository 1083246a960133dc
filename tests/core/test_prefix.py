"""Prefix sharing (`dama.prefix`): the packed layout by hand, and exactness against the unshared forward.

Exactness is checked where it matters for training: per-pair log-probs, the loss and every parameter gradient of one
step, with padding in the batch (answers and prompts of different lengths), in DPO and DAMA modes, with LoRA, on the
tiny LLaVA, Qwen2-VL and Qwen2.5-VL; and the precomputed reference columns.
"""

from __future__ import annotations

import logging

import pytest
import torch
from datasets import Dataset
from helpers import cpu_config, make_vision_pairs

from dama import DAMATrainer
from dama.prefix import PrefixSharingUnavailable, pack_pairs, unsupported_reason
from dama.tiny import build_llava, build_qwen2_vl, clone

NEG = torch.finfo(torch.float32).min
DPO = dict(data_aware=False, model_aware=False, keep_ratio=1.0)
DAMA = dict(data_aware=True, model_aware=True, keep_ratio=0.75)


def build_qwen2_5_vl(seed: int = 0):
    """A tiny Qwen2.5-VL (windowed vision attention, one full-attention block) sharing the tiny Qwen2-VL processor."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    qwen2, processor = build_qwen2_vl(seed=seed)
    text = qwen2.config.text_config.to_dict()
    keys = (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "max_position_embeddings",
        "rope_parameters",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
    )
    vision = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "patch_size": 4,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "in_channels": 3,
        "out_hidden_size": 32,
        "window_size": 16,
        "fullatt_block_indexes": [1],
    }
    tokens = {
        name: getattr(qwen2.config, name)
        for name in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    }
    config = Qwen2_5_VLConfig(text_config={k: text[k] for k in keys}, vision_config=vision, **tokens)
    torch.manual_seed(seed)
    return Qwen2_5_VLForConditionalGeneration(config), processor


MODELS = [build_llava, build_qwen2_vl, build_qwen2_5_vl]
MODEL_IDS = ["llava", "qwen2_vl", "qwen2_5_vl"]


def hand_batch() -> dict[str, torch.Tensor]:
    """Two pairs, right-padded, pad id 0; prompts [11 12 13] and [14 15], answers of 2/3 and 3/1 tokens."""
    input_ids = torch.tensor(
        [
            [11, 12, 13, 21, 22, 0],  # chosen 0
            [14, 15, 23, 24, 25, 0],  # chosen 1
            [11, 12, 13, 31, 32, 33],  # rejected 0
            [14, 15, 34, 0, 0, 0],  # rejected 1
        ]
    )
    attention_mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0], [1] * 6, [1, 1, 1, 0, 0, 0]])
    completion_mask = torch.tensor([[0, 0, 0, 1, 1, 0], [0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 1, 1], [0, 0, 1, 0, 0, 0]])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask}


def test_packed_layout_worked_by_hand():
    model, _ = build_llava()
    packed = pack_pairs(model, hand_batch())
    inputs = packed.model_inputs
    # pair 0: [11 12 | 13 21 22 | 13 31 32 33]; pair 1: [14 | 15 23 24 25 | 15 34], padded with its last prompt token
    assert inputs["input_ids"].tolist() == [[11, 12, 13, 21, 22, 13, 31, 32, 33], [14, 15, 23, 24, 25, 15, 34, 15, 15]]
    # positions of the unshared rows: the rejected segment restarts at the prompt's last position
    assert inputs["position_ids"].tolist() == [[0, 1, 2, 3, 4, 2, 3, 4, 5], [0, 1, 2, 3, 4, 1, 2, 1, 1]]
    assert packed.labels.tolist() == [
        [-100, -100, -100, 21, 22, -100, 31, 32, 33],
        [-100, -100, 23, 24, 25, -100, 34, -100, -100],
    ]
    allowed = inputs["attention_mask"][:, 0] == 0
    # token 31 (pair 0, index 6) sees the shared 11 12, the repeated 13 and itself; not 13 21 22 of the chosen segment
    assert allowed[0, 6].tolist() == [True, True, False, False, False, True, True, False, False]
    # token 22 (pair 0, index 4) sees 11 12 13 21 and itself: causal within prefix + chosen
    assert allowed[0, 4].tolist() == [True, True, True, True, True, False, False, False, False]
    # a padding query (pair 1, index 8) sees itself only
    assert allowed[1, 8].tolist() == [False] * 8 + [True]
    assert inputs["attention_mask"][0, 0, 6, 2].item() == NEG
    # unshared next-token position t of a chosen row maps to packed position t; of a rejected row to t + len(chosen) + 1;
    # pair 1 starts at flat index 8 (= packed length - 1)
    assert packed.valid.tolist() == [
        [False, False, True, True, False],
        [False, True, True, True, False],
        [False, False, True, True, True],
        [False, True, False, False, False],
    ]
    index = torch.where(packed.valid, packed.gather_index, -1).tolist()
    assert index == [[-1, -1, 2, 3, -1], [-1, 9, 10, 11, -1], [-1, -1, 5, 6, 7], [-1, 13, -1, -1, -1]]
    assert packed.packed_tokens == 9 + 7
    assert packed.unshared_tokens == 5 + 5 + 6 + 3


def test_pack_refuses_a_pair_whose_prompts_differ():
    model, _ = build_llava()
    batch = hand_batch()
    batch["input_ids"][2, 1] = 17  # rejected 0 now has prompt [11 17 13]
    with pytest.raises(PrefixSharingUnavailable, match="different prompt tokens"):
        pack_pairs(model, batch)


def test_unsupported_models_are_named():
    model, _ = build_llava()
    assert unsupported_reason(model) is None
    model.config._attn_implementation = "flash_attention_2"
    assert "does not take a 4-D mask" in unsupported_reason(model)
    from transformers import LlamaConfig, LlamaForCausalLM

    text_only = LlamaForCausalLM(
        LlamaConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    )
    assert "'llama'" in unsupported_reason(text_only)


def padded_pairs(n: int = 4) -> Dataset:
    """Vision pairs whose prompts differ in length too, so prompt, answer and packed padding all occur."""
    prompts = [[{"role": "user", "content": "Describe the image." + " Be brief." * i}] for i in range(n)]
    return make_vision_pairs(n).remove_columns("prompt").add_column("prompt", prompts)


def step(builder, tmp_path, name: str, prefix: bool, switches: dict, lora: bool = False, data=None, **config):
    """(loss, per-pair margins, gradients, metrics) of one DAMA/DPO step on 4 padded pairs (or `data(processor)`)."""
    model, processor = builder(seed=3)
    ref = None
    peft_config = None
    if lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    else:
        ref = clone(model)
        with torch.no_grad():  # the policy moves away from the reference: margins, α_M and the filter are non-trivial
            gen = torch.Generator().manual_seed(0)
            for param in model.parameters():
                param.add_(0.05 * torch.randn(param.shape, generator=gen))
    args = cpu_config(str(tmp_path / name), prefix_sharing=prefix, **switches, **config)
    data = padded_pairs() if data is None else data(processor)
    trainer = DAMATrainer(
        model=model, ref_model=ref, args=args, train_dataset=data, processing_class=processor, peft_config=peft_config
    )
    assert trainer._prefix_sharing is prefix
    if lora:
        with torch.no_grad():  # LoRA B starts at zero (policy = reference): give the adapters a value
            gen = torch.Generator().manual_seed(0)
            for pname, param in trainer.model.named_parameters():
                if "lora_B" in pname:
                    param.copy_(0.1 * torch.randn(param.shape, generator=gen))
    batch = trainer.data_collator([data[i] for i in range(4)])
    trainer.model.train()
    logps = []
    inner = trainer._dama_beta

    def spy(margins, delta, mode):
        logps.append(margins)
        return inner(margins, delta, mode)

    trainer._dama_beta = spy
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    return loss.detach(), logps[0], grads, metrics


def assert_same_step(on, off):
    loss_on, margins_on, grads_on, metrics_on = on
    loss_off, margins_off, grads_off, metrics_off = off
    # a margin is a difference of four float32 sums of ~20 token log-probs each (|sum| up to ~90 nats): summed in
    # another order (packed rows), it moves by a few float32 ulps of those sums, ~1e-5; a packing bug moves it by
    # whole token log-probs (≥ 1e-2)
    torch.testing.assert_close(margins_on, margins_off, rtol=1e-4, atol=5e-5)
    torch.testing.assert_close(loss_on, loss_off, rtol=1e-5, atol=1e-7)
    assert set(grads_on) == set(grads_off) and grads_off
    for name, grad in grads_off.items():
        scale = float(grad.abs().max())
        torch.testing.assert_close(grads_on[name], grad, rtol=1e-4, atol=1e-5 * scale + 1e-8, msg=name)
    for key, value in metrics_off.items():
        assert metrics_on[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


@pytest.mark.parametrize("builder", MODELS, ids=MODEL_IDS)
@pytest.mark.parametrize("mode", ["dpo", "dama"])
def test_shared_prefix_step_equals_unshared(builder, mode, tmp_path):
    switches = DPO if mode == "dpo" else DAMA
    on = step(builder, tmp_path, "on", True, switches)
    off = step(builder, tmp_path, "off", False, switches)
    assert float(on[0]) > 0 and on[1].abs().max() > 1e-3  # a real loss and real margins, not the step-0 zeros
    assert_same_step(on, off)


@pytest.mark.parametrize("builder", MODELS, ids=MODEL_IDS)
def test_shared_prefix_step_equals_unshared_with_lora(builder, tmp_path):
    on = step(builder, tmp_path, "on", True, DAMA, lora=True)
    off = step(builder, tmp_path, "off", False, DAMA, lora=True)
    assert all("lora_" in name for name in on[2])
    assert on[1].abs().max() > 1e-3
    assert_same_step(on, off)


def test_shared_prefix_step_equals_unshared_with_activation_checkpointing(tmp_path):
    on = step(build_llava, tmp_path, "on", True, DAMA, activation_checkpointing=True)
    off = step(build_llava, tmp_path, "off", False, DAMA, activation_checkpointing=True)
    assert_same_step(on, off)


@pytest.mark.parametrize("options", [dict(loss_normalisation="per_rank"), dict(loss_weights=[0.5])], ids=str)
def test_shared_prefix_step_equals_unshared_with_loss_options(options, tmp_path):
    """`loss_normalisation` and `loss_weights` act on the per-pair losses after the forward (docs/paper_mapping.md §1,
    §6): the packed forward changes nothing there."""
    on = step(build_llava, tmp_path, "on", True, DAMA, **options)
    off = step(build_llava, tmp_path, "off", False, DAMA, **options)
    assert_same_step(on, off)


def vicuna_v1_pairs(processor) -> Dataset:
    """`padded_pairs` rendered as `training_text: vicuna_v1` (LLaVA-1.5's Vicuna-v1 string, `</s>` in the answer)."""
    from dama.conversation import render_training_text

    return render_training_text(padded_pairs(), processor.tokenizer, "vicuna_v1")


def test_vicuna_v1_training_text_is_packed_and_equals_unshared(tmp_path, caplog):
    """`training_text: vicuna_v1` keeps one prompt string per pair (`conversation.vicuna_v1_pair`), so both rows of a
    pair carry the same prompt tokens and the packed path serves it: no batch falls back, and the step (the answer's
    `</s>` included in the summed log-prob, Eq. 2) equals the unshared one."""
    data = vicuna_v1_pairs(build_llava()[1])
    assert data[0]["prompt"].startswith("<s>") and data[0]["chosen"].endswith("</s>")
    with caplog.at_level(logging.WARNING, logger="dama.trainer"):
        on = step(build_llava, tmp_path, "on", True, DAMA, data=vicuna_v1_pairs)
    assert "prefix sharing skipped" not in caplog.text and "not used" not in caplog.text
    off = step(build_llava, tmp_path, "off", False, DAMA, data=vicuna_v1_pairs)
    assert on[1].abs().max() > 1e-3
    assert_same_step(on, off)


@pytest.mark.parametrize("builder", MODELS, ids=MODEL_IDS)
def test_precomputed_reference_columns_equal_unshared(builder, tmp_path):
    columns = []
    for prefix in (True, False):
        model, processor = builder(seed=4)
        args = cpu_config(
            str(tmp_path / str(prefix)),
            prefix_sharing=prefix,
            precompute_ref_log_probs=True,
            precompute_ref_batch_size=4,
        )
        trainer = DAMATrainer(model=model, args=args, train_dataset=padded_pairs(6), processing_class=processor)
        assert trainer._prefix_sharing is prefix
        columns.append([trainer.train_dataset[name] for name in ("ref_chosen_logps", "ref_rejected_logps")])
    (chosen_on, rejected_on), (chosen_off, rejected_off) = columns
    assert len(chosen_on) == 6 and chosen_on != rejected_on
    assert chosen_on == pytest.approx(chosen_off, rel=1e-5)
    assert rejected_on == pytest.approx(rejected_off, rel=1e-5)


def test_fallback_is_logged_for_an_unsupported_attention(tmp_path, caplog):
    model, processor = build_llava()
    model.config._attn_implementation = "flash_attention_2"  # not run: the trainer only has to decide
    with caplog.at_level(logging.WARNING, logger="dama.trainer"):
        trainer = DAMATrainer(
            model=model,
            ref_model=clone(model),
            args=cpu_config(str(tmp_path)),
            train_dataset=make_vision_pairs(4),
            processing_class=processor,
        )
    assert trainer._prefix_sharing is False
    assert (
        "prefix_sharing is on but not used (policy model: attention implementation 'flash_attention_2'" in caplog.text
    )


def test_a_batch_that_cannot_be_packed_runs_unshared_and_is_logged_once(tmp_path, caplog):
    model, processor = build_llava()
    data = make_vision_pairs(4)
    trainer = DAMATrainer(
        model=model,
        ref_model=clone(model),
        args=cpu_config(str(tmp_path)),
        train_dataset=data,
        processing_class=processor,
    )
    assert trainer._prefix_sharing is True
    batch = trainer.data_collator([data[i] for i in range(4)])
    assert trainer._shared_forward(trainer.model, batch) is not None
    last_prompt = int(batch["attention_mask"][4].sum() - batch["completion_mask"][4].sum()) - 1
    batch["input_ids"][4, last_prompt] += 1  # rejected 0's last prompt token no longer matches chosen 0's
    with caplog.at_level(logging.WARNING, logger="dama.trainer"):
        assert trainer._shared_forward(trainer.model, batch) is None
        assert trainer._shared_forward(trainer.model, batch) is None
    assert caplog.text.count("prefix sharing skipped for a batch (a pair's chosen and rejected rows have") == 1
