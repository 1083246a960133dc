"""`ruff check` and `ruff format --check` are clean on src, tests, benchmarks and examples (the rules are in
pyproject.toml), so the test command enforces lint and formatting."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("src", "tests", "benchmarks", "examples")


def _ruff() -> list[str] | None:
    if importlib.util.find_spec("ruff") is not None:
        return [sys.executable, "-m", "ruff"]
    found = shutil.which("ruff")
    return [found] if found else None


def test_ruff_check_is_clean() -> None:
    ruff = _ruff()
    assert ruff is not None, "ruff is not installed (it comes with requirements-dev.txt / the dev extra)"
    done = subprocess.run([*ruff, "check", "--no-cache", *FOLDERS], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_format_is_clean() -> None:
    ruff = _ruff()
    assert ruff is not None, "ruff is not installed (it comes with requirements-dev.txt / the dev extra)"
    done = subprocess.run(
        [*ruff, "format", "--check", "--no-cache", *FOLDERS], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, "run `ruff format src tests benchmarks examples`:\n" + done.stdout + done.stderr
