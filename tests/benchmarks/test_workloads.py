"""The LLaVA-shaped benchmark workload has the token mix docs/performance.md states, and its token accounting is right.

docs/performance.md states: 576 image tokens per row (CLIP ViT, 336 px, 14-px patches: (336 / 14)² = 24² = 576), a
question of 48 words (one token each after a space) in a prompt with the template's text, answers whose token counts
(template's `</s>` included) follow a log-normal with median 100 and σ 0.6 clipped to [16, 512], whose
mean is 100 · e^(σ²/2) = 100 · e^0.18 ≈ 119.7 before clipping.
"""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from benchmarks._common import (
    ANSWER_TOKENS_RANGE,
    MODELS,
    ONE_TOKEN_WORDS,
    answer_lengths,
    build_trainer,
    make_llava_pairs,
    token_accounting,
)
from benchmarks.train_step import computed_units
from dama.prefix import pack_pairs
from dama.tiny import build_tokenizer


def test_answer_lengths_follow_the_stated_log_normal():
    lengths = answer_lengths(20000, seed=0)
    assert min(lengths) >= ANSWER_TOKENS_RANGE[0] and max(lengths) <= ANSWER_TOKENS_RANGE[1]
    assert statistics.mean(lengths) == pytest.approx(100 * math.exp(0.18), rel=0.01)
    assert statistics.median(lengths) == pytest.approx(100, abs=1)
    # 95th percentile of the log-normal: 100 · e^(1.645 · 0.6) ≈ 268.5 (the long tail)
    assert sorted(lengths)[19000] == pytest.approx(100 * math.exp(1.645 * 0.6), abs=2)
    # the 32 answers of the benchmark's 16 pairs: mid-quantiles (k + ½)/32, e.g. the largest is
    # 100 · e^(0.6 · Φ⁻¹(63/64)) = 100 · e^(0.6 · 2.154) ≈ 364, the smallest 100 · e^(−1.292) ≈ 27
    small = sorted(answer_lengths(32, seed=1))
    assert (small[0], small[-1]) == (27, 364)
    assert statistics.mean(small) == pytest.approx(119.7, rel=0.02)


def test_every_workload_word_is_one_token():
    tokenizer = build_tokenizer()
    assert all(len(tokenizer(" " + word, add_special_tokens=False).input_ids) == 1 for word in ONE_TOKEN_WORDS)
    assert len(tokenizer("a", add_special_tokens=False).input_ids) == 1  # every answer's first word


def test_llava576_batches_have_the_stated_token_counts(tmp_path):
    n = 8
    data = make_llava_pairs(n)
    trainer = build_trainer("dama_prefix", "llava576", "cpu", data, 4, 1, output_dir=str(tmp_path))
    image_token = trainer.model.config.image_token_id
    assert MODELS["llava576"]["image_size"] // MODELS["llava576"]["patch_size"] == 24
    lengths = answer_lengths(2 * n, 1)  # the draw make_llava_pairs uses: chosen, then rejected
    chosen_len, rejected_len = lengths[:n], lengths[n:]
    for start in (0, 4):
        batch = trainer.data_collator([data[i] for i in range(start, start + 4)])
        ids, attention, completion = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
        assert batch["pixel_values"].shape == (8, 3, 336, 336)
        assert (ids == image_token).sum(dim=1).tolist() == [576] * 8
        text_in_prompt = ((attention == 1) & (completion == 0) & (ids != image_token)).sum(dim=1)
        assert text_in_prompt.min() >= 50 and text_in_prompt.max() <= 60, text_in_prompt.tolist()
        expected = chosen_len[start : start + 4] + rejected_len[start : start + 4]
        assert completion.sum(dim=1).tolist() == expected
        real, padded, packed_real, packed_padded = token_accounting(batch).tolist()
        assert real == int(attention.sum()) and padded == ids.numel()
        assert packed_real == pack_pairs(trainer.model, batch_without_extras(batch)).packed_tokens
        assert packed_padded == 4 * pack_pairs(trainer.model, batch_without_extras(batch)).labels.size(1)
        assert packed_real < 0.6 * real  # the shared ~630-token prefix dominates


def batch_without_extras(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in batch.items() if k != "dama_delta"}


def test_token_accounting_worked_by_hand():
    # rows [chosen 0, chosen 1, rejected 0, rejected 1]: prompts of 3 and 2 tokens, answers 2, 3 | 3, 1, width 6
    attention = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0], [1] * 6, [1, 1, 1, 0, 0, 0]])
    completion = torch.tensor([[0, 0, 0, 1, 1, 0], [0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 1, 1], [0, 0, 1, 0, 0, 0]])
    counts = token_accounting({"attention_mask": attention, "completion_mask": completion}).tolist()
    # real 5 + 5 + 6 + 3; padded 4 × 6; packed 3 + 2 + 3 + 1 = 9 and 2 + 3 + 1 + 1 = 7; padded 2 × 9
    assert counts == [19, 24, 16, 18]


def test_step_cost_in_token_units():
    # accounting = [real, padded, packed real, packed padded]; policy tokens cost 3 (forward + backward), reference 1
    accounting = [90.0, 100.0, 50.0, 60.0]
    assert computed_units("trl", accounting) == 4 * 100
    assert computed_units("dama", accounting) == 4 * 100
    assert computed_units("dama_precomputed", accounting) == 3 * 100
    assert computed_units("dama_prefix", accounting) == 4 * 60
    assert computed_units("dama_precomputed_prefix", accounting) == 3 * 60
