"""The error contract of every `dama` command (docs/errors.md).

A mistake the user can fix (a bad file, flag, recipe or row) raises a subclass of `DamaError`; the dispatcher in
`dama.cli` catches it once and prints `dama <command>: error: <message>` with exit code 2 (`EXIT_USER_ERROR`).
An `OSError` about the user's files (not found, no permission, disk full or read-only) is reported the same way.
Anything else is a bug and keeps its traceback. `--debug` (or `DAMA_DEBUG=1`) shows the traceback of a user error
too. Module-specific error classes derive from `DamaError` and from the builtin they always were (`ValueError`,
`RuntimeError`), so callers that catch the builtin keep working.
"""

from __future__ import annotations

import argparse
import errno
import math

EXIT_USER_ERROR = 2
EXIT_PARTIAL = 3  # `dama eval score --strict`: a result was written but is partial

# Operating-system errors that come from the user's files and folders (a missing input, no permission, a full or
# read-only disk), not from a bug: the dispatcher reports them like a `DamaError`.
USER_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)
USER_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.ENAMETOOLONG})


def is_user_error(err: BaseException) -> bool:
    """True for a `DamaError` or an `OSError` about the user's files (see `USER_OS_ERRORS`, `USER_ERRNOS`)."""
    if isinstance(err, DamaError):
        return True
    return isinstance(err, USER_OS_ERRORS) or (isinstance(err, OSError) and err.errno in USER_ERRNOS)


class DamaError(Exception):
    """A user-facing error: the message says what is wrong (file, row, field) and what to do."""


class NonFiniteError(DamaError, ValueError):
    """A NaN or infinite value where a finite number is required (δ, δ̄, β, a loss, a weight)."""


def require_finite(value: float, what: str) -> float:
    """`value` as a float, or `NonFiniteError` naming `what` (e.g. `"--delta-mean"`, `"row 12: hardness"`)."""
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise NonFiniteError(f"{what}: expected a finite number, got {value!r}") from err
    if not math.isfinite(number):
        raise NonFiniteError(f"{what}: expected a finite number, got {number}")
    return number


def positive_int(text: str) -> int:
    """argparse type: a whole number ≥ 1 (a shard, batch or seed count of 0 cannot make progress)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {value}")
    return value
