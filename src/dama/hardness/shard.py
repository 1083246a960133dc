"""Computing the hardness columns of one shard: split → decode images → encode → score (docs/paper_mapping.md §2, Eq. 3–5).

`ClipShardProcessor.process(table, first_row)` takes a shard of input rows and returns which rows are kept, the five
new columns for them, the rows left out with reasons, and truncation counts. Within a shard every distinct image is
decoded (in worker processes) and encoded once, every distinct sub-sentence is tokenized and encoded once, texts in
batches sorted by token count (little padding); image batches are encoded as soon as the workers have a batch ready,
text batches while they work. Batch composition depends only on the shard's content, so a shard recomputed after a
resume gives the same bytes.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import torch

from dama.delta import HARDNESS_COLUMN
from dama.errors import DamaError
from dama.hardness.decode import ImageDecoder
from dama.hardness.output import NEW_COLUMNS
from dama.hardness.reader import InputError
from dama.hardness.scorers import DualEncoderScorer, get_scoring_function
from dama.hardness.splitters import SplitRequest, Splitter
from dama.images import is_base64_image
from dama.row_fields import ID_FIELDS, IMAGE_PATH_FIELD, RESPONSE_FIELDS, prompt_field, prompt_text, response_text


class HardnessDataError(DamaError, ValueError):
    """A bad input row under `--on-error fail`; the message names the row id, the field and the path."""


@dataclass
class RowProblem:
    index: int  # position in the shard
    row_id: Any
    field: str
    reason: str

    def record(self) -> dict[str, Any]:
        return {"row_id": self.row_id, "field": self.field, "reason": self.reason}


@dataclass
class ShardResult:
    kept: list[int]  # positions in the shard, ascending
    columns: dict[str, list]  # the five hardness columns, one entry per kept row
    skipped: list[dict[str, Any]]
    stats: dict[str, Any] = field(default_factory=dict)


def row_ids(table: pa.Table, first_row: int) -> list[Any]:
    """The id column (`dama.row_fields.ID_FIELDS`) when present, else the row number in the input."""
    for name in ID_FIELDS:
        if name in table.column_names:
            values = table.column(name).to_pylist()
            return [v if v is not None else first_row + i for i, v in enumerate(values)]
    return list(range(first_row, first_row + table.num_rows))


def image_column(table: pa.Table, where: str) -> tuple[list, list[str]]:
    """Per row: the image value and the field it came from (`image`, else `image_path`)."""
    names = table.column_names
    if "image" not in names and IMAGE_PATH_FIELD not in names:
        raise InputError(f"{where}: the data has neither an 'image' nor an '{IMAGE_PATH_FIELD}' column")
    images = table.column("image").to_pylist() if "image" in names else [None] * table.num_rows
    paths = table.column(IMAGE_PATH_FIELD).to_pylist() if IMAGE_PATH_FIELD in names else [None] * table.num_rows
    values, fields = [], []
    for img, path in zip(images, paths):
        if img is not None or path is None:
            values.append(img)
            fields.append("image" if "image" in names else IMAGE_PATH_FIELD)
        else:
            values.append(path)
            fields.append(IMAGE_PATH_FIELD)
    return values, fields


def image_key(value: Any) -> str | None:
    """Identity of an image within a shard (same bytes or same path → encoded once); None when it has none."""
    if isinstance(value, dict):
        if value.get("bytes"):
            value = value["bytes"]
        elif value.get("path"):
            value = value["path"]
    if isinstance(value, (bytes, bytearray)):
        return "bytes:" + hashlib.blake2b(bytes(value), digest_size=16).hexdigest()
    if isinstance(value, str) and value:
        return "str:" + (value if len(value) < 512 else hashlib.blake2b(value.encode(), digest_size=16).hexdigest())
    return None


def describe_image(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("path") or "<embedded bytes>")
    if isinstance(value, str):
        return "<embedded base64>" if is_base64_image(value) else value
    return "<embedded bytes>" if value is not None else "<none>"


class ClipShardProcessor:
    """Split, decode, encode and score one shard at a time with a dual encoder."""

    def __init__(
        self,
        scorer: DualEncoderScorer,
        splitter: Splitter,
        decoder: ImageDecoder,
        scoring: str = "union_softmax",
        on_error: str = "fail",
        text_batch_size: int = 256,
        image_batch_size: int = 32,
        source_name: str = "input",
    ) -> None:
        self.scorer = scorer
        self.splitter = splitter
        self.decoder = decoder
        self.scoring = scoring
        self.score_pair = get_scoring_function(scoring)
        self.on_error = on_error
        self.text_batch_size = text_batch_size
        self.image_batch_size = image_batch_size
        self.source_name = source_name

    def describe(self) -> dict[str, Any]:
        return {
            "clip_model": self.scorer.name,
            "scorer": self.scoring,
            "splitter": self.splitter.describe(),
            "logit_scale": self.scorer.logit_scale,
            "device": str(self.scorer.device),
            "dtype": str(self.scorer.dtype).replace("torch.", ""),
            "text_batch_size": self.text_batch_size,
            "image_batch_size": self.image_batch_size,
        }

    def _problem(self, problems: dict[int, RowProblem], problem: RowProblem) -> None:
        if self.on_error == "fail":
            raise HardnessDataError(
                f"{self.source_name} row {problem.row_id} field {problem.field!r}: {problem.reason} "
                "(fix the data, or pass --on-error skip to leave such rows out)"
            )
        problems.setdefault(problem.index, problem)

    def process(self, table: pa.Table, first_row: int) -> ShardResult:
        """Hardness columns for the rows of `table` (input rows first_row, first_row + 1, ...)."""
        names = table.column_names
        for column in (*RESPONSE_FIELDS, *self.splitter.columns):
            if column not in names:
                raise InputError(f"{self.source_name}: the data has no {column!r} column (columns: {names})")
        ids = row_ids(table, first_row)
        images, image_fields = image_column(table, self.source_name)
        problems: dict[int, RowProblem] = {}
        sentences = self._split(table, ids, problems)
        row_key = self._image_keys(ids, images, image_fields, problems)
        alive = sorted(set(row_key) - set(problems))
        distinct = list({s for i in alive for f in RESPONSE_FIELDS for s in sentences[(i, f)]})
        tokens = dict(zip(distinct, self.scorer.tokenize(distinct))) if distinct else {}
        texts = sorted(distinct, key=lambda t: (len(tokens[t]), t))  # batches of near-equal length: little padding
        image_emb, text_emb, truncated = self._encode(row_key, texts, tokens, ids, images, image_fields, problems)
        return self._score(ids, row_key, sentences, image_emb, text_emb, truncated, tokens, problems)

    def _split(self, table: pa.Table, ids: list, problems: dict[int, RowProblem]) -> dict[tuple[int, str], list[str]]:
        """Sub-sentences per (row, field): one splitter call for the shard, so an LLM backend batches across rows."""
        names, n = table.column_names, table.num_rows
        question_col = prompt_field(names)
        questions = [prompt_text(q) for q in table.column(question_col).to_pylist()] if question_col else [""] * n
        raw = {f: table.column(f).to_pylist() for f in RESPONSE_FIELDS}
        responses = {f: [response_text(v) for v in raw[f]] for f in RESPONSE_FIELDS}
        extra = {c: table.column(c).to_pylist() for c in self.splitter.columns}
        requests, owners = [], []
        for i in range(n):
            for f in RESPONSE_FIELDS:
                value = raw[f][i]
                if value is not None and not isinstance(value, (str, list, dict)):
                    reason = f"expected text or a message list, got {type(value).__name__} {value!r}"
                    self._problem(problems, RowProblem(i, ids[i], f, reason))
                elif not responses[f][i]:
                    self._problem(problems, RowProblem(i, ids[i], f, "empty response"))
            if i in problems:
                continue
            row = {c: extra[c][i] for c in extra}
            for f in RESPONSE_FIELDS:
                requests.append(SplitRequest(questions[i], responses[f][i], f, row))
                owners.append((i, f))
        sentences: dict[tuple[int, str], list[str]] = {}
        for (i, f), subs in zip(owners, self.splitter.split(requests)):
            if not subs:
                self._problem(problems, RowProblem(i, ids[i], f, "no sentence in the response after splitting"))
            sentences[(i, f)] = subs
        return sentences

    def _image_keys(self, ids, images, image_fields, problems) -> dict[int, str]:
        """Row → image identity, for rows still alive; rows without an image value become problems."""
        row_key = {}
        for i, value in enumerate(images):
            if i in problems:
                continue
            key = image_key(value)
            if key is None:
                empty = value is None or value == "" or (isinstance(value, dict) and not any(value.values()))
                reason = (
                    "missing image"
                    if empty
                    else (
                        f"expected an image (a path, bytes or {{bytes, path}}), got {type(value).__name__} {value!r:.60}"
                    )
                )
                self._problem(problems, RowProblem(i, ids[i], image_fields[i], reason))
            else:
                row_key[i] = key
        return row_key

    def _encode(self, row_key, texts, tokens, ids, images, image_fields, problems):
        """Embeddings of every distinct image (decoded by the workers) and text, interleaved so neither side idles.

        Returns `(image_emb, text_emb, truncated)`: key → `(D,)`, text → `(D,)`, the set of truncated texts.
        Image batches are cut in key order and text batches in sorted order, so they do not depend on timing.
        """
        first_row: dict[str, int] = {}
        for i, key in row_key.items():
            first_row.setdefault(key, i)
        keys = list(first_row)
        where = {k: f"{self.source_name} row {ids[first_row[k]]} field {image_fields[first_row[k]]!r}" for k in keys}
        jobs = ((images[first_row[k]], where[k]) for k in keys)
        text_batches = deque(texts[k : k + self.text_batch_size] for k in range(0, len(texts), self.text_batch_size))
        image_emb: dict[str, torch.Tensor] = {}
        text_emb: dict[str, torch.Tensor] = {}
        truncated: set[str] = set()
        ready: list[tuple[str, Any]] = []  # (key, (C, H, W) pixels) decoded, waiting for a full batch
        queue = self.decoder.queue(jobs)
        key_iter = iter(keys)

        def encode_images(final: bool) -> None:
            while len(ready) >= self.image_batch_size or (final and ready):
                batch, ready[:] = ready[: self.image_batch_size], ready[self.image_batch_size :]
                emb = self.scorer.encode_images(torch.from_numpy(_stack([p for _, p in batch])))  # (B, D)
                image_emb.update((key, e) for (key, _), e in zip(batch, emb))

        def take_result() -> None:
            key = next(key_iter)
            pixels, error = queue.next()
            if error is None:
                ready.append((key, pixels))
                return
            if error.startswith(where[key]):  # the row problem names file, row and field itself: say it once
                error = error[len(where[key]) :].lstrip(": ")
            for i in (i for i, k in row_key.items() if k == key):
                reason = f"{error} [{describe_image(images[i])}]"
                self._problem(problems, RowProblem(i, ids[i], image_fields[i], reason))

        while True:
            while queue.ready():
                take_result()
            if len(ready) >= self.image_batch_size:
                encode_images(final=False)
            elif text_batches:  # the workers decode meanwhile
                batch = text_batches.popleft()
                emb, cut = self.scorer.encode_token_ids(batch, [tokens[t] for t in batch])  # (T, D)
                text_emb.update(zip(batch, emb))
                truncated.update(t for t, c in zip(batch, cut) if c)
            elif not queue.done():
                take_result()
            else:
                encode_images(final=True)
                return image_emb, text_emb, truncated

    def _score(self, ids, row_key, sentences, image_emb, text_emb, truncated, tokens, problems) -> ShardResult:
        """Eq. 3–5 per surviving row, in input order; truncation counted per field."""
        columns: dict[str, list] = {c: [] for c in NEW_COLUMNS}
        stats: dict[str, Any] = {
            "n_texts": 0,
            "truncated_chosen": 0,
            "truncated_rejected": 0,
            "truncated_rows": 0,
            "examples": [],
            "max_tokens": self.scorer.max_text_tokens,
        }
        kept = [i for i in sorted(row_key) if i not in problems]
        for i in kept:
            subs = {f: sentences[(i, f)] for f in RESPONSE_FIELDS}
            score = self.score_pair(
                image_emb[row_key[i]],
                torch.stack([text_emb[s] for s in subs["chosen"]]),  # (n_w, D)
                torch.stack([text_emb[s] for s in subs["rejected"]]),  # (n_l, D)
                self.scorer.logit_scale,
            )
            columns["chosen_subsentences"].append(subs["chosen"])
            columns["rejected_subsentences"].append(subs["rejected"])
            columns["chosen_clip_probs"].append(score.chosen)
            columns["rejected_clip_probs"].append(score.rejected)
            columns[HARDNESS_COLUMN].append(score.delta)
            stats["n_texts"] += len(subs["chosen"]) + len(subs["rejected"])
            row_truncated = False
            for f in RESPONSE_FIELDS:
                for s in (s for s in subs[f] if s in truncated):
                    row_truncated = True
                    stats[f"truncated_{f}"] += 1
                    if len(stats["examples"]) < 5:
                        stats["examples"].append({"row_id": ids[i], "field": f, "tokens": len(tokens[s]), "text": s})
            stats["truncated_rows"] += row_truncated
        skipped = [problems[i].record() for i in sorted(problems)]
        return ShardResult(kept, columns, skipped, stats)


def _stack(arrays: list) -> Any:
    import numpy as np

    return np.stack(arrays)  # (B, C, H, W)
