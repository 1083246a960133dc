"""The clone stands alone: every file the code, docs, tests and recipes cite exists in the repository.

Scanned: `src/`, `docs/`, `tests/`, `recipes/`, `benchmarks/`, `examples/` and `README.md` (text files only). Checked:
- markdown links `[text](target)` resolve relative to the file that holds them;
- paths that start with a top-level folder of the repository (`docs/...`, `src/...`, `recipes/...`) exist;
- every `*.md` name is a file of the repository, or one of the report files the commands write;
- no mention of the private specification files or of a folder outside the clone.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROOTS = ("src", "docs", "tests", "recipes", "benchmarks", "examples", "README.md")
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".cfg", ".ini"}
TOP_FOLDERS = ("docs", "src", "tests", "recipes", "benchmarks", "examples")
# Markdown files our commands write into an output folder (not files of the repository).
WRITTEN_REPORTS = {
    "summary.md",  # dama hardness: <out>/summary.md
    "table.md",  # dama eval compare --out table.md (tests)
    "results.md",  # dama eval compare --out results.md (docs)
    "report.md",  # dama demo: <out>/report.md
}
# Spelled in pieces so that this file does not itself mention what it forbids.
_PRIVATE_SPECS = "|".join(name + r"\.md" for name in ("METHOD", "EVAL", "STYLE", "ENV"))
FORBIDDEN = re.compile(r"\b(?:" + _PRIVATE_SPECS + r")\b|\.\./+(?:\.\./+)*" + "shared" + r"\b")
# The project's internal issue numbers mean nothing to a reader of the clone; an upstream project's issue is named
# with its project ("TRL issue #5211") and passes.
INTERNAL_ISSUE = re.compile(r"(?<!TRL )(?<!GitHub )\b[Ii]ssues? ?#?\d+\b")
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")
TOP_PATH = re.compile(r"(?<![\w./-])((?:" + "|".join(TOP_FOLDERS) + r")/[\w./-]*[\w/])")
MD_NAME = re.compile(r"(?<![\w-])([\w./-]*[\w-]\.md)(?![\w])")


def _text_files() -> list[Path]:
    files = []
    for root in ROOTS:
        path = REPO / root
        candidates = [path] if path.is_file() else sorted(path.rglob("*"))
        files += [
            f
            for f in candidates
            if f.is_file() and f.suffix in TEXT_SUFFIXES and "__pycache__" not in f.parts and ".venv" not in f.parts
        ]
    return files


FILES = _text_files()
MD_BASENAMES = {f.name for f in FILES if f.suffix == ".md"}
# This file's own examples name missing files on purpose.
CITING_FILES = [f for f in FILES if f != Path(__file__).resolve()]


def _exists(target: str, holder: Path) -> bool:
    target = target.split("#", 1)[0].rstrip("/")
    if not target:
        return True
    return (holder.parent / target).exists() or (REPO / target).exists()


def _lines(path: Path) -> list[tuple[int, str]]:
    return list(enumerate(path.read_text(encoding="utf-8").splitlines(), start=1))


def test_the_scan_sees_the_repository() -> None:
    names = {f.relative_to(REPO).as_posix() for f in FILES}
    assert {"README.md", "docs/paper_mapping.md", "src/dama/trainer.py", "recipes/tiny/dama.yaml"} <= names


def test_no_reference_to_private_specs_or_outside_folders() -> None:
    hits = [
        f"{f.relative_to(REPO)}:{n}: {m.group(0)}"
        for f in FILES
        for n, line in _lines(f)
        for m in FORBIDDEN.finditer(line)
    ]
    assert not hits, "cite the paper's equations or docs/ instead of:\n" + "\n".join(hits)


def test_no_internal_issue_numbers() -> None:
    hits = [
        f"{f.relative_to(REPO)}:{n}: {m.group(0)}"
        for f in CITING_FILES
        for n, line in _lines(f)
        for m in INTERNAL_ISSUE.finditer(line)
    ]
    assert not hits, "say what an internal issue asked for instead of its number:\n" + "\n".join(hits)


def test_markdown_links_resolve() -> None:
    broken = []
    for f in FILES:
        if f.suffix != ".md":
            continue
        for n, line in _lines(f):
            for m in MD_LINK.finditer(line):
                target = m.group(1)
                if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                    continue
                if not _exists(target, f):
                    broken.append(f"{f.relative_to(REPO)}:{n}: ({target})")
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)


def test_repository_paths_exist() -> None:
    missing = [
        f"{f.relative_to(REPO)}:{n}: {m.group(1)}"
        for f in CITING_FILES
        for n, line in _lines(f)
        for m in TOP_PATH.finditer(line)
        if not _exists(m.group(1), f)
    ]
    assert not missing, "paths that are not in the repository:\n" + "\n".join(missing)


def test_markdown_names_exist() -> None:
    missing = []
    for f in CITING_FILES:
        for n, line in _lines(f):
            for m in MD_NAME.finditer(line):
                name = m.group(1)
                basename = name.rsplit("/", 1)[-1]
                if basename in WRITTEN_REPORTS:
                    continue
                known = _exists(name, f) if "/" in name else basename in MD_BASENAMES
                if not known:
                    missing.append(f"{f.relative_to(REPO)}:{n}: {name}")
    assert not missing, "markdown files that are not in the repository:\n" + "\n".join(missing)


@pytest.mark.parametrize(
    ("line", "pattern", "caught"),
    [
        ("see " + "METHOD" + ".md §2", FORBIDDEN, True),
        ("[spec](../../" + "shared/x.md)", FORBIDDEN, True),
        ("the method (docs/paper_mapping.md §2)", FORBIDDEN, False),
        ("run `recipes/tiny/dama.yaml`", TOP_PATH, True),
        ("under /usr/share/docs/x", TOP_PATH, False),
        ("see [x](paper_mapping.md#notation)", MD_LINK, True),
        ("writes summary.md next to it", MD_NAME, True),
        ("as asked in " + "issue 13, item 5", INTERNAL_ISSUE, True),
        ("the demo (" + "issue #10)", INTERNAL_ISSUE, True),
        ("TRL issue #5211 asks for adaptive β", INTERNAL_ISSUE, False),
    ],
)
def test_patterns_catch_what_they_should(line: str, pattern: re.Pattern[str], caught: bool) -> None:
    assert bool(pattern.search(line)) is caught


def test_a_missing_file_is_reported() -> None:
    holder = REPO / "docs" / "eval.md"
    assert _exists("paper_mapping.md#notation", holder)
    assert _exists("docs/paper_mapping.md", holder)
    assert not _exists("no-such-page.md", holder)
    assert not _exists("docs/no-such-page.md", holder)


# `python -m pytest -q` collects every folder of tests/ in one run. The folders are not packages, so pytest imports
# each test file (and each helper they import) by its bare file name: two files with the same name in different
# folders collide ("import file mismatch"), and `from conftest import ...` gets whichever conftest.py pytest loaded
# last (there is one per folder), which depends on the order of the command-line paths.
TEST_MODULES = [f for f in (REPO / "tests").rglob("*.py") if "__pycache__" not in f.parts]
CONFTEST_IMPORT = re.compile(r"^\s*(?:from\s+conftest\s+import|import\s+conftest\b)", re.MULTILINE)


def test_test_modules_have_unique_names() -> None:
    by_name: dict[str, list[str]] = {}
    for f in TEST_MODULES:
        if f.name not in ("conftest.py", "__init__.py"):
            by_name.setdefault(f.name, []).append(f.relative_to(REPO).as_posix())
    clashes = {name: paths for name, paths in by_name.items() if len(paths) > 1}
    assert not clashes, f"rename one of each (pytest imports test files by bare name): {clashes}"


def test_no_test_imports_from_a_conftest() -> None:
    hits = [f.relative_to(REPO).as_posix() for f in TEST_MODULES if CONFTEST_IMPORT.search(f.read_text("utf-8"))]
    assert not hits, f"import helpers from a uniquely named module, not from conftest: {hits}"
