"""/v1/models' body: real model keys and plain aliases, never an alias written as a glob."""

from __future__ import annotations

import pytest

from front.model_list import is_pattern, models_payload
from protocol.worker_socket import ModelInfo, Models

pytestmark = pytest.mark.unit


def reply(aliases: dict[str, str]) -> Models:
    models = [ModelInfo(key="qwen3-coder", display_name="Qwen3 Coder"), ModelInfo(key="auto")]
    return Models(id=1, account="a", models=models, aliases=aliases)


def test_glob_aliases_are_not_listed_but_plain_ones_are() -> None:
    worker_aliases = {"claude-*": "qwen3-coder", "house-model": "auto", "gpt-4?": "auto"}
    configured = {"o[13]*": "auto", "team-coder": "qwen3-coder"}
    ids = [entry["id"] for entry in models_payload([reply(worker_aliases)], configured)["data"]]
    assert ids == ["qwen3-coder", "auto", "house-model", "team-coder"]


def test_a_plain_alias_names_its_target() -> None:
    payload = models_payload([reply({})], {"team-coder": "qwen3-coder"})
    [alias] = [entry for entry in payload["data"] if entry["id"] == "team-coder"]
    assert alias["display_name"] == "Qwen3 Coder (alias of qwen3-coder)"


@pytest.mark.parametrize(
    ("alias", "glob"),
    [("claude-*", True), ("gpt-4?", True), ("o[13]-mini", True), ("claude-sonnet-4", False)],
)
def test_what_counts_as_a_glob(alias: str, glob: bool) -> None:
    assert is_pattern(alias) is glob
