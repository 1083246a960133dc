"""Reading and writing evaluation files: JSONL with file-and-line errors, atomic JSON writes.

Response files (written by `dama eval generate`, read by `dama eval score`) are JSONL, one object a line:
`{"id": str, "question": str, "response": str, "image_id": ... (optional), "bench": str, "model": str,
"decoding": {...}}`. A malformed line is an error that names the file and the line; nothing is skipped silently.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any


class RecordError(ValueError):
    """A record file that cannot be used as it is; the message names the file, the line and the field."""


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a JSONL file into a list of objects. Blank lines are skipped; any other bad line raises `RecordError`."""
    return [row for _, row in read_jsonl_lines(path)]


def read_jsonl_lines(path: str | Path) -> list[tuple[int, dict]]:
    """Like `read_jsonl`, but each object comes with its 1-based line number, for error messages downstream."""
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{path}: file not found")
    rows: list[tuple[int, dict]] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise RecordError(f"{path}:{number}: not valid JSON ({err.msg} at column {err.colno})") from err
            if not isinstance(row, dict):
                raise RecordError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            rows.append((number, row))
    return rows


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """Write `rows` as JSONL atomically (temporary file in the same folder, then rename)."""
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    _write_text_atomic(Path(path), text)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented JSON atomically, so a crash never leaves a half-written results or cache file."""
    _write_text_atomic(Path(path), json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    """Read one JSON document; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RecordError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from err


def _write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
