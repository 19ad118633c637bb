"""Claude Code (`claude -p`, the real npm CLI) pointed at the gateway with ANTHROPIC_BASE_URL.

It sends its own model names, a long system prompt, two dozen tools, `anthropic-beta`
headers, `?beta=true`, mid-conversation `system` messages and a HEAD probe; all must pass. The
emulator plays the model: one rule answers, or asks for Claude Code's own Read tool, whose
result Claude Code sends back and the final answer is scripted from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.clients.cli_support import clean_env, node_cli, run_cli, upstream_prompts
from tests.clients.conftest import BACKENDS, is_cloud
from tests.harness import DirectGateway

pytestmark = pytest.mark.clients

CODE_WORD = "PAPAYA-4242"


def claude_env(gw: DirectGateway, home: Path, **auth: str) -> dict[str, str]:
    return clean_env(
        home,
        {
            "ANTHROPIC_BASE_URL": gw.base_url,
            **(auth or {"ANTHROPIC_API_KEY": gw.api_key}),
            "DISABLE_TELEMETRY": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
        },
    )


def claude_json(gw: DirectGateway, tmp_path: Path, prompt: str, *extra: str, **auth: str) -> Any:
    """One `claude -p` run with `--output-format json`; its single result object."""
    claude = node_cli("claude")
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir(exist_ok=True)
    work.mkdir(exist_ok=True)
    run = run_cli(
        [str(claude), "-p", prompt, "--output-format", "json", *extra],
        env=claude_env(gw, home, **auth),
        cwd=work,
    )
    assert run.returncode == 0, run.explain()
    results = [line for line in run.json_lines() if line.get("type") == "result"]
    assert results, run.explain()
    return results[-1]


def test_plain_question(gw: DirectGateway, tmp_path: Path) -> None:
    gw.set_script([{"match": "capital of France", "reply": "Paris, said the gateway."}])
    result = claude_json(gw, tmp_path, "What is the capital of France?")
    assert result["is_error"] is False, result
    assert result["result"] == "Paris, said the gateway."
    assert result["num_turns"] == 1
    # Claude Code's own system prompt reached the account, with our tool instructions.
    prompts = upstream_prompts(gw)
    assert any("capital of France" in p and "Claude" in p for p in prompts), prompts[-1][:500]


@pytest.mark.parametrize("gw", BACKENDS, indirect=True)
def test_read_tool_turn(gw: DirectGateway, tmp_path: Path) -> None:
    """The model asks for Read; Claude Code runs it and the answer comes from the file."""
    (tmp_path / "work").mkdir()
    notes = tmp_path / "work" / "notes.txt"
    notes.write_text(f"The code word is {CODE_WORD}.\n")
    gw.set_script(
        [
            # Matches only once the file's content came back as Read's result.
            {"match": CODE_WORD, "reply": f"The file says the code word is {CODE_WORD}."},
            {
                "match": "code word",
                "reply": "Let me read the file.",
                "tool_call": {"name": "Read", "arguments": {"file_path": str(notes)}},
            },
        ]
    )
    result = claude_json(
        gw,
        tmp_path,
        "Read notes.txt and tell me the code word.",
        "--allowedTools",
        "Read",
        ANTHROPIC_AUTH_TOKEN=gw.api_key,  # the Bearer form, as with a gateway's token
    )
    assert result["is_error"] is False, result
    assert result["result"] == f"The file says the code word is {CODE_WORD}."
    assert result["num_turns"] == 2, json.dumps(result)[:2000]
    # Runtime backend: the result folded into the prompt; cloud: a structured tool message.
    marker = '"role": "tool"' if is_cloud(gw) else "Tool result for Read"
    assert any(marker in p and CODE_WORD in p for p in upstream_prompts(gw))
