"""`training_text: vicuna_v1` trains on LLaVA-1.5's own string, `</s>` included, as the official DAMA run does.

The expected string is built by hand from the official template (injadlu/DAMA):
- `llava/conversation.py` lines 242-252, `conv_vicuna_v1`: system = "A chat between a curious user and an artificial
  intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.",
  roles ("USER", "ASSISTANT"), sep " ", sep2 "</s>";
- lines 54-63, `get_prompt` for `SeparatorStyle.TWO`: `system + sep`, then for turn i `role + ": " + message +
  [sep, sep2][i % 2]`;
- `llava/train/train_dpo.py` line 809: the user message is `f"<image>\\n{question}"`, line 810 the answer;
- `llava/mm_utils.py` lines 193-195: the BOS of the first chunk is kept; `preprocess_v1` (train_dpo.py lines
  509-539) masks the labels only up to "ASSISTANT:", so the answer and `</s>` are in the summed log-prob.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from datasets import Dataset
from PIL import Image
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import LlamaTokenizer, PreTrainedTokenizerFast
from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

from dama.conversation import VICUNA_V1_SYSTEM, TrainingTextError, render_training_text
from dama.tiny import DEFAULT_CORPUS, build_llava
from dama.train import build_trainer

QUESTION, CHOSEN, REJECTED = "What is on the table?", "A red cup.", "A blue car."
# get_prompt(): system + " " + "USER" + ": " + "<image>\n" + question + " " + "ASSISTANT" + ": " + answer + "</s>"
OFFICIAL_CHOSEN = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions. USER: <image>\nWhat is on the table? ASSISTANT: "
    "A red cup.</s>"
)


def pair_dataset() -> Dataset:
    return Dataset.from_list(
        [
            {
                "image": Image.new("RGB", (16, 16), (200, 30, 30)),
                "prompt": [{"role": "user", "content": QUESTION}],
                "chosen": [{"role": "assistant", "content": CHOSEN}],
                "rejected": [{"role": "assistant", "content": REJECTED}],
            }
        ]
    )


def test_rendered_pair_is_the_official_string_and_eos_is_in_the_completion():
    _, processor = build_llava()
    tokenizer = processor.tokenizer
    data = render_training_text(pair_dataset(), tokenizer, "vicuna_v1")
    row = data[0]
    assert row["prompt"] + row["chosen"] == "<s>" + OFFICIAL_CHOSEN
    assert row["prompt"] + row["rejected"] == "<s>" + OFFICIAL_CHOSEN.replace(CHOSEN, REJECTED)

    # what the model sees: TRL's collator (prompt and completion tokenized apart) gives the ids of the whole string
    batch = DataCollatorForVisionPreference(processor)([dict(row)])
    image = pair_dataset()[0]["image"]
    whole = processor(images=[image], text=["<s>" + OFFICIAL_CHOSEN], add_special_tokens=False, return_tensors="pt")
    whole = whole["input_ids"][0]
    chosen_ids = batch["input_ids"][0][batch["attention_mask"][0].bool()]
    assert chosen_ids.tolist() == whole.tolist()
    assert chosen_ids[0].item() == tokenizer.bos_token_id
    # the summed log-prob covers exactly " A red cup.</s>", ending in EOS
    completion = batch["input_ids"][0][batch["completion_mask"][0].bool()]
    assert tokenizer.decode(completion) == " " + CHOSEN + "</s>"
    assert completion[-1].item() == tokenizer.eos_token_id


def test_question_and_answer_are_taken_verbatim_and_a_written_placeholder_is_not_doubled():
    _, processor = build_llava()
    data = Dataset.from_list(
        [
            {
                "image": Image.new("RGB", (16, 16)),
                "prompt": [{"role": "user", "content": "<image>\n" + QUESTION}],  # TRL text with its own placeholder
                "chosen": [{"role": "assistant", "content": CHOSEN + " "}],  # train_dpo.py line 810 keeps it as is
                "rejected": [{"role": "assistant", "content": REJECTED}],
            }
        ]
    )
    row = render_training_text(data, processor.tokenizer, "vicuna_v1")[0]
    assert row["prompt"] + row["chosen"] == "<s>" + OFFICIAL_CHOSEN.replace("</s>", " </s>")


def test_chat_template_leaves_the_data_alone():
    _, processor = build_llava()
    data = pair_dataset()
    assert render_training_text(data, processor.tokenizer, "chat_template") is data


def test_rendering_twice_changes_nothing():
    _, processor = build_llava()
    once = render_training_text(pair_dataset(), processor.tokenizer, "vicuna_v1")
    twice = render_training_text(once, processor.tokenizer, "vicuna_v1")
    assert twice[0]["prompt"] == once[0]["prompt"] and twice[0]["chosen"] == once[0]["chosen"]


def legacy_sentencepiece_tokenizer() -> PreTrainedTokenizerFast:
    """A BPE whose normalizer prepends '▁' to every text it is given, as the legacy LLaMA tokenizer does.

    Tokenized alone, " A red cup." becomes "▁▁A▁red▁cup." — one '▁' more than inside the whole string.
    """
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    bpe.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    specials = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials, show_progress=False)
    bpe.train_from_iterator(DEFAULT_CORPUS, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )


def test_legacy_sentencepiece_tokenizer_gets_the_whole_string_ids():
    tokenizer = legacy_sentencepiece_tokenizer()
    row = render_training_text(pair_dataset(), tokenizer, "vicuna_v1")[0]
    whole = tokenizer("<s>" + OFFICIAL_CHOSEN, add_special_tokens=False)["input_ids"]
    split = tokenizer([row["prompt"], row["chosen"]], add_special_tokens=False)["input_ids"]
    assert split[0] + split[1] == whole
    with_space = tokenizer([" " + CHOSEN + "</s>"], add_special_tokens=False)["input_ids"][0]
    assert split[0] + with_space != whole  # written with its space, the completion would gain a '▁' token
    assert row["chosen"] == CHOSEN + "</s>"  # the piece's own '▁' stands for the space after "ASSISTANT:"


def llama_tokenizer(legacy: bool, image: bool = True) -> LlamaTokenizer:
    """transformers 5's `LlamaTokenizer`, the class llava-hf/llava-1.5-7b-hf loads as, on a small byte-fallback BPE
    trained here: Metaspace with the prefix space on the first text segment only (`legacy=False`, the llava-hf
    setting) or on every segment (`legacy=True`), `<image>` and `<pad>` added as llava-hf adds them."""
    bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    # trained on words (split=True), so that no merge crosses a word's '▁', as in LLaMA's SentencePiece model
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    corpus = [*DEFAULT_CORPUS, VICUNA_V1_SYSTEM, OFFICIAL_CHOSEN, "\n", "USER: ASSISTANT:"]
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False, initial_alphabet=["▁", "\n"]
    )
    bpe.train_from_iterator(corpus, trainer)
    model = json.loads(bpe.to_str())["model"]
    tokenizer = LlamaTokenizer(
        vocab=model["vocab"],
        merges=[tuple(m) for m in model["merges"]],
        legacy=legacy,
        add_bos_token=True,
        add_eos_token=False,
    )  # as llava-hf's tokenizer_config
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    if image:
        tokenizer.add_tokens([AddedToken("<image>", special=True, normalized=False)], special_tokens=True)
        tokenizer.image_token = "<image>"
    return tokenizer


def tokenizer_image_token(prompt: str, tokenizer, image_token_index: int) -> list[int]:
    """The official loader's tokenization, transcribed from injadlu/DAMA `llava/mm_utils.py` lines 185-204:
    each piece between '<image>' tokenized on its own with the tokenizer's special tokens, the first piece's BOS
    kept, the BOS of every piece dropped (`offset`), the image index between pieces."""
    prompt_chunks = [tokenizer(chunk).input_ids for chunk in prompt.split("<image>")]
    input_ids, offset = [], 0
    if prompt_chunks and prompt_chunks[0] and prompt_chunks[0][0] == tokenizer.bos_token_id:
        offset = 1
        input_ids.append(prompt_chunks[0][0])
    separated = [
        e for pair in zip(prompt_chunks, [[image_token_index] * (offset + 1)] * len(prompt_chunks)) for e in pair
    ][:-1]
    for x in separated:
        input_ids.extend(x[offset:])
    return input_ids


def preprocess_v1_labels(conversation: str, tokenizer, image_token_index: int) -> tuple[list[int], list[int]]:
    """Ids and labels of one single-round conversation as the official loader makes them, transcribed from
    injadlu/DAMA `llava/train/train_dpo.py` `preprocess_v1` lines 494-539 (has_image, no padding): BOS masked
    (`cur_len = 1`), then per round the instruction up to "ASSISTANT: " masked, its length taken as
    `len(tokenizer_image_token(parts[0])) - 2` (BOS and the trailing space's token), the rest of the round and the
    `</s>` (`cur_len += round_len` counts one more than the round's own tokens) left as labels."""
    input_ids = tokenizer_image_token(conversation, tokenizer, image_token_index)
    target = list(input_ids)
    sep = " ASSISTANT: "  # conv.sep + conv.roles[1] + ": "
    cur_len = 1
    target[:cur_len] = [-100] * cur_len
    for rou in conversation.split("</s>"):
        if rou == "":
            break
        parts = rou.split(sep)
        if len(parts) != 2:
            break
        parts[0] += sep
        round_len = len(tokenizer_image_token(rou, tokenizer, image_token_index))
        instruction_len = len(tokenizer_image_token(parts[0], tokenizer, image_token_index)) - 2
        target[cur_len : cur_len + instruction_len] = [-100] * instruction_len
        cur_len += round_len
    target[cur_len:] = [-100] * (len(target) - cur_len)
    assert cur_len == len(input_ids)  # the official "tokenization mismatch" check
    return input_ids, target


@pytest.mark.parametrize("legacy", [False, True])
def test_llama_tokenizers_train_on_the_official_ids(legacy):
    # The official run's ids (its conversation string through its tokenization) against what TRL's collator feeds
    # the model for the rendered row. With legacy=False a piece after <s> or <image> gets no prefix space unless the
    # rendering writes one: the official string alone would give "A" for "▁A" and drop the "▁" before "\n".
    tokenizer = llama_tokenizer(legacy)
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    _, processor = build_llava(tokenizer)
    row = render_training_text(pair_dataset(), tokenizer, "vicuna_v1")[0]
    for key, answer in (("chosen", CHOSEN), ("rejected", REJECTED)):
        expected, labels = preprocess_v1_labels(OFFICIAL_CHOSEN.replace(CHOSEN, answer), tokenizer, image_id)
        batch = DataCollatorForVisionPreference(processor)([dict(row) | {"rejected": row[key], "chosen": row[key]}])
        real = batch["attention_mask"][0].bool()
        ids = batch["input_ids"][0][real].tolist()
        in_completion = batch["completion_mask"][0][real].tolist()
        first, n_image = ids.index(image_id), ids.count(image_id)
        keep = [k for k in range(len(ids)) if not first < k < first + n_image]  # the image as one position
        assert [ids[k] for k in keep] == expected, (legacy, key)
        # the summed log-prob covers exactly the official labels: the answer's tokens and </s>
        assert [ids[k] if in_completion[k] else -100 for k in keep] == labels, (legacy, key)
        assert labels[-1] == tokenizer.eos_token_id
    whole = tokenizer("<s>" + OFFICIAL_CHOSEN, add_special_tokens=False).input_ids
    # the official string itself gives the official ids only with the legacy normalizer
    assert (whole == tokenizer_image_token(OFFICIAL_CHOSEN, tokenizer, image_id)) == legacy
    assert row["prompt"].startswith("<s> A chat" if not legacy else "<s>A chat")


@pytest.mark.parametrize("legacy", [False, True])
def test_rendered_rows_are_checked_again_and_stale_ones_refused(legacy):
    tokenizer = llama_tokenizer(legacy)
    once = render_training_text(pair_dataset(), tokenizer, "vicuna_v1")
    twice = render_training_text(once, tokenizer, "vicuna_v1")  # checked, unchanged
    assert twice[0]["prompt"] == once[0]["prompt"] and twice[0]["chosen"] == once[0]["chosen"]
    # a row rendered as the official string alone (what an earlier version wrote) with the legacy=False tokenizer
    stale = Dataset.from_list(
        [
            {
                "image": Image.new("RGB", (16, 16)),
                "prompt": "<s>" + OFFICIAL_CHOSEN.split(" ASSISTANT:")[0] + " ASSISTANT:",
                "chosen": " " + CHOSEN + "</s>",
                "rejected": " " + REJECTED + "</s>",
            }
        ]
    )
    if legacy:  # its ids are the official ones for a legacy tokenizer (the completion loses its space there)
        stale = stale.map(lambda r: {"chosen": CHOSEN + "</s>", "rejected": REJECTED + "</s>"})
        assert render_training_text(stale, tokenizer, "vicuna_v1")[0]["prompt"] == stale[0]["prompt"]
    else:
        with pytest.raises(TrainingTextError, match="row 0: field 'chosen' is already rendered"):
            render_training_text(stale, tokenizer, "vicuna_v1")


def test_tokenizer_without_an_image_token_is_refused():
    # "<image>" is then an unknown word, not one token: the error says so instead of blaming the spacing
    with pytest.raises(TrainingTextError, match="needs the image placeholder '<image>' as one token"):
        render_training_text(pair_dataset(), llama_tokenizer(False, image=False), "vicuna_v1")


def test_tokenizer_without_bos_is_refused():
    _, processor = build_llava()
    tokenizer = processor.tokenizer
    tokenizer.bos_token = None
    with pytest.raises(TrainingTextError, match="needs a tokenizer with BOS and EOS"):
        render_training_text(pair_dataset(), tokenizer, "vicuna_v1")


def test_dama_train_with_vicuna_v1_trains_on_the_rendered_text(tmp_path):
    root = Path(__file__).resolve().parents[2]
    trainer = build_trainer(
        [
            "--config",
            str(root / "recipes/tiny/dpo.yaml"),
            "--dataset_path",
            str(root / "examples/tiny/pairs.jsonl"),
            "--image_root",
            str(root / "examples/tiny"),
            "--output_dir",
            str(tmp_path / "run"),
            "--max_steps",
            "2",
            "--training_text",
            "vicuna_v1",
        ]
    )
    row = trainer.train_dataset[0]
    assert row["prompt"] == (
        "<s>A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the user's questions. USER: <image>\nDescribe the image. ASSISTANT:"
    )
    assert row["chosen"] == " The image shows a yellow circle.</s>"  # examples/tiny/pairs.jsonl row 0
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
