"""Unit: request shapes real CLIs send (Claude Code, Codex) translate instead of failing."""

from __future__ import annotations

import msgspec
import pytest

from front.anthropic import plan_messages
from front.errors import ApiError
from front.openai_responses import plan_responses
from front.schemas_anthropic import MessagesBody
from front.schemas_openai import ResponsesBody

pytestmark = pytest.mark.unit


def test_claude_code_mid_conversation_system_message_stays_in_place() -> None:
    body = {
        "model": "claude-opus-4-8",
        "max_tokens": 64000,
        "system": [{"type": "text", "text": "You are Claude Code."}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}]},
            {"role": "system", "content": "Available agent types: ..."},
            {"role": "system", "content": [{"type": "text", "text": "Blocks work too."}]},
            {"role": "system", "content": ""},
        ],
        "thinking": {"type": "adaptive"},
        "context_management": {"edits": []},
        "output_config": {"effort": "high"},
    }
    plan = plan_messages(
        msgspec.convert(body, MessagesBody), default_model="auto", affinity_header=None
    )
    assert [(m.role, m.text) for m in plan.messages] == [
        ("system", "You are Claude Code."),
        ("user", "What is 2+2?"),
        ("system", "Available agent types: ..."),
        ("system", "Blocks work too."),
    ]


def test_unknown_anthropic_role_is_still_a_400() -> None:
    body = {"model": "x", "max_tokens": 8, "messages": [{"role": "wizard", "content": "hi"}]}
    with pytest.raises(ApiError, match="unknown message role 'wizard'"):
        plan_messages(
            msgspec.convert(body, MessagesBody), default_model="auto", affinity_header=None
        )


def test_codex_additional_tools_item_is_skipped() -> None:
    body = {
        "model": "gpt-6.1-sol",
        "stream": True,
        "input": [
            {
                "type": "additional_tools",
                "id": "at_1",
                "role": "developer",
                "tools": [{"type": "namespace", "name": "functions", "tools": []}],
            },
            {
                "type": "message",
                "role": "developer",
                "content": [{"type": "input_text", "text": "You are Codex."}],
            },
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        ],
        "text": {"verbosity": "low"},
    }
    plan = plan_responses(
        msgspec.convert(body, ResponsesBody), default_model="auto", affinity_header=None
    )
    assert [(m.role, m.text) for m in plan.messages] == [
        ("system", "You are Codex."),
        ("user", "hi"),
    ]
    assert plan.tools == []
