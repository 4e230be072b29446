"""Imports run one way: every module imports only from its own layer or below, and no files import each other.

Every import counts, at the top of a file or inside a function alike: a deferred import is still
a dependency, and hiding one in a function is how back edges crept in before. Only imports under
``if TYPE_CHECKING:`` (annotations, never run) are exempt. A package's ``__init__`` importing its
own submodules is no edge (the package is already in ``sys.modules`` then).

The layers, lowest first (``docs/architecture.md`` says why each sits where it does):
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fewshot_sdk"

#: Lowest first; a module belongs to the layer of the longest prefix it matches.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "base",
        (
            "fewshot_sdk.version",
            "fewshot_sdk.errors",
            "fewshot_sdk.finite",
            "fewshot_sdk.config",
            "fewshot_sdk.registry",
            "fewshot_sdk.progress",
            "fewshot_sdk.allocator",
            "fewshot_sdk.predict_options",
            "fewshot_sdk.checkpoint",
            "fewshot_sdk.class_names",
            "fewshot_sdk.model_card",
        ),
    ),
    ("data", ("fewshot_sdk.imageio", "fewshot_sdk.data", "fewshot_sdk.api")),
    ("models, kernels, graphs", ("fewshot_sdk.models", "fewshot_sdk.kernels", "fewshot_sdk.export")),
    ("task", ("fewshot_sdk.task",)),
    ("methods", ("fewshot_sdk.methods",)),
    ("io", ("fewshot_sdk.io",)),
    ("train", ("fewshot_sdk.train",)),
    # ``fewshot serve``'s service: what the CLI's serve command runs (FastAPI, imported by nothing below)
    ("serve", ("fewshot_sdk.serve",)),
    # ``python -m fewshot_sdk.train`` (torchrun's entry point, a documented name) is the CLI's train command
    ("cli", ("fewshot_sdk.cli", "fewshot_sdk.train.__main__")),
    ("face", ("fewshot_sdk",)),
]
__doc__ = (__doc__ or "") + "\n".join(
    f"{i}. {name}: {', '.join(prefixes)}" for i, (name, prefixes) in enumerate(LAYERS)
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    matches = [
        (len(prefix), index)
        for index, (_, prefixes) in enumerate(LAYERS)
        for prefix in prefixes
        if module == prefix or module.startswith(prefix + ".")
    ]
    if not matches:
        raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")
    return max(matches)[1]


def imports_of(path: Path, known: set[str]) -> dict[str, int]:
    """Every package module ``path`` imports (top level and inside functions), with the line of the first import."""
    tree = ast.parse(path.read_text())
    exempt: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            exempt.update(id(child) for statement in node.body for child in ast.walk(statement))
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        if id(node) in exempt:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = [f"{node.module}.{alias.name}" for alias in node.names]
            names = [name for name in submodules if name in known] or [node.module]
        else:
            continue
        for name in names:
            if name in known:
                found.setdefault(name, node.lineno)
    return found


def package_graph() -> dict[str, dict[str, int]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(files)
    graph = {}
    for name, path in files.items():
        edges = imports_of(path, known)
        graph[name] = {
            target: line for target, line in edges.items() if target != name and not name.startswith(target + ".")
        }
    return graph


def test_every_module_belongs_to_a_layer():
    for name in package_graph():
        layer_of(name)


def test_every_import_runs_down_or_across_never_up():
    upward = []
    for name, edges in sorted(package_graph().items()):
        for target, line in sorted(edges.items()):
            if layer_of(target) > layer_of(name):
                upward.append(
                    f"{name}:{line} imports {target} ({LAYERS[layer_of(name)][0]} -> {LAYERS[layer_of(target)][0]})"
                )
    assert not upward, "imports that run back up:\n" + "\n".join(upward)


def test_no_files_import_each_other():
    graph = package_graph()
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
    graph = package_graph()
    assert set(graph["fewshot_sdk.registry"]) == set()
    assert not any(
        name.startswith(("fewshot_sdk.methods", "fewshot_sdk.train", "fewshot_sdk.io"))
        for name in graph["fewshot_sdk.checkpoint"]
    )


def test_an_upward_import_inside_a_function_is_caught(tmp_path):
    module = tmp_path / "lower.py"
    module.write_text("def late():\n    from fewshot_sdk.cli import app\n    return app\n")
    assert imports_of(module, {"fewshot_sdk.cli", "fewshot_sdk.cli.app"}) == {"fewshot_sdk.cli.app": 2}
