"""The one JSONL reader of the package: streamed, blank lines skipped, errors that name the file and the line.

Training data (`dama.preference_data`), hardness input (`dama.hardness.reader`) and evaluation files (`dama.eval.records`) all
read JSONL through `iter_jsonl`; each passes its own error class so its callers catch what they already catch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path


def iter_jsonl(path: str | Path, error: type[Exception] = ValueError) -> Iterator[tuple[int, dict]]:
    """`(line number, object)` for each non-blank line of `path`, read one line at a time.

    A byte-order mark is tolerated. A line that is not UTF-8, not valid JSON, or not a JSON object raises `error`
    with the message `"{path}:{line}: ..."`.
    """
    path = Path(path)
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise error(f"{path}:{number}: not UTF-8 text (byte {err.start} of the line: {err.reason})") from err
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise error(f"{path}:{number}: not valid JSON ({err.msg} at column {err.colno})") from err
            if not isinstance(row, dict):
                raise error(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            yield number, row


def _kind(value: object) -> str:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return "number" if number else type(value).__name__


def _shown(value: object) -> str:
    return repr(value) if len(repr(value)) < 60 else repr(value)[:57] + "..."


def _leaves(value: object, path: tuple = (), where: str = "") -> Iterator[tuple[tuple, str, object]]:
    """(path, position, value) of `value` and of everything inside it: list items share the path `[]` (a table
    column holds one type per depth), dict values the path of their key; `position` names the place in words."""
    yield path, where, value
    if isinstance(value, list):
        for position, item in enumerate(value):
            if item is not None:
                yield from _leaves(item, (*path, "[]"), f"{where} item {position}".strip())
    elif isinstance(value, dict):
        for key, item in value.items():
            if item is not None:
                yield from _leaves(item, (*path, str(key)), f"{where} key {key!r}".strip())


def first_type_change(records: list[dict], first_row: int = 0, lines: list[int] | None = None) -> str | None:
    """Where a field first changes JSON type between records (a number where text is expected, say), or None.

    Returns e.g. `"line 4 (row 3): field 'chosen' is number 5, but str in row 0"`; `lines` gives each record's line.
    Types are compared inside lists and objects too, since a table column holds one type at every depth: a text
    item among numbers gives `"row 2: field 'chosen_logits' item 1 is str 'abc', but number in item 0"`.
    """
    first: dict[tuple, tuple[str, int, str]] = {}
    for i, row in enumerate(records):
        for key, value in row.items():
            if value is None:
                continue
            for path, position, leaf in _leaves(value, (key,)):
                kind = _kind(leaf)
                seen = first.setdefault(path, (kind, first_row + i, position))
                if seen[0] == kind:
                    continue
                where = f"line {lines[i]} (row {first_row + i})" if lines else f"row {first_row + i}"
                inside = f" {position}" if position else ""
                if seen[1] == first_row + i:  # an earlier part of the same value
                    before = f"in {seen[2]}" if seen[2] else "before"
                else:
                    before = f"in row {seen[1]}" + (f" ({seen[2]})" if seen[2] else "")
                return f"{where}: field {key!r}{inside} is {kind} {_shown(leaf)}, but {seen[0]} {before}"
    return None
