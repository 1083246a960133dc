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

from dama.errors import DamaError
from dama.jsonl import iter_jsonl


class RecordError(DamaError, ValueError):
    """A record file that cannot be used as it is; the message names the file, the line and the field."""


def read_jsonl_lines(path: str | Path) -> list[tuple[int, dict]]:
    """The objects of a JSONL file with their 1-based line numbers (for error messages downstream).

    Blank lines are skipped; a missing file or any other bad line raises `RecordError` naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{path}: file not found")
    return list(iter_jsonl(path, RecordError))


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


def load_responses(path: str | Path) -> dict[str, dict]:
    """Read a response file into `{id: row}`, in file order, checking every row has an `id` and a string `response`.

    Duplicate ids are an error naming both lines (scoring one of them would be silently arbitrary). Each row gets a
    `_where` key ("file:line") for later messages.
    """
    rows: dict[str, dict] = {}
    for number, row in read_jsonl_lines(path):
        where = f"{path}:{number}"
        if row.get("id") in (None, ""):
            raise RecordError(f"{where}: response row has no 'id'")
        if not isinstance(row.get("response"), str):
            raise RecordError(f"{where}: field 'response' must be a string (got {type(row.get('response')).__name__})")
        key = str(row["id"])
        if key in rows:
            raise RecordError(f"{where}: duplicate id {key!r} (first at {rows[key]['_where']})")
        rows[key] = {**row, "_where": where}
    return rows


def run_metadata(rows: Iterable[dict], path: str | Path) -> dict:
    """The `model` and `decoding` shared by all response rows; mixed values are an error (one run per file)."""
    models = {json.dumps(row.get("model"), sort_keys=True) for row in rows}
    decodings = {json.dumps(row.get("decoding"), sort_keys=True) for row in rows}
    if len(models) > 1:
        raise RecordError(
            f"{path}: responses from several models ({', '.join(sorted(models))}); score one run at a time"
        )
    if len(decodings) > 1:
        raise RecordError(f"{path}: responses with different decoding settings; score one run at a time")
    return {
        "model": json.loads(models.pop()) if models else None,
        "decoding": json.loads(decodings.pop()) if decodings else None,
    }


def write_results(out_dir: str | Path, stem: str, result: dict, details: list[dict] | None = None) -> Path:
    """Write `<out_dir>/<stem>.metrics.json` (and `<stem>.details.jsonl` when `details` is given); return the path.

    `dama eval compare` reads every `*.metrics.json` of a run folder.
    """
    out_dir = Path(out_dir)
    if details is not None:
        details_path = out_dir / f"{stem}.details.jsonl"
        write_jsonl(details_path, details)
        result = {**result, "details_file": details_path.name}
    path = out_dir / f"{stem}.metrics.json"
    write_json_atomic(path, result)
    return path


def match_ids(expected: list[str], responses: dict[str, dict], responses_path: str | Path, source: str) -> list[str]:
    """The expected ids that have a response, in `expected` order; a response id not in `expected` is an error.

    Missing responses are not an error: callers record them as `"partial": true` with `n_missing` and `missing_ids`.
    """
    known = set(expected)
    unknown = [key for key in responses if key not in known]
    if unknown:
        first = responses[unknown[0]]["_where"]
        raise RecordError(
            f"{responses_path}: {len(unknown)} response id(s) not in {source} (first: {unknown[0]!r} at {first}); "
            "are the responses from another benchmark or question file?"
        )
    return [key for key in expected if key in responses]


def completeness(expected: list[str], present: list[str]) -> dict:
    """The partial-result fields every results file carries."""
    have = set(present)
    missing = [key for key in expected if key not in have]
    return {
        "n_items": len(present),
        "n_expected": len(expected),
        "partial": bool(missing),
        "n_missing": len(missing),
        "missing_ids": missing[:50],
    }
