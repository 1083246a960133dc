"""Scoring sub-sentences against an image with a dual encoder (docs/paper_mapping.md §2 step 2, Eq. 3–5).

The maths is pure: `union_softmax` and `mean_cosine` take unit-norm embeddings and return per-sub-sentence scores
and the hardness gap δ = score_w − score_l ∈ [−1, 1]. `DualEncoderScorer` wraps any transformers dual encoder
(CLIP, SigLIP, ...) loaded through `AutoModel`/`AutoProcessor` and only turns images and texts into embeddings:
images in batches of already-preprocessed pixels (so decoding can run in worker processes), texts in batches of
token ids (tokenized once by the caller, so batches can be cut by token length), truncation at the encoder's context
counted. CLIP's QuickGELU is swapped for an in-place form with the same bits (one temporary instead of three: on a
CPU the activation is memory-bound; see docs/hardness.md#throughput).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers.activations import QuickGELUActivation

from dama.devices import resolve_device, resolve_dtype
from dama.errors import loading_model
from dama.tiny import build_clip

SCORERS = ("union_softmax", "mean_cosine")


@dataclass(frozen=True)
class PairScore:
    """Scores of one preference pair: per-sub-sentence scores of S_w and S_l, and δ (Eq. 5)."""

    chosen: list[float]
    rejected: list[float]
    delta: float


def union_softmax(
    image_emb: torch.Tensor, chosen_emb: torch.Tensor, rejected_emb: torch.Tensor, logit_scale: float
) -> PairScore:
    """The paper's CLIP score over the union U = S_w ∪ S_l (docs/paper_mapping.md §2 steps 2–3, Eq. 3–5).

    ℓ_j = scale · cos(f_img(I), f_txt(s_j)) for s_j ∈ U; p = softmax(ℓ) over U; score_w = Σ_{S_w} p,
    score_l = Σ_{S_l} p; δ = score_w − score_l ∈ [−1, 1] (p sums to 1 over U).

    Args:
        image_emb: `(D,)` unit-norm image embedding.
        chosen_emb: `(n_w, D)` unit-norm embeddings of the chosen response's sub-sentences, n_w ≥ 1.
        rejected_emb: `(n_l, D)` unit-norm embeddings of the rejected response's sub-sentences, n_l ≥ 1.
        logit_scale: the encoder's temperature (CLIP: exp(logit_scale) = 100 for trained models).

    Returns:
        `PairScore` with `chosen` (n_w probabilities), `rejected` (n_l probabilities) and `delta`.
    """
    n_w = chosen_emb.shape[0]
    texts = torch.cat([chosen_emb, rejected_emb]).double()  # (n_w + n_l, D)
    logits = logit_scale * (texts @ image_emb.double())  # (n_w + n_l,)
    probs = torch.softmax(logits, dim=0)
    p_w, p_l = probs[:n_w], probs[n_w:]
    return PairScore(p_w.tolist(), p_l.tolist(), _clamp(float(p_w.sum() - p_l.sum())))


def mean_cosine(
    image_emb: torch.Tensor, chosen_emb: torch.Tensor, rejected_emb: torch.Tensor, logit_scale: float = 1.0
) -> PairScore:
    """A temperature-free alternative: each sub-sentence scores (1 + cos)/2 ∈ [0, 1]; δ = mean_w − mean_l ∈ [−1, 1].

    Shapes as in `union_softmax`; `logit_scale` is accepted for a common signature and ignored.
    """
    del logit_scale
    s_w = (1.0 + chosen_emb.double() @ image_emb.double()) / 2  # (n_w,)
    s_l = (1.0 + rejected_emb.double() @ image_emb.double()) / 2  # (n_l,)
    return PairScore(s_w.tolist(), s_l.tolist(), _clamp(float(s_w.mean() - s_l.mean())))


def _clamp(delta: float) -> float:
    """δ ∈ [−1, 1] exactly: rounding can push a sum of probabilities a few ulps past 1."""
    return min(1.0, max(-1.0, delta))


def get_scoring_function(name: str) -> Callable[..., PairScore]:
    if name == "union_softmax":
        return union_softmax
    if name == "mean_cosine":
        return mean_cosine
    raise ValueError(f"unknown scorer {name!r}; choose one of {', '.join(SCORERS)}")


class InplaceQuickGELU(QuickGELUActivation):
    """x · σ(1.702·x), CLIP's activation, computed as σ(x·1.702) then multiplied by x in place.

    The same two products in the same order of operands' values (IEEE products commute), so the output is bit-identical
    to `QuickGELUActivation`; it allocates one temporary instead of three. Falls back to the original when autograd
    needs the graph (the in-place product would overwrite a tensor saved for the backward pass).
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and input.requires_grad:
            return super().forward(input)
        return torch.sigmoid(input * 1.702).mul_(input)


def use_inplace_activations(model: torch.nn.Module) -> int:
    """Replace every `QuickGELUActivation` in `model` by `InplaceQuickGELU`; returns how many were replaced."""
    replaced = 0
    for module in model.modules():
        for name, child in list(module.named_children()):
            if type(child) is QuickGELUActivation:
                setattr(module, name, InplaceQuickGELU())
                replaced += 1
    return replaced


def _embedding(output) -> torch.Tensor:
    """transformers 5 returns an output object from get_*_features (embedding in `.pooler_output`); 4.x a tensor."""
    if isinstance(output, torch.Tensor):
        return output
    return output.pooler_output


