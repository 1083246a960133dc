"""Tiny, offline, config-built models, tokenizers and processors.

Nothing here touches a model hub: a byte-level BPE is trained on local text, and the models are built from configs
with random weights. Tests use these builders, and so does the demo (which then trains them). Sizes are chosen so a
forward+backward over 4 preference pairs takes milliseconds on a CPU.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPProcessor,
    CLIPTextConfig,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", IMAGE_TOKEN]
# The same tokens with `</s>` off id 2, which transformers' CLIP text tower reads as a legacy config (see build_tokenizer).
CLIP_SPECIAL_TOKENS = ["<pad>", "<s>", "<unk>", "</s>", IMAGE_TOKEN]

# A chat template in the LLaVA-1.5 spirit. `content` may be a string or a list of {"type": "image"|"text"} parts.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: {% elif message['role'] == 'assistant' %}ASSISTANT: "
    "{% else %}SYSTEM: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}</s>{% endif %}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT: {% endif %}"
)

DEFAULT_CORPUS = [
    "A red cat sits on a wooden table next to a blue cup.",
    "Two dogs are playing with a ball in the green park.",
    "There is a large yellow bus parked on the street near a tree.",
    "A person holds an umbrella while walking past a bicycle.",
    "The image shows a small bird on a branch and a car in the background.",
    "Describe the image in detail. What objects are in this picture?",
    "Is there a chair in the image? Yes, there is a chair. No, there is no chair.",
    "A plate with a pizza, a fork and a knife on a kitchen counter.",
    "The square is left of the circle; the triangle is at the bottom right.",
    "USER: ASSISTANT: SYSTEM: image picture photo scene object objects color colour size position count",
]


def build_tokenizer(
    corpus: Iterable[str] | None = None,
    vocab_size: int = 512,
    add_eos: bool = False,
    chat_template: str = CHAT_TEMPLATE,
    special_tokens: Sequence[str] = SPECIAL_TOKENS,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `corpus` and wrap it as a fast tokenizer with `<image>` and a chat template.

    With `add_eos=True` every encoded text ends in `</s>`: CLIP's text tower pools at the EOS position, so a CLIP
    tokenizer without it would give every text the same embedding. `special_tokens` (the same five, in any order)
    fixes their ids: transformers' CLIP text tower treats `eos_token_id == 2` as a legacy config and pools at the
    *highest token id* instead of at EOS, so a CLIP tokenizer wants `</s>` at another id (`CLIP_SPECIAL_TOKENS`).
    """
    if sorted(special_tokens) != sorted(SPECIAL_TOKENS):
        raise ValueError(f"special_tokens must be an ordering of {SPECIAL_TOKENS}, got {list(special_tokens)}")
    special_tokens = list(special_tokens)
    texts = list(corpus) if corpus is not None else DEFAULT_CORPUS
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    if add_eos:
        eos_id = bpe.token_to_id("</s>")
        bpe.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos_id)]
        )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": IMAGE_TOKEN},
    )
    tokenizer.chat_template = chat_template
    return tokenizer


def build_image_processor(image_size: int = 16) -> CLIPImageProcessorPil:
    """A CLIP image processor with explicit sizes (no hub defaults); the PIL backend, as torchvision is absent."""
    return CLIPImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        do_center_crop=True,
        do_resize=True,
        do_normalize=True,
        do_convert_rgb=True,
    )


def tiny_vision_config(image_size: int = 16, patch_size: int = 8, hidden_size: int = 32) -> CLIPVisionConfig:
    return CLIPVisionConfig(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=hidden_size,
    )


def build_llava(
    tokenizer: PreTrainedTokenizerFast | None = None,
    image_size: int = 16,
    patch_size: int = 8,
    hidden_size: int = 32,
    num_layers: int = 2,
    vision_hidden_size: int = 32,
    seed: int = 0,
) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """A LLaVA-architecture VLM (CLIP vision tower + projector + Llama) built from configs, and its processor."""
    tokenizer = tokenizer if tokenizer is not None else build_tokenizer()
    num_patches = (image_size // patch_size) ** 2
    config = LlavaConfig(
        vision_config=tiny_vision_config(image_size, patch_size, vision_hidden_size),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=1024,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=num_patches,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    processor = LlavaProcessor(
        image_processor=build_image_processor(image_size),
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=tokenizer.chat_template,
    )
    return model, processor


def build_qwen2_vl(tokenizer: PreTrainedTokenizerFast | None = None, seed: int = 0):
    """A Qwen2-VL model built from a tiny config, with an image-only processor (the video processor needs torchvision).

    Qwen2-VL expects its own special tokens; they are added to the tokenizer and the chat template inserts them.
    """
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessorPil

    template = CHAT_TEMPLATE.replace("<image>\n", "<|vision_start|><|image_pad|><|vision_end|>")
    tokenizer = tokenizer if tokenizer is not None else build_tokenizer(chat_template=template)
    tokenizer.add_special_tokens(
        {"additional_special_tokens": ["<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>"]}
    )
    tokenizer.chat_template = template
    head_dim = 16
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "max_position_embeddings": 1024,
            "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": 32,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": 4,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "in_channels": 3,
        },
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
    )
    assert 2 * sum(config.text_config.rope_parameters["mrope_section"]) == head_dim
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=16 * 16, max_pixels=16 * 16, patch_size=4, merge_size=2, temporal_patch_size=2
    )
    processor = _ImageOnlyQwen2VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=template
    )
    return model, processor


def _image_only_qwen2_vl_processor_class():
    from transformers import Qwen2VLProcessor

    class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
        """Qwen2-VL's processor without the video processor, which imports torchvision."""

        attributes = ["image_processor", "tokenizer"]

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            super(Qwen2VLProcessor, self).__init__(image_processor, tokenizer, chat_template=chat_template)
            self.image_token = "<|image_pad|>"
            self.video_token = "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)

    return ImageOnlyQwen2VLProcessor


def _ImageOnlyQwen2VLProcessor(**kwargs):  # noqa: N802 - factory keeps the transformers import lazy
    return _image_only_qwen2_vl_processor_class()(**kwargs)


def build_clip(
    tokenizer: PreTrainedTokenizerFast | None = None,
    image_size: int = 16,
    patch_size: int = 8,
    hidden_size: int = 32,
    num_layers: int = 2,
    max_position_embeddings: int = 32,
    seed: int = 0,
) -> tuple[CLIPModel, CLIPProcessor]:
    """A dual-encoder CLIP from a tiny config. Its tokenizer appends EOS (the text tower pools there)."""
    tokenizer = (
        tokenizer if tokenizer is not None else build_tokenizer(add_eos=True, special_tokens=CLIP_SPECIAL_TOKENS)
    )
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        max_position_embeddings=max_position_embeddings,
        projection_dim=hidden_size,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision_config = tiny_vision_config(image_size, patch_size, hidden_size)
    config = CLIPConfig(
        text_config=text_config.to_dict(), vision_config=vision_config.to_dict(), projection_dim=hidden_size
    )
    torch.manual_seed(seed)
    model = CLIPModel(config)
    tokenizer.model_max_length = max_position_embeddings
    processor = CLIPProcessor(image_processor=build_image_processor(image_size), tokenizer=tokenizer)
    return model, processor


def save_pretrained(model, processor, path: str | Path) -> Path:
    """Save a model and its processor so `from_pretrained(path)` (and `dama train --model_name_or_path`) loads them."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def clone(model):
    """A frozen deep copy, e.g. a reference model for a model built from a config (it has no hub name)."""
    ref = copy.deepcopy(model)
    ref.requires_grad_(False)
    return ref.eval()
