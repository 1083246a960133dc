"""Prefix sharing: the image and prompt of a preference pair go through the model once, not twice.

TRL's collator puts a pair on the batch axis twice, `[chosen_0..B, rejected_0..B]`, each row `prompt + answer`, so
the vision tower and every decoder layer process the image tokens and the prompt once for the chosen and once for the
rejected answer. For LLaVA-1.5 that prefix is ~630 of ~750 tokens. Here each pair becomes one packed row

    [ prompt[:-1] | prompt[-1], chosen answer | prompt[-1], rejected answer ]      (segments 0 | 1 | 2)

with a 4-D attention mask in which a token sees the earlier tokens of its own segment and all of segment 0, and
position ids copied from the unshared rows (so segment 2 restarts where the prompt ends). The last prompt token is
repeated at the head of segment 2 so that the rejected answer's first token has its own predicting position; its
key and value equal those of the original (same token, same position, same visible context), so every answer
token sees exactly the keys and values it sees in its unshared row: the log-probs are the unshared ones up to
floating-point summation order, and gradients flow back through the shared prefix from both answers (the approach
of Wang & Hegde, "Accelerating Direct Preference Optimization with Prefix Sharing", arXiv 2410.20305).

The per-token outputs are then gathered back into the unshared `(2B, T - 1)` layout, so everything downstream (sums,
metrics) is unchanged. Supported: LLaVA, Qwen2-VL and Qwen2.5-VL (multimodal RoPE positions are taken from the
model's own `get_rope_index` on the unshared rows) with SDPA or eager attention; anything else is reported by
`unsupported_reason` and the caller falls back to the unshared forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from accelerate.utils import is_peft_model

SUPPORTED_MODEL_TYPES = ("llava", "qwen2_vl", "qwen2_5_vl")
# backends that take an arbitrary 4-D mask (flash-attention kernels only take padding masks)
MASKABLE_ATTENTION = ("sdpa", "eager")
# batch keys the packing knows how to carry; any other key makes the batch fall back to the unshared forward
PER_TOKEN_KEYS = ("input_ids", "attention_mask", "completion_mask", "mm_token_type_ids", "token_type_ids")
PER_IMAGE_KEYS = ("pixel_values", "image_sizes", "image_grid_thw")
PER_TOKEN_OUTPUTS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1", "label_mask")


class PrefixSharingUnavailable(Exception):
    """This model or batch cannot be packed; the message says why (the caller falls back and logs it)."""


@dataclass
class PackedPairs:
    """One packed row per pair and the map back to the unshared layout.

    model_inputs: keyword arguments of the model forward: `input_ids` `(B, L)`, a 4-D additive `attention_mask`
        `(B, 1, L, L)`, `position_ids` `(B, L)` or `(3, B, L)`, the vision inputs of the B pairs (one copy each).
    labels: `(B, L)`, the answer tokens, -100 elsewhere.
    gather_index: `(2B, T - 1)` flat index into the packed per-token outputs `(B, L - 1)` for each unshared
        next-token position; `valid` `(2B, T - 1)` marks the answer positions (`completion_mask[:, 1:]`).
    packed_tokens / unshared_tokens: real tokens in the packed rows / in the collated rows (for cost accounting).
    """

    model_inputs: dict[str, Any]
    labels: torch.Tensor
    gather_index: torch.Tensor
    valid: torch.Tensor
    packed_tokens: int
    unshared_tokens: int


def _base_model(model: Any) -> Any:
    model = getattr(model, "module", model)  # DDP
    if is_peft_model(model):
        model = model.get_base_model()
    return model


def unsupported_reason(model: Any) -> str | None:
    """None when `model` can run the shared-prefix forward, else why not (in words, for the log)."""
    base = _base_model(model)
    config = getattr(base, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        return f"model type {model_type!r} is not one of {SUPPORTED_MODEL_TYPES}"
    attention = getattr(config, "_attn_implementation", None)
    if attention not in MASKABLE_ATTENTION:
        return f"attention implementation {attention!r} does not take a 4-D mask (use one of {MASKABLE_ATTENTION})"
    unwrapped = getattr(model, "module", model)
    if is_peft_model(unwrapped) and getattr(unwrapped, "active_peft_config", None) is not None:
        if unwrapped.active_peft_config.is_prompt_learning:
            return "prompt-learning PEFT prepends virtual tokens to every row"
    return None


def _image_token_ids(config: Any) -> set[int]:
    names = ("image_token_id", "image_token_index", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    return {int(getattr(config, name)) for name in names if getattr(config, name, None) is not None}


def _unshared_position_ids(base: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The position ids the model itself uses on the collated rows: `(2B, T)`, or `(3, 2B, T)` for M-RoPE."""
    ids = inputs["input_ids"]
    if base.config.model_type in ("qwen2_vl", "qwen2_5_vl"):
        positions, _ = base.model.get_rope_index(
            ids,
            image_grid_thw=inputs.get("image_grid_thw"),
            video_grid_thw=None,
            attention_mask=inputs["attention_mask"],
            mm_token_type_ids=inputs.get("mm_token_type_ids"),
        )
        return positions
    # Llama-style decoders number the columns 0..T-1 whatever the padding (right padding here)
    return torch.arange(ids.size(1), device=ids.device).expand_as(ids)


