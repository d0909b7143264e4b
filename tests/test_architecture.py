"""The import graph: no cycle; analysis and reporting never reach the loop or the engine;
no command module imports another. Read from the source with ``ast``, and checked at run
time in a fresh interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import visage_local

PACKAGE = Path(visage_local.__file__).parent

# Modules that analyse or present finished records (docs/ARCHITECTURE.md).
ANALYSIS = ("record", "landscape", "metrics", "stats", "plots", "report", "compare", "rejudge",
            "leaderboard", "verdict")  # fmt: skip
# What they must never load: the sweep loop, point evaluation, the engine, llama.cpp.
FORBIDDEN = ("visage_local.sweep", "visage_local.evaluator", "visage_local.cluster",
             "visage_local.engine", "llama_cpp")  # fmt: skip


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imports(path: Path, top_level_only: bool) -> set[str]:
    """The modules ``path`` imports (``visage_local.*`` and ``llama_cpp``), resolving relative
    imports; imports under ``if TYPE_CHECKING`` are not run, so they do not count."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            nested = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if (top or not top_level_only) and isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif (top or not top_level_only) and isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                found.add(base)
                found.update(f"{base}.{a.name}" for a in child.names)
            visit(child, top and not nested)

    visit(ast.parse(path.read_text()), True)
    return {m for m in found if m.startswith(("visage_local", "llama_cpp"))}


def graph(top_level_only: bool) -> dict[str, set[str]]:
    """Module -> the project modules it imports (names that are not modules are dropped)."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {
        name: {m for m in imports(path, top_level_only) if m in files or m == "llama_cpp"} - {name}
        for name, path in files.items()
    }


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as a path that returns to its start, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (cycle := dfs(node)):
            return cycle
    return None


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_import_graph_has_no_cycle():
    # every import counts here, the ones inside functions too
    edges = graph(top_level_only=False)
    assert {"visage_local.evaluator", "visage_local.cluster"} <= edges["visage_local.sweep"]
    assert "visage_local.judges.llm" in edges["visage_local.judges"]  # relative, in a function
    assert find_cycle(edges) is None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_analysis_and_reporting_never_import_the_loop_or_the_engine():
    edges = graph(top_level_only=True)
    for module in ANALYSIS:
        reached = reachable(edges, f"visage_local.{module}")
        assert not reached & set(FORBIDDEN), (module, sorted(reached & set(FORBIDDEN)))


def test_analysis_modules_load_no_engine_at_run_time():
    modules = ", ".join(f"visage_local.{m}" for m in ANALYSIS)
    code = f"import sys, {modules}; print('\\n'.join(sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert not [m for m in loaded if m.startswith(FORBIDDEN)]


def test_no_command_module_imports_another():
    edges = graph(top_level_only=False)
    commands = {m for m in edges if m.startswith("visage_local.cli.") and m.endswith("_cmd")}
    for command in commands:
        assert not edges[command] & commands, command
