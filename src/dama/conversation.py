"""The text a pair is trained on: the model's chat template (default) or LLaVA-1.5's own Vicuna-v1 conversation.

`training_text: vicuna_v1` renders every pair as the official DAMA run does:

    <s>{system} USER: <image>\n{question} ASSISTANT: {answer}</s>

with `</s>` inside the labels, so the summed log-prob of Eq. 2 includes the end of sequence. The target is the
official run's token ids, not only its string: each row is rendered with the spacing (after `<s>`, after `<image>`,
before the answer) whose TRL tokenization equals the official ids computed with the same tokenizer
(`official_ids`), the official string first; a row no spacing reproduces is refused. The official code's lines and
the tokenizer behaviour behind this rule: docs/training-text.md.
"""

from __future__ import annotations

from typing import Any

from datasets import Dataset

from dama.errors import DamaError
from dama.row_fields import strip_placeholders, text_of

TRAINING_TEXTS = ("chat_template", "vicuna_v1")
VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


class TrainingTextError(DamaError, ValueError):
    """A pair cannot be rendered in the requested training text; names the row and what to do."""


def _prompt_frame(bos: str, image_token: str, spacing: tuple[str, str]) -> tuple[str, str]:
    """The text before and after the question in a rendered prompt, with `spacing` = (text after BOS, text after the
    image token)."""
    lead, gap = spacing
    return f"{bos}{lead}{VICUNA_V1_SYSTEM} USER: {image_token}{gap}\n", " ASSISTANT:"


def vicuna_v1_pair(
    question: str, answer: str, bos: str, eos: str, image_token: str = "<image>", spacing: tuple[str, str] = ("", "")
) -> tuple[str, str]:
    """(prompt, completion) whose concatenation is
    `bos + "{system} USER: <image>\\n{question} ASSISTANT: {answer}" + eos`, with `spacing` = (text after BOS, text
    after the image token) inserted for tokenizers that need it."""
    head, tail = _prompt_frame(bos, image_token, spacing)
    return f"{head}{question}{tail}", f" {answer}{eos}"


# Tried in this order; the first is the official string (see the module docstring).
SPACINGS: tuple[tuple[str, str], ...] = (("", ""), (" ", " "), (" ", ""), ("", " "))


def official_ids(tokenizer: Any, question: str, answer: str, image_token: str = "<image>") -> list[int]:
    """The ids the official loader trains on for one answer, computed with `tokenizer`: `tokenizer_image_token`
    (`llava/mm_utils.py` lines 185-204) on `conv_vicuna_v1.get_prompt()`: BOS, then each piece between image
    placeholders tokenized on its own, the image token's id between pieces (the official code puts its index -200
    there; the processor expands it into the image's tokens). The official `tokenizer(chunk)` adds BOS to every piece
    and keeps only the first; with LLaVA-1.5's tokenizer (BOS its only added token) that is BOS followed by each
    piece tokenized without special tokens, which is what is computed here."""
    return _official_ids(tokenizer, [(question, answer)], image_token)[0]


def _official_ids(tokenizer: Any, pairs: list[tuple[str, str]], image_token: str) -> list[list[int]]:
    """`official_ids` of many (question, answer) pairs, with one tokenizer call."""
    if not pairs:
        return []
    texts = [f"{VICUNA_V1_SYSTEM} USER: {image_token}\n{q} ASSISTANT: {a}{tokenizer.eos_token}" for q, a in pairs]
    split = [text.split(image_token) for text in texts]
    flat = tokenizer([piece for pieces in split for piece in pieces], add_special_tokens=False)["input_ids"]
    image_id = tokenizer.convert_tokens_to_ids(image_token)
    out, k = [], 0
    for pieces in split:
        ids = [tokenizer.bos_token_id, *flat[k]]
        for piece in flat[k + 1 : k + len(pieces)]:
            ids += [image_id, *piece]
        out.append(ids)
        k += len(pieces)
    return out


