"""The package's layering, stated once and checked on every run.

Every module of `wirehall/` is parsed with `ast` and each `import` it holds becomes an
edge: at module level, inside functions and under `if TYPE_CHECKING:` alike, since an
import that dodges a cycle by hiding in a function or a type-checking block still ties
the two modules together. The rules:

- `backplane` imports nothing of `websocket`, `http` or `security`;
- `websocket` imports nothing of `http`;
- `http` and `websocket` import of `security` only its access rules
  (`wirehall.security.access`), never its middleware;
- there is no cycle among wirehall's modules.

Only imports of wirehall's own modules count. Imports of optional dependencies inside
functions (uvicorn in `cli.py`, argon2 in `security/passwords.py`, redis in the Redis
backplane) are fine: they keep `import wirehall` working without the extra and never
point back into the package. A wirehall module is imported at module level, not in a
function or under `TYPE_CHECKING`, except where `LOCAL_IMPORTS_ALLOWED` says why. An edge goes to the module named in the import statement;
the package `__init__` modules that Python also runs on the way are not edges (the root
one re-exports the public API and so imports everything).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "wirehall"

ACCESS_RULES = frozenset({"wirehall.security.access"})


def _module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imports(path: Path, module: str, modules: set[str]) -> set[str]:
    """The wirehall modules `path` imports, wherever the import statement stands."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, path.name == "__init__.py", node)
            # `from wirehall.x import y` names module `wirehall.x.y` when there is one
            names = [
                f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target
                for alias in node.names
            ]
        else:
            continue
        found.update(name for name in names if name in modules and name != module)
    return found


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module name -> the wirehall modules it imports."""
    names = {path: _module_name(path, package) for path in sorted(package.rglob("*.py"))}
    modules = set(names.values())
    return {name: _imports(path, name, modules) for path, name in names.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the graph as [a, b, ..., a], or None (a depth-first search)."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str] | None:
        path.append(node)
        on_path.add(node)
        for target in sorted(graph.get(node, ())):
            if target in on_path:
                return [*path[path.index(target) :], target]
            if target not in done:
                cycle = visit(target)
                if cycle is not None:
                    return cycle
        path.pop()
        on_path.discard(node)
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done:
            cycle = visit(start)
            if cycle is not None:
                return cycle
    return None


# function-local imports of wirehall modules that do not dodge a cycle, with why
LOCAL_IMPORTS_ALLOWED = {
    # the Redis backplane imports redis, an optional extra: only a redis:// URL needs it
    ("wirehall.backplane", "wirehall.backplane.redis"),
}


def local_imports(package: Path = PACKAGE) -> set[tuple[str, str]]:
    """(module, imported wirehall module) for each import not at a module's top level.

    An import under `if TYPE_CHECKING:` counts as local: it stands for a dependency the
    module hides from the interpreter.
    """
    found: set[tuple[str, str]] = set()
    for path in sorted(package.rglob("*.py")):
        module = _module_name(path, package)
        tree = ast.parse(path.read_text(), str(path))
        top = {id(node) for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)}
        for node in ast.walk(tree):
            if id(node) in top:
                continue
            if isinstance(node, ast.ImportFrom):
                target = _resolve(module, path.name == "__init__.py", node)
                found.add((module, target))
            elif isinstance(node, ast.Import):
                found.update((module, alias.name) for alias in node.names)
    return {(module, target) for module, target in found if _in(target, package.name)}


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _violations(
    graph: dict[str, set[str]], source: str, forbidden: Iterable[str], allowed: frozenset[str] = frozenset()
) -> list[str]:
    return sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        if _in(module, source)
        for target in targets
        if any(_in(target, package) for package in forbidden) and target not in allowed
    )


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_the_graph_sees_function_local_and_type_checking_imports(tmp_path: Path) -> None:
    package = tmp_path / "wirehall"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from . import low\n")
    (package / "sub" / "low.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from wirehall.high import App\n"
    )
    (package / "high.py").write_text("def f():\n    from .sub.low import x\n")
    found = import_graph(package)
    assert found["wirehall.sub.low"] == {"wirehall.high"}
    assert found["wirehall.high"] == {"wirehall.sub.low"}
    assert found["wirehall.sub"] == {"wirehall.sub.low"}
    assert find_cycle(found) == ["wirehall.high", "wirehall.sub.low", "wirehall.high"]
    assert local_imports(package) == {
        ("wirehall.sub.low", "wirehall.high"),
        ("wirehall.high", "wirehall.sub.low"),
    }


def test_find_cycle_is_none_for_a_layered_graph() -> None:
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_wirehall_modules_are_imported_at_module_level() -> None:
    assert local_imports() - LOCAL_IMPORTS_ALLOWED == set()


def test_no_import_cycle_among_wirehall_modules(graph: dict[str, set[str]]) -> None:
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_backplane_imports_no_websocket_http_or_security(graph: dict[str, set[str]]) -> None:
    forbidden = ("wirehall.websocket", "wirehall.http", "wirehall.security")
    assert _violations(graph, "wirehall.backplane", forbidden) == []


def test_websocket_imports_nothing_of_http(graph: dict[str, set[str]]) -> None:
    assert _violations(graph, "wirehall.websocket", ("wirehall.http",)) == []


@pytest.mark.parametrize("layer", ["wirehall.http", "wirehall.websocket"])
def test_http_and_websocket_use_only_the_access_rules_of_security(
    graph: dict[str, set[str]], layer: str
) -> None:
    assert _violations(graph, layer, ("wirehall.security",), allowed=ACCESS_RULES) == []


def test_the_access_rules_import_no_middleware_and_no_endpoint_layer(graph: dict[str, set[str]]) -> None:
    for module in ACCESS_RULES:
        assert not {
            target
            for target in graph[module]
            if _in(target, "wirehall.security")
            or _in(target, "wirehall.websocket")
            or _in(target, "wirehall.http")
        }
