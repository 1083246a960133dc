"""The data-aware maths (docs/paper_mapping.md §2, Eq. 3–6) on hand-made embeddings."""

from __future__ import annotations

import math

import pytest
import torch

from dama.delta import OFFICIAL_DELTA_MEAN
from dama.hardness.scorers import mean_cosine, union_softmax


def unit(*xs: float) -> torch.Tensor:
    v = torch.tensor(xs, dtype=torch.float32)
    return v / v.norm()


def test_union_softmax_closed_form():
    # image along e1; chosen sentences at cos 1 and 0, rejected at cos 0 and −1; scale 2 → logits 2, 0 | 0, −2
    image = unit(1, 0)
    chosen = torch.stack([unit(1, 0), unit(0, 1)])
    rejected = torch.stack([unit(0, 1), unit(-1, 0)])
    score = union_softmax(image, chosen, rejected, logit_scale=2.0)
    z = math.exp(2) + 1 + 1 + math.exp(-2)
    assert score.chosen == pytest.approx([math.exp(2) / z, 1 / z], abs=1e-6)
    assert score.rejected == pytest.approx([1 / z, math.exp(-2) / z], abs=1e-6)
    assert score.delta == pytest.approx((math.exp(2) - math.exp(-2)) / z, abs=1e-6)
    assert sum(score.chosen) + sum(score.rejected) == pytest.approx(1.0)


def test_union_softmax_identical_responses_give_zero():
    image = unit(1, 2, 3)
    texts = torch.stack([unit(3, 1, 0), unit(0, 1, 1)])
    assert union_softmax(image, texts, texts, 100.0).delta == pytest.approx(0.0, abs=1e-9)


def test_delta_in_range_for_random_embeddings():
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        n_w, n_l = torch.randint(1, 6, (2,), generator=gen).tolist()
        image = torch.nn.functional.normalize(torch.randn(8, generator=gen), dim=0)
        cw = torch.nn.functional.normalize(torch.randn(n_w, 8, generator=gen), dim=-1)
        cl = torch.nn.functional.normalize(torch.randn(n_l, 8, generator=gen), dim=-1)
        for fn in (union_softmax, mean_cosine):
            delta = fn(image, cw, cl, 100.0).delta
            assert -1.0 <= delta <= 1.0


def test_union_softmax_extremes_reach_plus_minus_one():
    image = unit(1, 0)
    good, bad = unit(1, 0)[None], unit(-1, 0)[None]
    assert union_softmax(image, good, bad, 100.0).delta == pytest.approx(1.0, abs=1e-12)
    assert union_softmax(image, bad, good, 100.0).delta == pytest.approx(-1.0, abs=1e-12)


def test_mean_cosine_closed_form():
    image = unit(1, 0)
    chosen = torch.stack([unit(1, 0), unit(0, 1)])  # scores 1, 0.5
    rejected = unit(-1, 0)[None]  # score 0
    score = mean_cosine(image, chosen, rejected)
    assert score.chosen == pytest.approx([1.0, 0.5])
    assert score.rejected == pytest.approx([0.0])
    assert score.delta == pytest.approx(0.75)


def test_scorer_encodes_and_counts_truncation(scorer):
    texts = ["a red cat", "two dogs play with a ball", "a red cat " * 40]
    emb, truncated = scorer.encode_texts(texts)
    assert emb.shape == (3, scorer.model.config.projection_dim)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert truncated == [False, False, True]
    assert len(scorer.tokenize(texts)[2]) > scorer.max_text_tokens == 32
    # the tiny tokenizer appends EOS, so different texts get different embeddings
    assert not torch.allclose(emb[0], emb[1])


def test_alpha_d_is_one_at_the_mean():
    """α_D = σ(δ)/σ(δ̄) (Eq. 6) equals 1 where δ = δ̄ — with δ̄ from our own output format's convention."""
    from dama.objective import data_aware_factor

    deltas = torch.tensor([-0.5, 0.1, 0.3, 0.9])
    mean = float(deltas.double().mean())
    alpha = data_aware_factor(torch.tensor([mean, OFFICIAL_DELTA_MEAN, 0.9, -0.5]), mean)
    assert alpha[0].item() == pytest.approx(1.0, abs=1e-7)
    assert alpha[2] > 1 > alpha[3]  # easy pairs get a larger β, hard ones a smaller β
    assert data_aware_factor(torch.tensor([OFFICIAL_DELTA_MEAN]), OFFICIAL_DELTA_MEAN).item() == pytest.approx(1.0)


