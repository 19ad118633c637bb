"""Unit: docs/configuration.md names every config key (in its section) and every variable."""

from __future__ import annotations

import re

import msgspec
import pytest

from supervisor.config import Config
from supervisor.envconfig import (
    ACCOUNT_VARIABLES,
    ENV_OVERRIDES,
    REPLACED_VARIABLES,
    SECRET_VARIABLES,
)
from tests.helpers import REPO

pytestmark = pytest.mark.unit

DOC = (REPO / "docs" / "configuration.md").read_text()


def section(title: str) -> str:
    """The text under `## title` up to the next `## ` heading."""
    start = DOC.index(f"## {title}\n")
    following = DOC.find("\n## ", start + 1)
    return DOC[start : following if following != -1 else len(DOC)]


def documented_keys(text: str) -> set[str]:
    """The first-column keys of the section's table rows."""
    return set(re.findall(r"^\| `([a-z0-9_]+)` \|", text, flags=re.MULTILINE))


@pytest.mark.parametrize("field", msgspec.structs.fields(Config), ids=lambda f: f.name)
def test_every_key_of_every_section(field: msgspec.structs.FieldInfo) -> None:
    kind = field.type
    if field.name in ("accounts", "keys"):
        title, struct = f"`[[{field.name}]]`", kind.__args__[0]
    else:
        title, struct = f"`[{field.name}]`", kind
    keys = {f.name for f in msgspec.structs.fields(struct)}
    assert documented_keys(section(title)) == keys


def test_every_environment_variable() -> None:
    variables = section("Environment variables")
    for name in [*ENV_OVERRIDES, *SECRET_VARIABLES, *ACCOUNT_VARIABLES, *REPLACED_VARIABLES]:
        assert f"| `{name}` |" in variables or f"`{name}`" in variables, name
    for name, (section_name, key, _) in ENV_OVERRIDES.items():
        assert f"| `{name}` | `{section_name}.{key}`" in variables, name