def chosen_row_images(inputs: dict[str, torch.Tensor], n_rows: int) -> dict[str, torch.Tensor]:
    """The vision inputs of the chosen rows, after checking they equal the rejected rows' (one image per row)."""
    half = n_rows // 2
    out: dict[str, torch.Tensor] = {}
    grid = inputs.get("image_grid_thw")
    if grid is not None:
        if grid.size(0) != n_rows:
            raise PrefixSharingUnavailable(f"{grid.size(0)} images for {n_rows} rows (one image per row is supported)")
        if not torch.equal(grid[:half], grid[half:]):
            raise PrefixSharingUnavailable("the chosen and rejected rows of a pair have different image grids")
        out["image_grid_thw"] = grid[:half]
        n_patches = int(grid[:half].prod(dim=1).sum())
        pixels = inputs["pixel_values"]
        if not torch.equal(pixels[:n_patches], pixels[n_patches:]):
            raise PrefixSharingUnavailable("the chosen and rejected rows of a pair have different images")
        out["pixel_values"] = pixels[:n_patches]
        return out
    for key in ("pixel_values", "image_sizes"):
        value = inputs.get(key)
        if value is None:
            continue
        if value.size(0) != n_rows:
            raise PrefixSharingUnavailable(f"{key} has {value.size(0)} entries for {n_rows} rows")
        if not torch.equal(value[:half], value[half:]):
            raise PrefixSharingUnavailable("the chosen and rejected rows of a pair have different images")
        out[key] = value[:half]
    return out


