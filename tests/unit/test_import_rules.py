"""The import rules of DESIGN.md, checked on the source: a new import that breaks one fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
OURS = ("protocol", "supervisor", "front", "worker", "emulator")


def imported_modules(path: Path) -> set[str]:
    """Every module of ours `path` imports, at any depth (TYPE_CHECKING blocks included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] in OURS}


def package_imports(package: str) -> dict[str, set[str]]:
    return {
        str(path.relative_to(REPO)): imported_modules(path)
        for path in sorted((REPO / package).rglob("*.py"))
    }


def test_protocol_imports_nothing_of_ours_but_itself() -> None:
    for path, modules in package_imports("protocol").items():
        assert all(m.startswith("protocol") for m in modules), (path, modules)


@pytest.mark.parametrize("package", ["front", "worker", "supervisor"])
def test_components_import_only_protocol_and_themselves(package: str) -> None:
    for path, modules in package_imports(package).items():
        foreign = {m for m in modules if m.split(".")[0] not in ("protocol", package)}
        assert not foreign, (path, foreign)


def test_the_emulator_imports_only_the_tool_text_form() -> None:
    for path, modules in package_imports("emulator").items():
        foreign = {m for m in modules if not m.startswith("emulator")}
        assert all(m == "front.tools" or m.startswith("front.tools.") for m in foreign), path


@pytest.mark.parametrize("package", ["protocol", "supervisor", "front", "worker"])
def test_nothing_imports_the_emulator(package: str) -> None:
    for path, modules in package_imports(package).items():
        assert not any(m.startswith("emulator") for m in modules), path


def module_name(path: str) -> str:
    return path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def first_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of `graph` (module -> modules it imports), or [] when there is none."""
    done: set[str] = set()

    def visit(node: str, trail: list[str]) -> list[str]:
        if node in trail:
            return [*trail[trail.index(node) :], node]
        if node in done:
            return []
        for target in sorted(graph.get(node, ())):
            cycle = visit(target, [*trail, node])
            if cycle:
                return cycle
        done.add(node)
        return []

    for start in sorted(graph):
        cycle = visit(start, [])
        if cycle:
            return cycle
    return []


@pytest.mark.parametrize("package", ["protocol", "supervisor", "front", "worker"])
def test_no_import_cycle_inside_a_package(package: str) -> None:
    """Typing-only imports count too: a cycle hidden behind TYPE_CHECKING is still a friend."""
    modules = {module_name(path): imports for path, imports in package_imports(package).items()}
    graph = {name: {m for m in imports if m in modules} for name, imports in modules.items()}
    assert first_cycle(graph) == []


def test_a_cycle_is_found() -> None:
    assert first_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
