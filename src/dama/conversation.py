"""The text a pair is trained on: the model's chat template (default) or LLaVA-1.5's own Vicuna-v1 conversation.

`training_text: vicuna_v1` renders every pair as the official DAMA run does (injadlu/DAMA, `llava/conversation.py`
`conv_vicuna_v1`, lines 242-252: the system sentence below, roles `USER`/`ASSISTANT`, `sep=" "`, `sep2="</s>"`;
`Conversation.get_prompt`, `SeparatorStyle.TWO`, lines 54-63: `system + sep`, then `role + ": " + message` followed by
`sep` after the user turn and `sep2` after the assistant turn; `llava/train/train_dpo.py` line 809: the user turn is
`f"<image>\\n{question}"`):

    <s>{system} USER: <image>\\n{question} ASSISTANT: {answer}</s>

with the tokenizer's BOS first (`tokenizer_image_token`, `llava/mm_utils.py` lines 193-195, keeps it) and `</s>`
inside the labels (`preprocess_v1`, `train_dpo.py` lines 509-539, masks only the tokens up to `ASSISTANT:`), so the
summed log-prob of Eq. 2 includes the end of sequence. The llava-hf chat template renders no system sentence and no
BOS, and TRL adds no EOS to conversational data; this module closes both gaps.

TRL tokenizes prompt and completion separately (`add_special_tokens=False`) and concatenates the ids. The rendered
pair is therefore checked row by row: the concatenation must give exactly the ids of the whole string; for
SentencePiece tokenizers, which prepend a space to each piece, the completion drops its leading space so that it does.
A tokenizer for which neither split reproduces the whole string is refused rather than trained on different ids.
"""

from __future__ import annotations

from typing import Any

from datasets import Dataset

from dama.errors import DamaError
from dama.rows import strip_placeholders, text_of

TRAINING_TEXTS = ("chat_template", "vicuna_v1")
VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


class TrainingTextError(DamaError, ValueError):
    """A pair cannot be rendered in the requested training text; names the row and what to do."""


def vicuna_v1_pair(question: str, answer: str, bos: str, eos: str, image_token: str = "<image>") -> tuple[str, str]:
    """(prompt, completion) whose concatenation is `bos + "{system} USER: <image>\\n{question} ASSISTANT: {answer}" + eos`."""
    return f"{bos}{VICUNA_V1_SYSTEM} USER: {image_token}\n{question} ASSISTANT:", f" {answer}{eos}"


def _question(prompt: Any, image_token: str) -> str:
    """The user's text with any image placeholder removed (the template puts `<image>\\n` first); otherwise verbatim,
    as the official loader uses `sample['question']` unchanged."""
    return strip_placeholders(text_of(prompt, role="user"), image_token)


def render_training_text(
    dataset: Dataset, tokenizer: Any, training_text: str, source: str = "data", image_token: str = "<image>"
) -> Dataset:
    """Rewrite `prompt`/`chosen`/`rejected` as the `training_text` strings; `chat_template` returns `dataset` as is.

    Rows already rendered (a `dama precompute-ref` output of a `vicuna_v1` run) are left unchanged.
    """
    if training_text not in TRAINING_TEXTS:
        raise TrainingTextError(f"training_text must be one of {TRAINING_TEXTS}, got {training_text!r}")
    if training_text == "chat_template":
        return dataset
    bos, eos = tokenizer.bos_token, tokenizer.eos_token
    if not bos or not eos:
        raise TrainingTextError(
            f"training_text=vicuna_v1 needs a tokenizer with BOS and EOS tokens (LLaVA-1.5: <s>, </s>); this one has "
            f"bos={bos!r}, eos={eos!r}. Use training_text: chat_template."
        )
    header = f"{bos}{VICUNA_V1_SYSTEM} USER: "

    def ids(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, add_special_tokens=False)["input_ids"]

    def render(prompts: list, chosens: list, rejecteds: list, indices: list[int]) -> dict[str, list]:
        batch = {"prompt": prompts, "chosen": chosens, "rejected": rejecteds}
        out: dict[str, list] = {key: list(values) for key, values in batch.items()}
        todo = [i for i, p in enumerate(prompts) if not (isinstance(p, str) and p.startswith(header))]
        if not todo:
            return out
        for i in todo:
            question = _question(batch["prompt"][i], image_token)
            for key in ("chosen", "rejected"):
                out["prompt"][i], out[key][i] = vicuna_v1_pair(question, text_of(batch[key][i]), bos, eos, image_token)
        # TRL concatenates separately tokenized prompt and completion: check that gives the whole string's ids
        heads = dict(zip(todo, ids([out["prompt"][i] for i in todo])))
        for key in ("chosen", "rejected"):
            wholes = ids([out["prompt"][i] + out[key][i] for i in todo])
            tails = ids([out[key][i] for i in todo])
            for i, whole, tail in zip(todo, wholes, tails):
                if heads[i] + tail == whole:
                    continue
                # SentencePiece prepends a space to a separately tokenized piece: drop the one written
                if out[key][i].startswith(" ") and heads[i] + ids([out[key][i][1:]])[0] == whole:
                    out[key][i] = out[key][i][1:]
                    continue
                raise TrainingTextError(
                    f"{source} row {indices[i]}: field {key!r}: the tokenizer does not reproduce the LLaVA-1.5 string "
                    "when prompt and response are tokenized separately (as TRL does), so training would not see the "
                    "official token ids. Use training_text: chat_template with this tokenizer."
                )
        return out

    # only the three text columns are read: no image is decoded
    return dataset.map(
        render,
        batched=True,
        with_indices=True,
        input_columns=["prompt", "chosen", "rejected"],
        desc=f"Rendering {source} as LLaVA-1.5 (vicuna_v1)",
    )
