"""Crash-safe file writes: the one atomic-write helper of the package, and the writability pre-check.

Every result file (hardness output, evaluation metrics, checkpoint state, reference-log-prob metadata) is written
through `atomic_target`: the bytes go to a temporary file in the same folder, are flushed to disk, and the file is
renamed over the final name. A kill at any moment leaves either the old file or the new one, never a half file; a
failed write leaves nothing behind. A whole folder (`dama precompute-ref`'s dataset) is built beside its final name
and put in place by `replace_folder`. `check_writable` lets a command refuse an output folder it cannot write before
it spends time on the work.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dama.errors import DamaError

TMP_SUFFIX = ".tmp"


class OutputNotWritableError(DamaError, OSError):
    """An output folder that cannot be created or written; raised before the work starts."""


@contextmanager
def atomic_target(path: str | Path) -> Iterator[Path]:
    """A temporary path next to `path` to write to; on success it is fsync'ed and renamed to `path`.

    On an exception the temporary file is removed and `path` is left as it was. Temporary names start with a dot
    and end in `.tmp`, so `cleanup_temporaries` can remove the leftovers of a killed process.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_target(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def json_text(obj: Any, *, sort_keys: bool = False) -> str:
    """Indented JSON with a final newline. NaN and infinities are refused (`ValueError`): they are not JSON."""
    return json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=sort_keys, allow_nan=False) + "\n"


def atomic_write_json(path: str | Path, obj: Any, *, sort_keys: bool = False) -> None:
    """Write `obj` as indented JSON to `path` atomically (serialised first: a bad value writes nothing)."""
    atomic_write_text(path, json_text(obj, sort_keys=sort_keys))


def replace_folder(staged: str | Path, path: str | Path) -> None:
    """Put the finished folder `staged` in place of `path` (which may exist), by renames only.

    The old `path` is moved aside to `<path>.old` first and deleted last, so a kill never leaves a half-deleted
    folder under the final name: at any moment `path` is the old folder, the new one, or absent with both kept
    next to it. `staged` must be on the same file system (e.g. `<path>.partial`).
    """
    staged, path = Path(staged), Path(path)
    old = path.with_name(path.name + ".old")
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(staged, path)
    shutil.rmtree(old, ignore_errors=True)


def cleanup_temporaries(folder: str | Path) -> None:
    """Remove the temporary files a killed writer left in `folder` (never a final file).

    Matches `.<name>.<random>.tmp` and the `.<name>.tmp-<pid>` names of earlier versions.
    """
    for tmp in Path(folder).glob(f".*{TMP_SUFFIX}*"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)


def check_writable(folder: str | Path, what: str = "output folder") -> Path:
    """Prove that `folder` can be created (or is there) and written, without creating it; raise otherwise.

    The nearest existing folder on the way gets a temporary file, created and removed at once, so a read-only disk, a
    missing permission or a path through a regular file is found before any work starts. `what` names the option in
    the message (e.g. `"--out"`, `"output_dir"`). Raises `OutputNotWritableError`.
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is not a folder")
        fd, name = tempfile.mkstemp(prefix=".dama-write-check.", suffix=TMP_SUFFIX, dir=existing)
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        reason = err.strerror or str(err)
        raise OutputNotWritableError(
            f"{what} {str(folder)!r} cannot be written ({reason}); choose another folder or fix its permissions. "
            "Nothing was computed."
        ) from err
    return folder
