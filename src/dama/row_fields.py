"""Reading a preference row: its id, prompt, chosen and rejected responses and image field.

One set of accessors for every reader of preference data (`dama hardness`, `dama train`'s data code, `dama demo`).
A row is a dict (or an Arrow table's columns) in one of the formats of `dama.preference_data`: text fields are plain strings or
conversational message lists (`[{"role": ..., "content": str | [{"type": "text", "text": ...}, ...]}]`). Whether a
string image value is inline base64 or a path is decided by `dama.images.is_base64_image`.

The hardness column and δ̄ have their own module, `dama.delta`. A leaf module (standard library and `dama.errors`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

ID_FIELDS = ("id", "idx")  # the row's name in messages: `id`, else `idx` (RLAIF-V, the official data)
PROMPT_FIELDS = ("question", "prompt")  # the question as written (RLAIF-V, official), else TRL's prompt
RESPONSE_FIELDS = ("chosen", "rejected")
IMAGE_FIELDS = ("image", "images")  # what training reads (TRL: one image, or a list)
IMAGE_PATH_FIELD = "image_path"  # RLAIF-V / official: a path under the image folder
IMAGE_PLACEHOLDERS = ("<image>\n", "<image>")


def first_field(columns: Iterable[str], names: tuple[str, ...]) -> str | None:
    """The first of `names` among `columns`, or None."""
    present = set(columns)
    return next((name for name in names if name in present), None)


def id_field(columns: Iterable[str]) -> str | None:
    return first_field(columns, ID_FIELDS)


def prompt_field(columns: Iterable[str]) -> str | None:
    return first_field(columns, PROMPT_FIELDS)


def image_field(columns: Iterable[str]) -> str | None:
    return first_field(columns, IMAGE_FIELDS)


def row_where(source: str, index: int, row: Mapping[str, Any], id_key: str | None, label: str | None = None) -> str:
    """How a row is named in messages: `"<source> row <index> (<label> <id>)"`, the id part when there is one;
    `label` defaults to the id field's name."""
    return f"{source} row {index}" + (f" ({label or id_key} {row[id_key]})" if id_key else "")


def _parts_text(content: Any, sep: str) -> str:
    """A message's content as text: a string, or its text parts (`{"type": "text", "text": ...}`) joined by `sep`."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type", "text") == "text"]
        return sep.join(p for p in parts if p)
    return str(content)


def _messages(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def text_of(value: Any, role: str | None = None) -> str:
    """The text of a field verbatim: a string, or the concatenated text of its messages (only `role`'s when given).

    For rendering training text exactly (`dama.conversation`): nothing is stripped, parts and messages are joined
    without a separator.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    out = []
    for message in _messages(value):
        if isinstance(message, dict):
            if role is None or message.get("role") == role:
                out.append(_parts_text(message.get("content"), ""))
        elif role is None and isinstance(message, str):
            out.append(message)
    return "".join(out)


def response_text(value: Any) -> str:
    """A response as plain text: the string, or its assistant messages (all messages when none says so), parts
    joined by a space and messages by a line break, stripped."""
    if isinstance(value, list):
        messages = [m for m in value if isinstance(m, dict)]
        assistant = [m for m in messages if m.get("role") == "assistant"] or messages
        return "\n".join(_parts_text(m.get("content"), " ") for m in assistant).strip()
    if isinstance(value, dict):
        return _parts_text(value.get("content"), " ").strip()
    return _parts_text(value, " ").strip()


def prompt_text(value: Any) -> str:
    """A prompt as plain text: the string, or its user messages (a message without a role counts as the user's),
    parts joined by a space and messages by a line break; image placeholders removed, stripped."""
    if isinstance(value, list):
        messages = [m for m in value if isinstance(m, dict)]
        text = "\n".join(_parts_text(m.get("content"), " ") for m in messages if m.get("role", "user") == "user")
    else:
        text = _parts_text(value, " ")
    return strip_placeholders(text).strip()


def strip_placeholders(text: str, image_token: str | None = None) -> str:
    """`text` without image placeholders (`image_token` first, when given, then `<image>`)."""
    tokens = (f"{image_token}\n", image_token) if image_token else ()
    for token in (*tokens, *IMAGE_PLACEHOLDERS):
        text = text.replace(token, "")
    return text
