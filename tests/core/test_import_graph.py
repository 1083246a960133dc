"""The package's import graph has no cycle, counting imports inside functions too.

An import moved into a function hides a cycle from the interpreter but not from the design: the two modules still
need each other. The graph is read with `ast` from the source of `src/dama` (every `import dama...` and
`from dama... import ...`, at any depth, relative ones resolved); imports under `if TYPE_CHECKING:` never run and are
left out. The dispatcher's `importlib.import_module(name)` by string is not an import statement and is not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "dama"
SRC = Path(__file__).resolve().parents[2] / "src"


def module_name(path: Path, base: Path = SRC) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the statements inside `if TYPE_CHECKING:` blocks."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else ""
            if name == "TYPE_CHECKING":
                skipped |= {id(inner) for stmt in node.body for inner in ast.walk(stmt)}
    return skipped


def imports_of(source: str, name: str, is_package: bool, modules: set[str]) -> set[str]:
    """The modules of `modules` that module `name` imports anywhere in `source`."""
    tree = ast.parse(source)
    skipped = _type_checking_nodes(tree)
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # `from a import b` imports `a`, and `a.b` when b is a submodule.
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            # `import a.b.c` also runs a.b; the deepest module of the package that exists is the edge.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path = SRC / PACKAGE, base: Path = SRC) -> dict[str, set[str]]:
    """module -> the package's modules it imports, for every `.py` file under `root` (`base` holds the top package)."""
    names = {f: module_name(f, base) for f in sorted(root.rglob("*.py"))}
    modules = set(names.values())
    return {name: imports_of(f.read_text(), name, f.name == "__init__.py", modules) for f, name in names.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan), each as a closed path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_closed_path(graph, component) for component in components]


def _closed_path(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest cycle through the first module of `component` (breadth-first inside the component)."""
    start, members = component[0], set(component)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & members):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start, start]
                if nxt not in parent:
                    parent[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {component}")


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "dama.trainer" in graph and "dama.objective" in graph["dama.trainer"]
    found = cycles(graph)
    assert not found, "import cycles (imports inside functions count):\n" + "\n".join(" -> ".join(c) for c in found)


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        # b imports a inside a function: still a cycle.
        ({"a.py": "import pkg.b\n", "b.py": "def f():\n    from pkg import a\n"}, [["pkg.a", "pkg.b", "pkg.a"]]),
        # relative import, three modules
        (
            {"a.py": "from .b import x\n", "b.py": "from pkg.c import y\n", "c.py": "from . import a\n"},
            [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]],
        ),
        # annotations only: not a cycle
        (
            {
                "a.py": "import pkg.b\n",
                "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n",
            },
            [],
        ),
        # a chain is not a cycle
        ({"a.py": "import pkg.b\n", "b.py": "from pkg.c import z\n", "c.py": "import os\n"}, []),
    ],
)
def test_cycles_are_found_in_small_packages(tmp_path: Path, files: dict[str, str], expected: list[list[str]]) -> None:
    root = tmp_path / "pkg"
    root.mkdir()
    (root / "__init__.py").write_text("")
    for name, text in files.items():
        (root / name).write_text(text)
    assert cycles(import_graph(root, tmp_path)) == expected


def test_the_config_does_not_load_the_hardness_stack() -> None:
    """`DAMAConfig` needs the hardness column's name and the official δ̄, not the CLIP pipeline: `dama.delta` holds
    both and imports only `dama.errors`, which imports nothing of ours."""
    graph = import_graph()
    reached, todo = set(), ["dama.config"]
    while todo:
        for nxt in graph[todo.pop()] - reached:
            reached.add(nxt)
            todo.append(nxt)
    assert "dama.delta" in reached
    assert not {m for m in reached if m.startswith("dama.hardness")}
    assert graph["dama.delta"] <= {"dama.errors"}
    assert graph["dama.official_release"] <= {"dama.errors"}
    assert graph["dama.errors"] == set()


def test_public_names_follow_the_pipeline_and_load_from_their_modules():
    """`from dama import …` offers each pipeline step; every name in `__all__` resolves, and the type-checking imports
    name exactly the lazily loaded ones."""
    import ast

    import dama

    for name in ("compute_hardness", "load_preference_dataset", "DAMAConfig", "DAMATrainer", "dama_beta",
                 "dama_loss", "beta_dpo_beta", "mdpo_loss"):  # fmt: skip
        assert name in dama.__all__
    for name in dama.__all__:
        assert getattr(dama, name) is not None, name
    tree = ast.parse(Path(dama.__file__).read_text())
    checked = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 0
               and node.module != "__future__" and node.module not in ("typing", "dama._version")
               for alias in node.names}  # fmt: skip
    assert checked == set(dama.__all__) - {"__version__"}


def test_the_offline_tools_do_not_import_the_trainer():
    """`dama hardness` (and the CLI's `--version`) read the version from a leaf module, not from the package face."""
    import subprocess
    import sys

    code = "import sys, dama.hardness.pipeline, dama.cli; print(sorted(m for m in sys.modules if m in ('dama.trainer', 'trl')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
