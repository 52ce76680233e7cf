"""Count the layout of embtune's own code: files, lines, import circles, imports running back up.

Run from the repository root::

    python tools/layout_stats.py            # a table on stdout
    python tools/layout_stats.py --json     # the same figures as JSON

Read statically from the AST (nothing of the project is imported). The project's own modules are
the files under ``embtune_core/`` (import name ``embtune_core``), ``plugins/`` (``embtune_plugins``)
and ``integrations/`` (``embtune_integrations``); an import of anything else is a library import.

* **circle**: a strongly connected set of modules (more than one) in the graph of imports between
  the project's own modules. Counted twice: over every import (top level and inside functions), and
  over top-level imports only. Imports under ``if TYPE_CHECKING:`` are not edges (they never run).
  An import of a package (``from embtune_core import hookimpl``) is an edge to its ``__init__``;
  ``from pkg import name`` is an edge to ``pkg.name`` when that is a module.
* **import running back up**: an import from a module of a lower layer of a module of a higher
  one. Layers, lowest first: the core library (``embtune_core`` and its subpackages other than the
  CLI), the built-in plugins, the integrations, the command line (``embtune_core.commands``,
  ``embtune_core.cli``). The core may name plugins by string (entry points): that is no import.
* **imports inside functions**: imports of the project's own modules made inside a function body,
  against those at module level.

:func:`project_graph` and :func:`circles` are what ``tests/test_layout.py`` checks.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: import name -> folder of the repository
PACKAGES = {"embtune_core": "embtune_core", "embtune_plugins": "plugins", "embtune_integrations": "integrations"}


@dataclass(frozen=True)
class ImportEdge:
    source: str  # importing module
    target: str  # imported project module
    line: int
    in_function: bool
    type_only: bool


@dataclass
class ProjectGraph:
    modules: dict[str, Path] = field(default_factory=dict)  # module name -> file
    edges: list[ImportEdge] = field(default_factory=list)
    # imports of a project path that is no module (an old path served by embtune_core.old_paths, or a typo):
    # (importing module, imported name, line). The edge goes to the nearest package above, so it hides.
    unresolved: list[tuple[str, str, int]] = field(default_factory=list)


def _module_name(path: Path, root: Path) -> str | None:
    rel = path.relative_to(root)
    for name, folder in PACKAGES.items():
        if rel.parts[0] == folder:
            parts = [name, *rel.parts[1:]]
            parts[-1] = parts[-1][: -len(".py")]
            if parts[-1] == "__init__":
                parts.pop()
            return ".".join(parts)
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _dynamic_import(node: ast.AST) -> bool:
    if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)):
        return False
    func = node.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
    return name in ("__import__", "import_module")


def _imports(tree: ast.AST):
    """Yield (node, in_function, type_only) for every import statement."""

    def visit(node, in_function, type_only):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, in_function, type_only
            elif _dynamic_import(child):
                # __import__("pkg.mod") / importlib.import_module("pkg.mod") with a literal name:
                # the same edge as an import statement
                yield ast.Import(names=[ast.alias(name=child.args[0].value)], lineno=child.lineno), \
                    in_function, type_only
                yield from visit(child, in_function, type_only)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                yield from visit(child, True, type_only)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    yield from visit(ast.Module(body=[stmt], type_ignores=[]), in_function, True)
                for stmt in child.orelse:
                    yield from visit(ast.Module(body=[stmt], type_ignores=[]), in_function, type_only)
            else:
                yield from visit(child, in_function, type_only)

    yield from visit(tree, False, False)


def project_graph(root: Path = ROOT) -> ProjectGraph:
    graph = ProjectGraph()
    for folder in PACKAGES.values():
        for path in sorted((root / folder).rglob("*.py")):
            name = _module_name(path, root)
            if name is not None:
                graph.modules[name] = path
    for name, path in graph.modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, in_function, type_only in _imports(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                for alias in node.names:
                    targets.append(alias.name)
            else:
                base = node.module or ""
                if node.level:
                    package = name.split(".") if is_package else name.split(".")[:-1]
                    package = package[: len(package) - (node.level - 1)]
                    base = ".".join([*package, *([base] if base else [])])
                for alias in node.names:
                    child = f"{base}.{alias.name}"
                    targets.append(child if child in graph.modules else base)
            seen: set[str] = set()
            for target in targets:
                if target.partition(".")[0] in PACKAGES and target not in graph.modules:
                    graph.unresolved.append((name, target, node.lineno))
                # `import a.b.c` of a project module: the deepest module that exists
                while target and target not in graph.modules:
                    target = target.rpartition(".")[0]
                if target and target != name and target not in seen:
                    seen.add(target)  # one edge per statement and module imported
                    graph.edges.append(ImportEdge(name, target, node.lineno, in_function, type_only))
    return graph


def circles(graph: ProjectGraph, top_level_only: bool = False) -> list[list[str]]:
    """Strongly connected sets of more than one module (Tarjan), each sorted, largest first."""
    adjacency: dict[str, set[str]] = {m: set() for m in graph.modules}
    for edge in graph.edges:
        if edge.type_only or (top_level_only and edge.in_function):
            continue
        adjacency[edge.source].add(edge.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10_000)

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in adjacency[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(adjacency):
        if v not in index:
            strongconnect(v)
    return sorted(found, key=lambda c: (-len(c), c))


def layer(module: str) -> int:
    """0 core library, 1 built-in plugins, 2 integrations, 3 command line."""
    if module.startswith("embtune_plugins"):
        return 1
    if module.startswith("embtune_integrations"):
        return 2
    if module == "embtune_core.cli" or module.startswith("embtune_core.commands"):
        return 3
    return 0


def back_up(graph: ProjectGraph) -> list[ImportEdge]:
    return [e for e in graph.edges if not e.type_only and layer(e.target) > layer(e.source)]


def stats(root: Path = ROOT) -> dict:
    graph = project_graph(root)
    runtime = [e for e in graph.edges if not e.type_only]
    return {
        "files": len(graph.modules),
        "lines": sum(len(p.read_text(encoding="utf-8").splitlines()) for p in graph.modules.values()),
        "packages (folders with __init__.py)": sum(1 for p in graph.modules.values() if p.name == "__init__.py"),
        "largest folder (files)": max(
            sum(1 for p in graph.modules.values() if p.parent == folder)
            for folder in {p.parent for p in graph.modules.values()}
        ),
        "circles (all imports)": [c for c in circles(graph)],
        "circles (top-level imports)": [c for c in circles(graph, top_level_only=True)],
        "imports running back up": [f"{e.source} -> {e.target} (line {e.line})" for e in back_up(graph)],
        "project imports at top level": sum(1 for e in runtime if not e.in_function),
        "project imports inside functions": sum(1 for e in runtime if e.in_function),
        "project imports under TYPE_CHECKING": sum(1 for e in graph.edges if e.type_only),
        "imports of a project path that is no module": [
            f"{source} -> {target} (line {line})" for source, target, line in graph.unresolved
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    figures = stats(args.root)
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    for key, value in figures.items():
        if isinstance(value, list):
            print(f"{key}: {len(value)}")
            for item in value:
                print(f"    {' <-> '.join(item) if isinstance(item, list) else item}")
        else:
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
