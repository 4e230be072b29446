"""The package's import-time graph has no circle: every module can be imported first, alone.

Only imports that run when a module is imported count: top-level ``import`` statements,
not those under ``if TYPE_CHECKING:`` (annotations only) nor those inside functions
(deferred on purpose, e.g. ``Learner.adapt`` building an ``AdaptedModel``). A package's
``__init__`` importing its own submodules is no circle (the package is already in
``sys.modules`` then), so "a.b imports a" edges are not drawn.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fewshot_sdk"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_time_imports(path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in tree.body:  # top level only
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for child in ast.walk(node) if isinstance(node, (ast.Import, ast.ImportFrom, ast.If, ast.Try)) else []:
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                names = [child.module] + [f"{child.module}.{alias.name}" for alias in child.names]
            else:
                continue
            found.update(name for name in names if name in known)
    return found


def test_no_import_circle_at_import_time():
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(files)
    graph = {name: import_time_imports(path, known) - {name} for name, path in files.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join([*stack[stack.index(nxt) :], nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_the_registry_is_a_leaf_and_the_checkpoint_format_knows_no_methods():
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(files)
    assert import_time_imports(files["fewshot_sdk.registry"], known) == set()
    assert not any(
        name.startswith(("fewshot_sdk.methods", "fewshot_sdk.train", "fewshot_sdk.zoo"))
        for name in import_time_imports(files["fewshot_sdk.checkpoint"], known)
    )
