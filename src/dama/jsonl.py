"""The one JSONL reader of the package: streamed, blank lines skipped, errors that name the file and the line.

Training data (`dama.data`), hardness input (`dama.hardness.reader`) and evaluation files (`dama.eval.records`) all
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


def first_type_change(records: list[dict], first_row: int = 0, lines: list[int] | None = None) -> str | None:
    """Where a field first changes JSON type between records (a number where text is expected, say), or None.

    Returns e.g. `"line 4 (row 3): field 'chosen' is int 5, but str in row 0"`; `lines` gives each record's line.
    """
    first: dict[str, tuple[str, int]] = {}
    for i, row in enumerate(records):
        for key, value in row.items():
            if value is None:
                continue
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            kind = "number" if number else type(value).__name__
            seen = first.setdefault(key, (kind, first_row + i))
            if seen[0] != kind:
                where = f"line {lines[i]} (row {first_row + i})" if lines else f"row {first_row + i}"
                shown = repr(value) if len(repr(value)) < 60 else repr(value)[:57] + "..."
                return f"{where}: field {key!r} is {kind} {shown}, but {seen[0]} in row {seen[1]}"
    return None
