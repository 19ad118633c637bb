"""docs/architecture.md names every module, package by package, and nothing that is gone."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAP = ROOT / "docs" / "architecture.md"
PACKAGES = ("protocol", "supervisor", "front", "worker", "worker/cloud", "emulator", "bench")
SECTION = re.compile(r"^### (?P<package>[\w/]+)/ ", re.MULTILINE)
ROW = re.compile(r"^\| `(?P<module>[\w.]+\.py)` \|", re.MULTILINE)


def mapped_modules() -> dict[str, set[str]]:
    """Each `### package/` section's table rows, by package."""
    text = MAP.read_text(encoding="utf-8")
    heads = list(SECTION.finditer(text))
    sections: dict[str, set[str]] = {}
    for head, following in zip(heads, [*heads[1:], None], strict=True):
        end = following.start() if following else len(text)
        body = text[head.end() : end].split("\n## ", 1)[0]
        sections[head["package"]] = {row["module"] for row in ROW.finditer(body)}
    return sections


def package_modules(package: str) -> set[str]:
    skip = {"__init__.py"} if package == "bench" else {"__init__.py", "__main__.py"}
    return {p.name for p in (ROOT / package).glob("*.py") if p.name not in skip}


def test_every_package_has_a_section() -> None:
    assert set(mapped_modules()) == set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_a_package_table_lists_exactly_its_modules(package: str) -> None:
    listed = mapped_modules()[package]
    present = package_modules(package)
    assert present - listed == set(), f"{package}/ modules missing from docs/architecture.md"
    assert listed - present == set(), f"docs/architecture.md names {package}/ modules that are gone"
