"""Image values as they appear in preference data, turned into RGB PIL images, with errors that say where.

Accepted values: a `PIL.Image`, raw bytes, a datasets-style `{"bytes": ..., "path": ...}` dict, a base64 string
(Object HalBench stores images so), or a path, resolved against an image folder when one is given. A relative path
that resolves outside that folder is refused: a dataset must not read arbitrary files.
"""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from dama.errors import DamaError


class ImageError(DamaError, ValueError):
    """An image that cannot be read; the message names where it came from."""


def is_base64_image(value: str) -> bool:
    """Whether a string image value is inline base64 rather than a path: long (> 256 characters) with no "/" in its
    first 64 (base64 of an image starts with its header's letters; a path that long has folders). Every reader of
    image values decides with this."""
    return len(value) > 256 and "/" not in value[:64]


def resolve_image_path(path: str | Path, image_root: str | Path | None) -> Path:
    """Resolve `path` under `image_root`, refusing one that escapes it (`../`, absolute paths elsewhere, symlinks)."""
    path = Path(path)
    if image_root is None:
        return path
    root = Path(image_root).resolve()
    full = (root / path).resolve()
    if full != root and root not in full.parents:
        raise ImageError(f"image path {str(path)!r} escapes the image folder {str(root)!r}; refusing to read it")
    return full


def _decode(data: bytes, where: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError) as err:
        raise ImageError(f"{where}: not a readable image ({err})") from err
    return image.convert("RGB")


def load_image(value: Any, image_root: str | Path | None = None, where: str = "image") -> Image.Image:
    """Return `value` as an RGB image. `where` prefixes error messages (e.g. "train.parquet row 12 field 'image'")."""
    if isinstance(value, Image.Image):
        return value.convert("RGB")
    if isinstance(value, (bytes, bytearray)):
        return _decode(bytes(value), where)
    if isinstance(value, dict):
        if value.get("bytes"):
            return _decode(value["bytes"], where)
        if value.get("path"):
            return load_image(value["path"], image_root, where)
        raise ImageError(f"{where}: image dict has neither 'bytes' nor 'path'")
    if isinstance(value, (str, Path)):
        text = str(value)
        if not text:
            raise ImageError(f"{where}: empty image reference")
        if isinstance(value, str) and is_base64_image(text):
            try:
                return _decode(base64.b64decode(text, validate=False), where)
            except (binascii.Error, ImageError):
                pass
        path = resolve_image_path(text, image_root) if image_root is not None else Path(text)
        if not path.is_file():
            raise ImageError(f"{where}: image file not found: {path}")
        try:
            return _decode(path.read_bytes(), f"{where} ({path})")
        except OSError as err:
            raise ImageError(f"{where}: cannot read {path} ({err})") from err
    if value is None:
        raise ImageError(f"{where}: missing image")
    raise ImageError(f"{where}: unsupported image value of type {type(value).__name__}")
