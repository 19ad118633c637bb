"""Model catalogue parsing and client-name resolution."""

from __future__ import annotations

import pytest

from worker.models import ModelResolver, UnknownModel, parse_models

pytestmark = pytest.mark.unit

RAW = {
    "chat": [
        {"key": "auto", "displayName": "Auto", "isReasoning": False, "isVl": False},
        {"key": "dashscope_qwen3_coder", "displayName": "Qwen3-Coder"},
        {
            "key": "dashscope_qwen_plus_20250428_thinking",
            "displayName": "Qwen3-Thinking",
            "isReasoning": True,
        },
    ],
    "assistant": [{"key": "auto", "displayName": "Auto"}, {"key": "kmodel", "isVl": True}],
    "inline": "not a list",
    "quest": [{"displayName": "no key"}, "junk"],
}


def resolver(aliases: dict[str, str] | None = None) -> ModelResolver:
    r = ModelResolver(aliases or {}, "auto")
    r.update(parse_models(RAW))
    return r


def test_parse_merges_scenes_and_flags() -> None:
    models = {m.key: m for m in parse_models(RAW)}
    assert list(models) == [
        "auto",
        "dashscope_qwen3_coder",
        "dashscope_qwen_plus_20250428_thinking",
        "kmodel",
    ]
    assert models["auto"].scenes == ["chat", "assistant"]
    assert models["dashscope_qwen_plus_20250428_thinking"].is_reasoning
    assert models["kmodel"].is_vl and models["kmodel"].display_name == ""
    assert parse_models({}) == [] and parse_models(None) == []


def test_keys_display_names_aliases_and_globs() -> None:
    r = resolver({"coder": "Qwen3-Coder", "claude-*": "kmodel", "gpt-4o": "dashscope_qwen3_coder"})
    assert r.resolve("kmodel") == "kmodel"
    assert r.resolve("qwen3-thinking") == "dashscope_qwen_plus_20250428_thinking"
    assert r.resolve("coder") == "dashscope_qwen3_coder"
    assert r.resolve("claude-sonnet-4-5") == "kmodel"
    assert r.resolve("gpt-4o") == "dashscope_qwen3_coder"
    assert r.resolve("") == "auto"


def test_client_families_fall_back_to_the_default_and_others_fail_helpfully() -> None:
    r = resolver()
    assert r.resolve("gpt-4.1-mini") == "auto"
    assert r.resolve("claude-3-5-haiku-latest") == "auto"
    with pytest.raises(UnknownModel) as info:
        r.resolve("llama-70b")
    assert "llama-70b" in str(info.value) and "dashscope_qwen3_coder (Qwen3-Coder)" in str(
        info.value
    )


def test_without_a_catalogue_names_pass_through() -> None:
    assert ModelResolver({}, "auto").resolve("whatever") == "whatever"