def _rendered_parts(
    prompt: str, completion: str, bos: str, eos: str, image_token: str
) -> tuple[str, list[str]] | None:
    """The question and the possible answers of a row rendered by `vicuna_v1_pair` with any of `SPACINGS` (the
    completion may have lost its leading space, so an answer that begins with a space reads two ways), or None."""
    if not completion.endswith(eos):
        return None
    answer = completion[: len(completion) - len(eos)]
    answers = [answer[1:], answer] if answer.startswith(" ") else [answer]
    for spacing in SPACINGS:
        head, tail = _prompt_frame(bos, image_token, spacing)
        if prompt.startswith(head) and prompt.endswith(tail):
            return prompt[len(head) : len(prompt) - len(tail)], answers
    return None


def _question(prompt: Any, image_token: str) -> str:
    """The user's text with any image placeholder removed (the template puts `<image>\\n` first); otherwise verbatim,
    as the official loader uses `sample['question']` unchanged."""
    return strip_placeholders(text_of(prompt, role="user"), image_token)


def render_training_text(
    dataset: Dataset, tokenizer: Any, training_text: str, source: str = "data", image_token: str = "<image>"
) -> Dataset:
    """Rewrite `prompt`/`chosen`/`rejected` as the `training_text` strings; `chat_template` returns `dataset` as is.

    Rows already rendered (a `dama precompute-ref` output of a `vicuna_v1` run) are left unchanged after checking
    that they still give the official ids with this tokenizer (refused otherwise).
    """
    if training_text not in TRAINING_TEXTS:
        raise TrainingTextError(f"training_text must be one of {TRAINING_TEXTS}, got {training_text!r}")
    if training_text == "chat_template":
        return dataset
    renderer = _VicunaRenderer(tokenizer, source, image_token)
    # only the three text columns are read: no image is decoded
    return dataset.map(
        renderer.render,
        batched=True,
        with_indices=True,
        input_columns=["prompt", "chosen", "rejected"],
        desc=f"Rendering {source} as LLaVA-1.5 (vicuna_v1)",
    )


