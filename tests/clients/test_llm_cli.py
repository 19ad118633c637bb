"""Simon Willison's `llm` CLI with the gateway as an OpenAI-compatible model.

Configured the documented way: `extra-openai-models.yaml` and `keys.json` in a private
LLM_USER_PATH. Streaming, non-streaming, and a tool (`--functions`) that llm runs itself.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.clients.cli_support import CliRun, clean_env, run_cli
from tests.harness import DirectGateway

pytestmark = pytest.mark.clients

LLM = Path(sys.executable).parent / "llm"
WEATHER_FUNCTION = """
def get_weather(city: str) -> str:
    "Current weather for a city."
    return f"foggy in {city}"
"""


def llm_home(gw: DirectGateway, tmp_path: Path) -> Path:
    home = tmp_path / "llm"
    home.mkdir()
    (home / "extra-openai-models.yaml").write_text(
        "- model_id: lingma\n"
        "  model_name: auto\n"
        f'  api_base: "{gw.base_url}/v1"\n'
        "  api_key_name: lingma\n"
        "  supports_tools: true\n"
    )
    (home / "keys.json").write_text(json.dumps({"lingma": gw.api_key}))
    return home


def llm(gw: DirectGateway, tmp_path: Path, *args: str) -> CliRun:
    home = tmp_path / "llm"
    if not home.exists():
        llm_home(gw, tmp_path)
    env = clean_env(tmp_path, {"LLM_USER_PATH": str(home)})
    run = run_cli([str(LLM), *args], env=env, cwd=tmp_path)
    assert run.returncode == 0, run.explain()
    return run


def test_prompt_streaming_and_not(gw: DirectGateway, tmp_path: Path) -> None:
    assert "lingma" in llm(gw, tmp_path, "models", "list").stdout
    assert "You said: hello from llm" in llm(gw, tmp_path, "-m", "lingma", "hello from llm").stdout
    run = llm(gw, tmp_path, "-m", "lingma", "--no-stream", "hello again")
    assert "You said: hello again" in run.stdout


def test_tool_function(gw: DirectGateway, tmp_path: Path) -> None:
    gw.set_script(
        [
            {"match": "foggy in Oslo", "reply": "Oslo is foggy today."},
            {
                "match": "weather",
                "tool_call": {"name": "get_weather", "arguments": {"city": "Oslo"}},
            },
        ]
    )
    run = llm(
        gw, tmp_path, "-m", "lingma", "--functions", WEATHER_FUNCTION, "--td", "weather in Oslo?"
    )
    assert "Oslo is foggy today." in run.stdout, run.explain()
    assert "get_weather" in run.stdout + run.stderr  # --td: llm shows the call it ran
