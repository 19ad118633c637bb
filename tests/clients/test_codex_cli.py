"""Codex CLI (`codex exec`, the real npm CLI) with the gateway as a custom Responses provider.

The provider lives in a private CODEX_HOME/config.toml (wire_api = "responses", the key from
an environment variable). Codex sends its own model names, developer messages, `namespace`,
`web_search` and `additional_tools` tool declarations and `x-codex-*` headers. A tool turn
has the model call Codex's `exec_command`; Codex runs it and the final answer is scripted from
the command's output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.clients.cli_support import CliRun, clean_env, node_cli, run_cli, upstream_prompts
from tests.clients.conftest import BACKENDS
from tests.harness import DirectGateway

pytestmark = pytest.mark.clients

CODE_WORD = "MANGO-7319"


def codex_config(base_url: str, model: str | None) -> str:
    return "\n".join(
        [
            f'model = "{model}"' if model else "# no model: Codex's own default",
            'model_provider = "lgw"',
            "",
            "[model_providers.lgw]",
            'name = "lingma-gw"',
            f'base_url = "{base_url}/v1"',
            'env_key = "LGW_API_KEY"',
            'wire_api = "responses"',
            "",
        ]
    )


def codex_exec(
    gw: DirectGateway, tmp_path: Path, prompt: str, model: str | None = "gpt-5-codex"
) -> tuple[CliRun, list[dict[str, Any]]]:
    codex = node_cli("codex")
    home, codex_home, work = tmp_path / "home", tmp_path / "codex", tmp_path / "work"
    for directory in (home, codex_home, work):
        directory.mkdir(exist_ok=True)
    (codex_home / "config.toml").write_text(codex_config(gw.base_url, model))
    env = clean_env(home, {"CODEX_HOME": str(codex_home), "LGW_API_KEY": gw.api_key})
    run = run_cli(
        [str(codex), "exec", "--skip-git-repo-check", "--json", prompt], env=env, cwd=work
    )
    assert run.returncode == 0, run.explain()
    items = [
        e["item"] for e in run.json_lines() if e.get("type") == "item.completed" and "item" in e
    ]
    return run, items


def messages(items: list[dict[str, Any]]) -> list[str]:
    return [str(i.get("text")) for i in items if i.get("type") == "agent_message"]


def test_plain_question_with_codex_default_model(gw: DirectGateway, tmp_path: Path) -> None:
    """Codex's own default model sends its tools as an `additional_tools` input item."""
    gw.set_script([{"match": "capital of Italy", "reply": "Rome, said the gateway."}])
    run, items = codex_exec(gw, tmp_path, "What is the capital of Italy?", model=None)
    assert messages(items) == ["Rome, said the gateway."], run.explain()


@pytest.mark.parametrize("gw", BACKENDS, indirect=True)
def test_exec_command_tool_turn(gw: DirectGateway, tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "notes.txt").write_text(f"The code word is {CODE_WORD}.\n")
    gw.set_script(
        [
            # Matches only once the command's output came back as the tool's result.
            {"match": CODE_WORD, "reply": f"The file says the code word is {CODE_WORD}."},
            {
                "match": "code word",
                "reply": "Let me look.",
                "tool_call": {"name": "exec_command", "arguments": {"cmd": "cat notes.txt"}},
            },
        ]
    )
    run, items = codex_exec(gw, tmp_path, "Read notes.txt and tell me the code word.")
    commands = [i for i in items if i.get("type") == "command_execution"]
    assert commands and CODE_WORD in str(commands[0].get("aggregated_output")), run.explain()
    assert commands[0].get("exit_code") == 0
    assert messages(items)[-1] == f"The file says the code word is {CODE_WORD}.", run.explain()
    assert any(CODE_WORD in p for p in upstream_prompts(gw))
