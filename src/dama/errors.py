"""The error contract of every `dama` command (docs/errors.md).

A mistake the user can fix (a bad file, flag, recipe or row) raises a subclass of `DamaError`; the dispatcher in
`dama.cli` catches it once, for every command, and prints `dama <command>: error: <message>` with the error's
`exit_code`: 2 (`EXIT_USER_ERROR`) unless the class says otherwise (`EXIT_UNAVAILABLE` for a model or endpoint
that could not answer). An `OSError` about the user's files (not found, no permission, disk full or read-only) is
reported like a `DamaError`, with exit code 2. Anything else is a bug and keeps its traceback. `--debug` (or
`DAMA_DEBUG=1`) shows the traceback of a user error too. Module-specific error classes derive from `DamaError` and
from the builtin they always were (`ValueError`, `RuntimeError`, `OSError`), so callers that catch the builtin keep
working. Commands never catch errors to print them themselves.
"""

from __future__ import annotations

import argparse
import errno
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# The exit codes of every command (docs/errors.md lists them); 1 is Python's own, for a bug's traceback.
EXIT_USER_ERROR = 2  # bad input, flag, recipe, row or output folder: the message says what to fix
EXIT_PARTIAL = 3  # `dama eval score --strict`: a result was written but is partial
EXIT_UNAVAILABLE = 4  # a model or endpoint dama calls (a judge, the LLM splitter) could not answer: rerun later

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
    """A user-facing error: the message says what is wrong (file, row, field) and what to do.

    `exit_code` is the status `dama` ends with when this error reaches the dispatcher; a subclass may set its own.
    """

    exit_code: int = EXIT_USER_ERROR


def exit_code_of(err: BaseException) -> int:
    """The exit status for a user error `err` (see `is_user_error`): its class's `exit_code`, else 2."""
    code = getattr(err, "exit_code", EXIT_USER_ERROR) if isinstance(err, DamaError) else EXIT_USER_ERROR
    return code if isinstance(code, int) and code not in (0, 1) else EXIT_USER_ERROR


class NonFiniteError(DamaError, ValueError):
    """A NaN or infinite value where a finite number is required (δ, δ̄, β, a loss, a weight)."""


class ModelNotFoundError(DamaError, OSError):
    """A model named by a flag or recipe key (`--clip`, `--model`, `model_name_or_path`) that is neither a loadable
    local folder nor available from the Hugging Face hub (or its local cache)."""


def model_not_found(name: str, what: str, err: BaseException) -> ModelNotFoundError:
    """The `ModelNotFoundError` for `what` (the flag or key, e.g. `"--clip"`) naming `name`, with the first line of
    the loader's reason `err`, and how to point at a local folder instead."""
    reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200].rstrip(".")
    saved = "config.json, the weights and the processor files, as save_pretrained writes them"
    if Path(name).exists():
        return ModelNotFoundError(
            f"{what} {name!r}: the folder cannot be loaded as a model ({reason}); it must hold {saved}"
        )
    return ModelNotFoundError(
        f"{what} {name!r} cannot be found: it is not a local folder, and neither the Hugging Face hub nor its local "
        f"cache could provide it ({reason}). Point {what} at a local folder that holds the model ({saved}); to get "
        "one, run `hf download NAME --local-dir DIR` where the hub can be reached and pass DIR"
    )


@contextmanager
def loading_model(name: str, what: str) -> Iterator[None]:
    """Around a `from_pretrained` of the model `name` given by `what` (a flag or key): the loader's failure to find
    it (an `OSError`: not a folder, not on the hub or in its cache, no network; a `ValueError` for a folder without
    a model's files) becomes `ModelNotFoundError`. Any other error, or a `ValueError` for a name that is not a
    folder, passes unchanged."""
    try:
        yield
    except OSError as err:
        raise model_not_found(name, what, err) from err
    except ValueError as err:
        if not Path(name).is_dir():
            raise
        raise model_not_found(name, what, err) from err


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
