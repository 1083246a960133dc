"""The `dama` command line: a thin dispatcher to one module per subcommand.

Each subcommand module exposes `main(argv: list[str]) -> int` and is imported only when called, so `dama --help`
answers without importing torch or TRL. Modules never print their own errors: a user error (`dama.errors.DamaError`,
or an `OSError` about the user's files) reaches `main` here, which prints one line and returns the error's exit code
(docs/errors.md); a module with subcommands (`dama eval`) lists them in `SUBCOMMANDS`, so the line names the
subcommand too.
"""

from __future__ import annotations

import importlib
import os
import sys

from dama._version import __version__
from dama.errors import EXIT_USER_ERROR, exit_code_of, is_user_error

# name -> (module, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("dama.train", "DAMA (or plain DPO) training of a vision-language model from a YAML recipe"),
    "precompute-ref": (
        "dama.reference",
        "store reference log-probs in a dataset so training needs no reference model",
    ),
    "hardness": ("dama.hardness.cli", "split responses, CLIP-score sub-sentences, write the per-pair hardness δ"),
    "eval": ("dama.eval.cli", "hallucination benchmarks: generate, score (CHAIR, AMBER, POPE, judges), compare"),
    "demo": ("dama.demo.cli", "the whole pipeline on a synthetic visual world, on a CPU: DPO vs DAMA"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: dama <command> [options]",
        "",
        "DAMA: Data- and Model-aware Direct Preference Optimization for vision-language models.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {desc}" for name, (_, desc) in COMMANDS.items()]
    lines += [
        "",
        "Run `dama <command> --help` for the options of one command. Exit codes: 0 done, 2 a user error, 3 a",
        "partial result (`dama eval score --strict`), 4 a model or endpoint that could not answer. `--debug` (or",
        "DAMA_DEBUG=1) shows the traceback of a user error too; see docs/errors.md.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    if argv[0] in {"-V", "--version"}:
        print(f"dama {__version__}")
        return 0
    debug = "--debug" in argv or os.environ.get("DAMA_DEBUG", "") not in {"", "0"}
    argv = [arg for arg in argv if arg != "--debug"]
    if not argv:
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"dama: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return EXIT_USER_ERROR
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return int(module.main(rest) or 0)
    except SystemExit as stop:  # argparse's usage errors (exit 2) and --help (exit 0): a status, not an exception
        if stop.code is None or isinstance(stop.code, int):
            return int(stop.code or 0)
        print(f"dama {name}: error: {stop.code}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as err:  # a user's mistake gets one line; anything else is a bug and keeps its traceback
        if debug or not is_user_error(err):
            raise
        label = f"{name} {rest[0]}" if rest and rest[0] in getattr(module, "SUBCOMMANDS", ()) else name
        print(f"dama {label}: error: {err}", file=sys.stderr)
        return exit_code_of(err)


if __name__ == "__main__":
    sys.exit(main())