class _VicunaRenderer:
    """Renders batches of rows as LLaVA-1.5 text, each row with the spacing that gives the official ids."""

    def __init__(self, tokenizer: Any, source: str, image_token: str) -> None:
        self.tokenizer, self.source, self.image_token = tokenizer, source, image_token
        self.bos, self.eos = tokenizer.bos_token, tokenizer.eos_token
        if not self.bos or not self.eos:
            raise TrainingTextError(
                f"training_text=vicuna_v1 needs a tokenizer with BOS and EOS tokens (LLaVA-1.5: <s>, </s>); this one "
                f"has bos={self.bos!r}, eos={self.eos!r}. Use training_text: chat_template."
            )
        image_id = tokenizer.convert_tokens_to_ids(image_token)
        as_text = tokenizer(image_token, add_special_tokens=False)["input_ids"]
        if as_text != [image_id] or image_id == tokenizer.unk_token_id:
            raise TrainingTextError(
                f"training_text=vicuna_v1 needs the image placeholder {image_token!r} as one token of the tokenizer "
                "(llava-hf/llava-1.5-7b-hf: id 32000); this tokenizer does not have it. Use the model's processor's "
                "tokenizer, or training_text: chat_template."
            )
        self.headers = tuple(_prompt_frame(self.bos, image_token, spacing)[0] for spacing in SPACINGS)
        self.order = list(SPACINGS)  # the spacing that worked last is tried first: it is a property of the tokenizer

    def ids(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []

    def check_rendered(self, batch: dict[str, list], rendered: list[int], indices: list[int]) -> None:
        """Rows rendered before (a `dama precompute-ref` output) must give the official ids too: an output of an
        older version, or of another tokenizer, would otherwise train on different ids with reference log-probs
        computed on them. Batched: one tokenizer call for the prompts, one for the completions, one for the
        official ids."""
        keys = [(i, key) for i in rendered for key in ("chosen", "rejected")]
        parts = {
            k: _rendered_parts(batch["prompt"][k[0]], batch[k[1]][k[0]], self.bos, self.eos, self.image_token)
            for k in keys
        }
        bad = next((k for k in keys if parts[k] is None), None)
        heads = dict(zip(rendered, self.ids([batch["prompt"][i] for i in rendered]), strict=True))
        tails = dict(zip(keys, self.ids([batch[key][i] for i, key in keys]), strict=True))
        candidates = [(k, (parts[k][0], a)) for k in keys if parts[k] is not None for a in parts[k][1]]
        official = _official_ids(self.tokenizer, [pair for _, pair in candidates], self.image_token)
        matched = {k for (k, _), target in zip(candidates, official, strict=True) if heads[k[0]] + tails[k] == target}
        bad = bad or next((k for k in keys if k not in matched), None)
        if bad is not None:
            raise TrainingTextError(
                f"{self.source} row {indices[bad[0]]}: field {bad[1]!r} is already rendered as LLaVA-1.5 text, but "
                "its prompt and response do not tokenize to the official LLaVA-1.5 ids with this tokenizer (an "
                "output of an older dama version or of another tokenizer?). Render it again from the "
                "original data (and recompute reference log-probs with dama precompute-ref)."
            )

    def render(self, prompts: list, chosens: list, rejecteds: list, indices: list[int]) -> dict[str, list]:
        """One `datasets.map` batch: the rendered `prompt`/`chosen`/`rejected` columns."""
        batch = {"prompt": prompts, "chosen": chosens, "rejected": rejecteds}
        out: dict[str, list] = {key: list(values) for key, values in batch.items()}
        done_before = [i for i, p in enumerate(prompts) if isinstance(p, str) and p.startswith(self.headers)]
        self.check_rendered(batch, done_before, indices)
        todo = sorted(set(range(len(prompts))) - set(done_before))
        questions = {i: _question(prompts[i], self.image_token) for i in todo}
        answers = {(i, key): text_of(batch[key][i]) for i in todo for key in ("chosen", "rejected")}
        official = _official_ids(
            self.tokenizer, [(questions[i], a) for (i, _), a in answers.items()], self.image_token
        )
        targets = dict(zip(answers, official))
        for spacing in list(self.order):  # TRL concatenates separately tokenized prompt and completion
            if not todo:
                break
            done = self._render_with(spacing, todo, questions, answers, targets, out)
            if done:
                self.order.remove(spacing)
                self.order.insert(0, spacing)
            todo = [i for i in todo if i not in done]
        if todo:
            raise TrainingTextError(
                f"{self.source} row {indices[todo[0]]}: the tokenizer does not reproduce the official LLaVA-1.5 token "
                "ids when prompt and response are tokenized separately (as TRL does), with any spacing around <s> "
                "and <image>, so training would not see the official ids. Use training_text: chat_template with "
                "this tokenizer."
            )
        return out

    def _render_with(
        self, spacing: Any, todo: list[int], questions: dict, answers: dict, targets: dict, out: dict[str, list]
    ) -> set[int]:
        """Write into `out` the rows of `todo` whose official ids `spacing` reproduces; returns those rows."""
        pairs = {
            (i, key): vicuna_v1_pair(questions[i], answers[i, key], self.bos, self.eos, self.image_token, spacing)
            for i in todo
            for key in ("chosen", "rejected")
        }
        heads = dict(zip(todo, self.ids([pairs[i, "chosen"][0] for i in todo]), strict=True))
        keys = list(pairs)
        completions = {
            k: pairs[k][1]
            for k, tail in zip(keys, self.ids([pairs[k][1] for k in keys]), strict=True)
            if heads[k[0]] + tail == targets[k]
        }
        # SentencePiece prepends a space to a separately tokenized piece: then the written one is dropped (only the
        # completions that missed are tokenized again)
        retry = [k for k in keys if k not in completions]
        completions.update(
            (k, pairs[k][1][1:])
            for k, tail in zip(retry, self.ids([pairs[k][1][1:] for k in retry]), strict=True)
            if heads[k[0]] + tail == targets[k]
        )
        done = set()
        for i in todo:
            if (i, "chosen") in completions and (i, "rejected") in completions:
                out["prompt"][i] = pairs[i, "chosen"][0]
                out["chosen"][i], out["rejected"][i] = completions[i, "chosen"], completions[i, "rejected"]
                done.add(i)
        return done
