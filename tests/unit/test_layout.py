"""The layout holds: the shared core imports no stage package, there are no import cycles, and modules and
functions stay small (docs/layout.md)."""

from __future__ import annotations

import ast
from pathlib import Path

from mmfeat.settings import PROJECT_ROOT

PACKAGES = ("mmfeat", "captioner", "readers", "workers", "streams", "ranking", "bench")
STAGES = ("captioner", "readers", "workers", "streams", "ranking", "bench")
COMPOSITION_ROOT = "mmfeat.cli"
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 80


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((PROJECT_ROOT / pkg).rglob("*.py")):
            if "triton_models" in path.parts:
                continue
            rel = path.relative_to(PROJECT_ROOT).with_suffix("")
            name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
            out[name] = path
    return out


def imports(path: Path, *, top_level_only: bool) -> set[str]:
    """Modules ``path`` imports (``from a.b import c`` counts as a.b, and as a.b.c when that is a module)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif top_level_only and isinstance(node, ast.If | ast.Try):  # imports under `if TYPE_CHECKING:` do not run
            continue
    return found


def test_the_shared_core_imports_no_stage_package() -> None:
    bad = []
    for name, path in modules().items():
        if name.split(".")[0] != "mmfeat" or name in (COMPOSITION_ROOT, "mmfeat.__main__") or name.startswith(COMPOSITION_ROOT + "."):
            continue  # the composition root, and the entry point that runs it
        for imported in imports(path, top_level_only=False):
            if imported.split(".")[0] in STAGES or imported == COMPOSITION_ROOT or imported.startswith(COMPOSITION_ROOT + "."):
                bad.append(f"{name} imports {imported}")
    assert bad == []


def test_there_are_no_import_cycles() -> None:
    mods = modules()
    graph = {name: {i for i in imports(path, top_level_only=True) if i in mods and i != name} for name, path in mods.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_modules_and_functions_stay_small() -> None:
    big_modules, big_functions = [], []
    for name, path in modules().items():
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            big_modules.append(f"{name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno is not None:
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    big_functions.append(f"{name}.{node.name}: {length} lines")
    assert big_modules == [] and big_functions == []