class DualEncoderScorer:
    """Image and text embeddings from a transformers dual encoder, unit-normalised, with truncation counted.

    The model needs `get_image_features(pixel_values=...)`, `get_text_features(input_ids=..., attention_mask=...)`
    and a `logit_scale` parameter (CLIP, SigLIP, SigLIP2 with fixed resolution, ...). The model is moved to the
    device and dtype, put in eval mode and its QuickGELU activations are replaced by `InplaceQuickGELU` (same bits)
    in place: a model passed in is changed, not copied.
    """

    def __init__(self, model, processor, device: str = "auto", dtype: str = "auto", name: str = "<model>") -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        use_inplace_activations(self.model)
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.image_processor = getattr(processor, "image_processor", None)
        self.name = name
        self.model_type = str(getattr(model.config, "model_type", ""))
        # SigLIP was trained with texts padded to the full context; CLIP pools at EOS and pads to the longest.
        self.pad_to_max_length = "siglip" in self.model_type
        self.max_text_tokens = self._context_length()
        scale = getattr(model, "logit_scale", None)
        self.logit_scale = float(scale.detach().float().exp()) if scale is not None else 100.0

    @classmethod
    def from_pretrained(
        cls, name_or_path: str, device: str = "auto", dtype: str = "auto", what: str = "--clip"
    ) -> DualEncoderScorer:
        """Load with `AutoModel`/`AutoProcessor` (a folder, or a hub name already in the local cache); `tiny:clip`
        builds the tiny random CLIP of `dama.tiny` (seed 0, so every run gets the same weights). A model that cannot
        be found raises `dama.errors.ModelNotFoundError` naming `what` (the flag it came from)."""
        if name_or_path == "tiny:clip":  # offline, random weights: for tests, the demo and the tiny recipes
            model, processor = build_clip()
            return cls(model, processor, device=device, dtype=dtype, name=name_or_path)
        from transformers import AutoModel, AutoProcessor

        with loading_model(name_or_path, what):  # not found: one line saying how to point at a folder
            processor = AutoProcessor.from_pretrained(name_or_path)
            model = AutoModel.from_pretrained(name_or_path)
        if not hasattr(model, "get_image_features") or not hasattr(model, "get_text_features"):
            raise TypeError(f"{name_or_path!r} ({type(model).__name__}) is not a dual encoder (CLIP/SigLIP-style)")
        return cls(model, processor, device=device, dtype=dtype, name=name_or_path)

    def _context_length(self) -> int:
        text_config = getattr(self.model.config, "text_config", self.model.config)
        limits = [
            getattr(text_config, "max_position_embeddings", None),
            getattr(self.tokenizer, "model_max_length", None),
        ]
        limits = [int(x) for x in limits if x is not None and 0 < int(x) < 1_000_000]
        return min(limits) if limits else 77

    @torch.inference_mode()
    def encode_images(self, pixel_values: np.ndarray | torch.Tensor) -> torch.Tensor:
        """`(N, C, H, W)` preprocessed pixels → `(N, D)` unit-norm float32 embeddings on the CPU."""
        pixels = torch.as_tensor(pixel_values).to(device=self.device, dtype=self.dtype)
        emb = _embedding(self.model.get_image_features(pixel_values=pixels)).float()
        return torch.nn.functional.normalize(emb, dim=-1).cpu()

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text with special tokens, before truncation."""
        return list(self.tokenizer(list(texts), add_special_tokens=True)["input_ids"])

    def encode_texts(self, texts: Sequence[str]) -> tuple[torch.Tensor, list[bool]]:
        """`T` texts → `(T, D)` unit-norm float32 embeddings on the CPU, and which texts were truncated."""
        return self.encode_token_ids(texts, self.tokenize(texts))

    @torch.inference_mode()
    def encode_token_ids(
        self, texts: Sequence[str], token_ids: Sequence[Sequence[int]]
    ) -> tuple[torch.Tensor, list[bool]]:
        """Embeddings of texts already tokenized by `tokenize` (`token_ids[i]` of `texts[i]`).

        A text longer than the encoder's context is tokenized again with the tokenizer's own truncation (which keeps
        the special tokens), so the ids are exactly what `tokenizer(..., truncation=True)` gives. Padding follows the
        tokenizer's side and pad id: to the longest text (CLIP), or to the full context (SigLIP, as it was trained).

        Returns:
            `(T, D)` embeddings and, per text, whether it was truncated.
        """
        ids = [list(x) for x in token_ids]
        if not ids or len(ids) != len(texts):
            raise ValueError(
                f"encode_token_ids needs one id list per text and at least one text "
                f"(got {len(texts)} texts, {len(ids)} id lists)"
            )
        truncated = [len(x) > self.max_text_tokens for x in ids]
        long = [i for i, cut in enumerate(truncated) if cut]
        if long:
            redone = self.tokenizer([texts[i] for i in long], truncation=True, max_length=self.max_text_tokens)
            for i, x in zip(long, redone["input_ids"]):
                ids[i] = list(x)
        width = self.max_text_tokens if self.pad_to_max_length else max(len(x) for x in ids)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)  # (T, L)
        mask = torch.zeros((len(ids), width), dtype=torch.long)  # (T, L)
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        for row, x in enumerate(ids):
            span = slice(width - len(x), width) if left else slice(0, len(x))
            input_ids[row, span] = torch.tensor(x, dtype=torch.long)
            mask[row, span] = 1
        inputs = {"input_ids": input_ids.to(self.device)}
        if not self.pad_to_max_length:
            inputs["attention_mask"] = mask.to(self.device)
        emb = _embedding(self.model.get_text_features(**inputs)).float()
        return torch.nn.functional.normalize(emb, dim=-1).cpu(), truncated
