"""Reading and writing evaluation files: JSONL with file-and-line errors, atomic writes (`dama.io`).

Response files (written by `dama eval generate`, read by `dama eval score`) are JSONL, one object a line:
`{"id": str, "question": str, "response": str, "image_id": ... (optional), "bench": str, "model": str,
"decoding": {...}}`. A malformed line is an error that names the file and the line; nothing is skipped silently.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dama.errors import DamaError
from dama.io import atomic_write_text, json_text
from dama.jsonl import iter_jsonl


class RecordError(DamaError, ValueError):
    """A file `dama eval` cannot use as it is — a question, response, annotation, ground-truth or results file, an
    image it names, an output folder, or options that do not fit it; the message names the file, the line and the
    field. The one error class of bad evaluation input (`dama eval` exits with 2); a judge or endpoint that cannot
    answer is `dama.llm.LLMError` instead."""


def read_jsonl_lines(path: str | Path) -> list[tuple[int, dict]]:
    """The objects of a JSONL file with their 1-based line numbers (for error messages downstream).

    Blank lines are skipped; a missing file or any other bad line raises `RecordError` naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{path}: file not found")
    return list(iter_jsonl(path, RecordError))


def require_field(row: Any, key: str, where: str, allow_empty: bool = False) -> Any:
    """`row[key]`, or `RecordError` naming `where` when the row is not an object or the field is missing (or, unless
    `allow_empty`, null or "")."""
    if not isinstance(row, dict):
        raise RecordError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if (key not in row) if allow_empty else (row.get(key) in (None, "")):
        raise RecordError(f"{where}: missing field {key!r}")
    return row[key]


def question_items(path: str | Path, id_keys: tuple[str, ...], question_key: str, image_key: str) -> list[dict]:
    """A JSONL question file as generation items `{"id", "question", "image", "image_id"?, "where"}`, in file order.

    The id is the first of `id_keys` the row has; `image_id` is carried when the row has one.
    """
    items = []
    for line, row in read_jsonl_lines(path):
        where = f"{path}:{line}"
        qid = next((row[k] for k in id_keys if row.get(k) not in (None, "")), None)
        if qid is None:
            raise RecordError(f"{where}: no id field (looked for {', '.join(id_keys)})")
        item = {
            "id": str(qid),
            "question": require_field(row, question_key, where),
            "image": require_field(row, image_key, where),
        }
        if "image_id" in row:
            item["image_id"] = row["image_id"]
        items.append({**item, "where": where})
    return items


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """Write `rows` as JSONL atomically (temporary file in the same folder, then rename)."""
    atomic_write_text(path, _jsonl_text(rows))


def _jsonl_text(rows: Iterable[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n" for row in rows)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented JSON atomically, so a crash never leaves a half-written results or cache file."""
    atomic_write_text(path, json_text(obj))


def read_json(path: str | Path) -> Any:
    """Read one JSON document; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{path}: file not found")
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise RecordError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from err


def read_text(path: str | Path) -> str:
    """A user's text file as UTF-8; a byte that is not UTF-8 is a `RecordError` naming the file and the line (a
    `UnicodeDecodeError` would otherwise be a `ValueError`, which the error contract treats as a bug)."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise RecordError(f"{path}:{line}: not UTF-8 text ({err.reason})") from err


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
    if not rows:
        raise RecordError(
            f"{path}: no responses (the file is empty); a result scored on nothing would look complete. Run "
            "`dama eval generate` again or point --responses at the right file"
        )
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
    path = out_dir / f"{stem}.metrics.json"
    details_path = out_dir / f"{stem}.details.jsonl"
    if details is not None:
        result = {**result, "details_file": details_path.name}
    # both texts first (a value JSON cannot hold fails here, before any file exists), then details, metrics last:
    # a failure in between removes the new details file, so no result file is ever left without its metrics
    metrics_text = json_text(result)
    details_text = _jsonl_text(details) if details is not None else None
    if details_text is not None:
        atomic_write_text(details_path, details_text)
    try:
        atomic_write_text(path, metrics_text)
    except BaseException:
        if details_text is not None:
            details_path.unlink(missing_ok=True)
        raise
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
