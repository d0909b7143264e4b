"""docs/ARCHITECTURE.md's claims, each checked from the source (with ``ast``) or, for what
loads at run time, in a fresh interpreter: no import cycle; the packages in the order data
flows, with no import from a lower one to a higher one; analysis and reading never reach the
loop or the engine; no command module imports another; only ``judges/`` dispatches judge
names; only ``record/`` names the files of a run or screen folder; no function over 80 lines
(60 in ``cli/``); the public face loads nothing until a name is used."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import visage_local
from visage_local.record import format as record_format

PACKAGE = Path(visage_local.__file__).parent

# The layers, lowest first (docs/ARCHITECTURE.md): a module may import its own layer and
# those below. Top-level modules are named whole; packages by their name.
LAYERS = (
    ("visage_local", "visage_local.errors", "visage_local.files", "visage_local.metrics",
     "visage_local.stats"),
    ("gguf",),
    ("sources",),
    ("record",),
    ("asking",),
    ("points",),
    ("weights",),
    ("engine",),
    ("visage_local.synthetic",),
    ("judges",),
    ("analysis",),
    ("reading",),
    ("run",),
    ("workflows",),
    ("training",),
    ("cli",),
)  # fmt: skip
# Packages that read or present finished records, and what they must never load: the sweep
# loop, point evaluation, Ray's executor, the engine, llama.cpp.
READERS = ("record", "analysis", "reading")
FORBIDDEN = ("visage_local.run.sweep", "visage_local.run.evaluator", "visage_local.run.cluster",
             "visage_local.engine", "llama_cpp")  # fmt: skip
MAX_LINES, MAX_CLI_LINES = 80, 60


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
    assert {"visage_local.run.evaluator", "visage_local.run.cluster"} <= edges[
        "visage_local.run.sweep"
    ]
    assert "visage_local.judges.llm" in edges["visage_local.judges"]  # relative, in a function
    assert find_cycle(edges) is None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def layer(module: str) -> int:
    """The layer ``module`` belongs to (its index in LAYERS)."""
    parts = module.split(".")
    for index, members in enumerate(LAYERS):
        if module in members or (len(parts) > 1 and parts[1] in members):
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and docs/ARCHITECTURE.md")


def upward(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Every import from a lower layer to a higher one."""
    return sorted(
        (m, t) for m, targets in edges.items() for t in targets
        if t != "llama_cpp" and layer(t) > layer(m)
    )  # fmt: skip


def test_the_packages_import_only_downwards():
    # every import counts, inside functions too (under TYPE_CHECKING none is run)
    edges = graph(top_level_only=False)
    assert upward(edges) == []
    assert {"visage_local.run.prepared", "visage_local.reading.rejudge"} <= edges[
        "visage_local.run.sweep"
    ]


def test_the_layer_check_finds_an_upward_import():
    edges = {"visage_local.analysis.landscape": {"visage_local.run.sweep"}}
    assert upward(edges) == [("visage_local.analysis.landscape", "visage_local.run.sweep")]


def _readers(edges: dict[str, set[str]]) -> list[str]:
    return [m for m in edges if m.split(".")[1:2] and m.split(".")[1] in READERS]


def test_analysis_and_reading_never_import_the_loop_or_the_engine():
    edges = graph(top_level_only=True)
    for module in _readers(edges):
        reached = reachable(edges, module)
        assert not [m for m in reached if m.startswith(FORBIDDEN)], module


def test_analysis_and_reading_load_no_engine_at_run_time():
    modules = ", ".join(_readers(graph(top_level_only=True)))
    code = f"import sys, {modules}; print('\\n'.join(sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert not [m for m in loaded if m.startswith(FORBIDDEN)]


def test_the_public_face_loads_each_name_when_used():
    code = (
        "import sys, visage_local; before = set(sys.modules); visage_local.RunSummary; "
        "print(sorted(m for m in before if m.startswith('visage_local.'))); "
        "print('llama_cpp' in sys.modules)"
    )
    shown = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert shown[:2] == ["[]", "False"]
    for name in visage_local.__all__:
        assert getattr(visage_local, name).__name__ == name
    with pytest.raises(AttributeError):
        visage_local.no_such_name  # noqa: B018


def test_no_command_module_imports_another():
    edges = graph(top_level_only=False)
    commands = {m for m in edges if m.startswith("visage_local.cli.") and m.endswith("_cmd")}
    for command in commands:
        assert not edges[command] & commands, command


def _strings(path: Path) -> list[tuple[int, str]]:
    """Every string constant in ``path`` but docstrings, with its line."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        and id(node) not in docstrings
    ]  # fmt: skip


def file_names_outside_record() -> list[str]:
    """Strings outside ``record/`` that name a file of a run or screen folder."""
    names = {v for k, v in vars(record_format).items() if k.endswith("_FILE")}
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name == "record":
            continue
        for line, text in _strings(path):
            if text.strip() in names or any(text.endswith(f"/{n}") for n in names):
                found.append(f"{path.relative_to(PACKAGE)}:{line} {text!r}")
    return found


def test_only_the_record_names_the_files_of_a_run_or_screen_folder():
    assert "screen.json" in {v for k, v in vars(record_format).items() if k.endswith("_FILE")}
    assert file_names_outside_record() == []


def judge_dispatch_outside_judges() -> list[str]:
    """Places outside ``judges/`` that branch on a judge's name: a comparison with, or a
    startswith/endswith of, a string that begins like a judge name."""
    kinds = ("keyword", "llm")
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name == "judges":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            values: list[ast.expr] = []
            if isinstance(node, ast.Compare):
                values = [node.left, *node.comparators]
            elif (
                isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("startswith", "endswith")
            ):  # fmt: skip
                values = list(node.args)
            for value in values:
                if (
                    isinstance(value, ast.Constant) and isinstance(value.value, str)
                    and value.value.startswith(kinds)
                ):  # fmt: skip
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    return found


def test_only_judges_dispatch_judge_names():
    assert judge_dispatch_outside_judges() == []


def long_functions() -> list[str]:
    """Functions over MAX_LINES lines (MAX_CLI_LINES in cli/)."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        limit = MAX_CLI_LINES if path.parent.name == "cli" else MAX_LINES
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append(f"{path.relative_to(PACKAGE)}:{node.name} {lines} lines")
    return found


def test_no_function_is_too_long_to_read():
    assert long_functions() == []
