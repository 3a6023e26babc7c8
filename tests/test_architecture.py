"""The rooms of the house (ARCHITECTURE.md): no import cycles between modules, lower layers never import
the CLI, evaluation does not reach into retrieval or submit, submit does not reach into evaluation."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "petkit"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Every petkit module -> the petkit modules it imports (also inside functions; not under TYPE_CHECKING)."""
    graph: dict[str, set[str]] = {}
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for n in ast.walk(node)}
        found = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("petkit"):
                for alias in node.names:
                    candidate = f"{node.module}.{alias.name}"
                    found.add(candidate if candidate in modules else node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("petkit")}
        graph[module_name(path)] = {m for m in found if m in modules and m != module_name(path)}
    return graph


def test_no_import_cycles_between_modules():
    graph = imports()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if dep in ("petkit",):  # the package root only holds __version__
                continue
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(dep):] + [dep]))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_layers_import_downwards_only():
    graph = imports()
    rules = {  # room -> rooms it must never import
        "petkit.evaluation": ("petkit.retrieval", "petkit.submit", "petkit.cli", "petkit.engine", "petkit.report"),
        "petkit.submit": ("petkit.evaluation", "petkit.cli"),
        "petkit.retrieval": ("petkit.evaluation.evaluators", "petkit.evaluation.evaluate", "petkit.submit", "petkit.cli"),
        "petkit.models": ("petkit.engine", "petkit.cli", "petkit.data", "petkit.report"),
        "petkit.data": ("petkit.engine", "petkit.models", "petkit.cli", "petkit.evaluation", "petkit.report"),
        # the report reads what the pipeline wrote; nothing below it draws figures
        "petkit.engine": ("petkit.report",),
        "petkit.report": ("petkit.submit", "petkit.cli"),
    }
    broken = [f"{module} imports {dep}" for module, deps in graph.items() for room, banned in rules.items() if module.startswith(room)
              for dep in deps if dep.startswith(banned)]
    broken += [f"{module} imports {dep}" for module, deps in graph.items() if not module.startswith(("petkit.cli", "petkit.__main__"))
               for dep in deps if dep.startswith("petkit.cli")]
    assert not broken, broken