def test_siglip_dual_encoder_scores_through_the_same_interface():
    """Any dual encoder: a tiny SigLIP (texts padded to its full context, as it was trained) through the same path."""
    from transformers import CLIPProcessor, SiglipConfig, SiglipModel

    from dama.hardness.scorers import DualEncoderScorer
    from dama.tiny import build_image_processor, build_tokenizer

    tok = build_tokenizer(add_eos=True)
    tok.model_max_length = 16
    tiny = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    config = SiglipConfig(
        text_config={
            **tiny,
            "vocab_size": len(tok),
            "max_position_embeddings": 16,
            "pad_token_id": tok.pad_token_id,
            "eos_token_id": tok.eos_token_id,
            "bos_token_id": tok.bos_token_id,
        },
        vision_config={**tiny, "image_size": 16, "patch_size": 8},
    )
    torch.manual_seed(0)
    scorer = DualEncoderScorer(SiglipModel(config), CLIPProcessor(build_image_processor(16), tok), device="cpu")
    assert scorer.pad_to_max_length and scorer.max_text_tokens == 16
    texts, truncated = scorer.encode_texts(["a red cat", "two dogs in the park " * 5])
    image = scorer.encode_images(torch.randn(1, 3, 16, 16))[0]
    assert truncated == [False, True]
    score = union_softmax(image, texts[:1], texts[1:], scorer.logit_scale)
    assert -1 <= score.delta <= 1 and sum(score.chosen) + sum(score.rejected) == pytest.approx(1.0)


def test_inplace_quick_gelu_is_bit_identical_and_keeps_autograd():
    from transformers.activations import QuickGELUActivation

    from dama.hardness.scorers import InplaceQuickGELU

    x = torch.randn(64, 257, generator=torch.Generator().manual_seed(0)) * 6
    with torch.inference_mode():
        assert torch.equal(InplaceQuickGELU()(x.clone()), QuickGELUActivation()(x))
    leaf = x.clone().requires_grad_(True)  # with a graph it falls back to the original (no in-place product)
    InplaceQuickGELU()(leaf).sum().backward()
    expected = x.clone().requires_grad_(True)
    QuickGELUActivation()(expected).sum().backward()
    assert torch.equal(leaf.grad, expected.grad)


def test_scorer_embeddings_are_the_models_own(clip_dir, scorer):
    """The activation swap and our own padding of pre-tokenized ids give exactly what the untouched model gives
    through the tokenizer's own padding and truncation."""
    from transformers import AutoModel, AutoProcessor

    from dama.hardness.scorers import InplaceQuickGELU

    assert any(isinstance(m, InplaceQuickGELU) for m in scorer.model.modules())
    model = AutoModel.from_pretrained(str(clip_dir)).eval()
    tokenizer = AutoProcessor.from_pretrained(str(clip_dir)).tokenizer
    texts = ["a red cat", "two dogs play with a ball in the park", "a red cat " * 40, "cup"]
    with torch.inference_mode():
        batch = tokenizer(texts, padding=True, truncation=True, max_length=scorer.max_text_tokens, return_tensors="pt")
        expected = torch.nn.functional.normalize(model.get_text_features(**batch).pooler_output, dim=-1)
        pixels = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
        expected_img = torch.nn.functional.normalize(
            model.get_image_features(pixel_values=pixels).pooler_output, dim=-1
        )
    emb, truncated = scorer.encode_token_ids(texts, scorer.tokenize(texts))
    assert truncated == [False, False, True, False]
    assert torch.equal(emb, expected)
    assert torch.equal(scorer.encode_images(pixels), expected_img)


def test_glibc_malloc_tuning_applies_once_in_its_own_process():
    import subprocess
    import sys

    code = (
        "from dama.hardness.allocator import tune_glibc_malloc as t; import platform; "
        "print(t(), t(), platform.libc_ver()[0])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    first, second, libc = out[0], out[1], (out[2] if len(out) > 2 else "")
    assert first == second  # idempotent
    assert first == str(sys.platform.startswith("linux") and libc == "glibc")


def test_encode_token_ids_rejects_mismatched_or_empty_input(scorer):
    with pytest.raises(ValueError, match="one id list per text"):
        scorer.encode_token_ids([], [])
    with pytest.raises(ValueError, match="2 texts, 1 id lists"):
        scorer.encode_token_ids(["a cat", "a dog"], scorer.tokenize(["a cat"]))
