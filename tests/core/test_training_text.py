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

import math
from pathlib import Path

import pytest
from datasets import Dataset
from PIL import Image
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast
from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

from dama.conversation import TrainingTextError, render_training_text
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