def pack_pairs(model: Any, inputs: dict[str, torch.Tensor]) -> PackedPairs:
    """Pack the collated batch `[chosen_0..B, rejected_0..B]` (right-padded rows `prompt + answer`) into B rows.

    Raises `PrefixSharingUnavailable` when the batch does not have that form (e.g. a pair whose two rows carry
    different prompt tokens after truncation), so the caller can run the unshared forward instead.
    """
    unknown = sorted(set(inputs) - set(PER_TOKEN_KEYS) - set(PER_IMAGE_KEYS))
    if unknown:
        raise PrefixSharingUnavailable(f"batch keys {unknown} are not handled by the packing")
    base = _base_model(model)
    ids = inputs["input_ids"]
    attention = inputs["attention_mask"].bool()
    completion = inputs["completion_mask"].bool()
    n_rows, width = ids.shape
    if n_rows % 2:
        raise PrefixSharingUnavailable(f"odd number of rows ({n_rows}): not a [chosen, rejected] batch")
    half = n_rows // 2
    prompt = attention & ~completion
    prompt_len = prompt.sum(dim=1)
    answer_len = completion.sum(dim=1)
    cols = torch.arange(width, device=ids.device)
    layout_ok = (prompt == (cols < prompt_len[:, None])).all() & (
        completion == ((cols >= prompt_len[:, None]) & (cols < (prompt_len + answer_len)[:, None]))
    ).all()
    same_prompt = (prompt_len[:half] == prompt_len[half:]).all() & (
        torch.where(prompt[:half], ids[:half], -1) == torch.where(prompt[half:], ids[half:], -1)
    ).all()
    last_prompt = ids.gather(1, (prompt_len - 1).clamp(min=0)[:, None]).squeeze(1)
    # one host sync for all the checks, lengths and the prompts' last tokens
    checks = torch.stack([layout_ok, same_prompt, (prompt_len >= 1).all()]).long()
    synced = torch.cat([checks, prompt_len, answer_len, last_prompt[:half]]).tolist()
    checks, lengths = synced[:3], [synced[3 : 3 + n_rows], synced[3 + n_rows : 3 + 2 * n_rows]]
    last_tokens = synced[3 + 2 * n_rows :]
    if not checks[0]:
        raise PrefixSharingUnavailable("rows are not right-padded `prompt + answer`")
    if not checks[1]:
        raise PrefixSharingUnavailable("a pair's chosen and rejected rows have different prompt tokens")
    if not checks[2]:
        raise PrefixSharingUnavailable("a row has an empty prompt")
    if set(last_tokens) & _image_token_ids(base.config):
        raise PrefixSharingUnavailable("a prompt ends in an image token")

    # per pair: (source row, source column, segment) of every packed token
    rows, src_cols, segments = [], [], []
    for i in range(half):
        p, c, r = lengths[0][i], lengths[1][i], lengths[1][half + i]
        rows.append([i] * (p + c) + [half + i] * (1 + r))
        src_cols.append([*range(p - 1), *range(p - 1, p + c), *range(p - 1, p + r)])
        segments.append([0] * (p - 1) + [1] * (1 + c) + [2] * (1 + r))
    packed_len = max(len(seg) for seg in segments)
    packed_tokens = sum(len(seg) for seg in segments)
    for i in range(half):  # padding points at the pair's last prompt token: never an image token
        pad = packed_len - len(segments[i])
        rows[i] += [i] * pad
        src_cols[i] += [lengths[0][i] - 1] * pad
        segments[i] += [-1] * pad
    device = ids.device
    src_row = torch.tensor(rows, device=device)
    src_col = torch.tensor(src_cols, device=device)
    segment = torch.tensor(segments, device=device)

    packed: dict[str, Any] = {"input_ids": ids[src_row, src_col]}
    for key in ("mm_token_type_ids", "token_type_ids"):
        if key in inputs:
            packed[key] = inputs[key][src_row, src_col]
    positions = _unshared_position_ids(base, inputs)
    packed["position_ids"] = positions[..., src_row, src_col]
    real = segment >= 0
    causal = torch.ones(packed_len, packed_len, dtype=torch.bool, device=device).tril()
    visible = (segment[:, None, :] == 0) | (segment[:, None, :] == segment[:, :, None])
    allowed = causal & visible & real[:, None, :] & real[:, :, None]
    # a padding query sees itself only: no fully masked row (which would give NaN in SDPA)
    allowed |= torch.eye(packed_len, dtype=torch.bool, device=device)
    dtype = base.get_input_embeddings().weight.dtype
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    packed["attention_mask"] = mask.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]
    packed.update(chosen_row_images(inputs, n_rows))
    labels = torch.where(completion[src_row, src_col] & real, packed["input_ids"], -100)

    # unshared next-token position t of row k predicts column t + 1; in the packed row that token sits at
    # t + 1 (chosen: segment 0 is one shorter than the prompt, segment 1 starts with the prompt's last token) or at
    # t + 1 + (chosen length + 1) (rejected: after segment 1 and the repeated prompt token); its predicting position
    # is one before.
    valid = completion[:, 1:]
    t = torch.arange(width - 1, device=device).expand(n_rows, -1)
    chosen_len = answer_len[:half]
    offset = torch.cat([torch.zeros_like(chosen_len), chosen_len + 1])
    pair = torch.arange(n_rows, device=device) % half
    index = (pair[:, None] * (packed_len - 1) + t + offset[:, None]).clamp(max=half * (packed_len - 1) - 1)
    return PackedPairs(
        model_inputs=packed,
        labels=labels,
        gather_index=torch.where(valid, index, 0),
        valid=valid,
        packed_tokens=packed_tokens,
        unshared_tokens=int(sum(lengths[0]) + sum(lengths[1])),
    )


def unpack_outputs(packed: PackedPairs, outputs: Any) -> Any:
    """The fused-head outputs of the packed forward, per-token fields moved to the unshared `(2B, T - 1)` layout.

    A gather, so gradients flow back to the packed positions (and from there into the shared prefix).
    """
    fields = {}
    for name in PER_TOKEN_OUTPUTS:
        value = getattr(outputs, name, None)
        if value is None:
            continue
        gathered = value.reshape(-1)[packed.gather_index]
        fields[name] = torch.where(
            packed.valid, gathered, torch.zeros((), dtype=gathered.dtype, device=gathered.device)
        )
    return type(outputs)(**{**{k: v for k, v in outputs.items()}, **fields})


def shared_prefix_forward(model: Any, inputs: dict[str, torch.Tensor], **kwargs: Any) -> tuple[Any, PackedPairs]:
    """`model(..., fused_lm_head=True)` on the packed pairs, outputs in the unshared layout, and the packing.

    `inputs` is the collated batch (with `completion_mask`); `kwargs` are extra forward arguments
    (`output_router_logits`, ...). Raises `PrefixSharingUnavailable` when the batch cannot be packed.
    """
    packed = pack_pairs(model, inputs)
    outputs = model(**packed.model_inputs, **kwargs, use_cache=False, labels=packed.labels, fused_lm_head=True)
    return unpack_outputs(packed, outputs), packed
