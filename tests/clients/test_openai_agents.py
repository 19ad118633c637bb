"""The OpenAI Agents SDK: a tool-using agent run over Responses and over Chat Completions.

Tracing is off (it would upload spans to OpenAI); the SDK's own client is pointed at the
gateway, so nothing leaves this machine.
"""

from __future__ import annotations

from typing import Any

import pytest
from agents import (
    Agent,
    Model,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from openai import AsyncOpenAI

from tests.harness import DirectGateway

pytestmark = pytest.mark.clients

RULES: list[dict[str, Any]] = [
    {"match": "rainy in Bergen", "reply": "Bergen is rainy, as ever."},
    {"match": "weather", "tool_call": {"name": "get_weather", "arguments": {"city": "Bergen"}}},
]


@pytest.mark.parametrize("api", ["responses", "chat_completions"])
async def test_agent_calls_its_tool(gw: DirectGateway, api: str) -> None:
    set_tracing_disabled(True)
    gw.set_script(RULES)
    cities: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Current weather for a city."""
        cities.append(city)
        return f"rainy in {city}"

    async with AsyncOpenAI(
        base_url=f"{gw.base_url}/v1", api_key=gw.api_key, max_retries=0, timeout=30
    ) as client:
        model: Model = (
            OpenAIResponsesModel(model="gpt-4.1", openai_client=client)
            if api == "responses"
            else OpenAIChatCompletionsModel(model="gpt-4.1", openai_client=client)
        )
        agent = Agent(
            name="forecaster", instructions="Answer weather questions.", tools=[get_weather],
            model=model,
        )  # fmt: skip
        result = await Runner.run(agent, "What is the weather in Bergen?", max_turns=4)
        assert result.final_output == "Bergen is rainy, as ever."
        assert cities == ["Bergen"]
        streamed = Runner.run_streamed(agent, "And the weather tomorrow?", max_turns=4)
        async for _ in streamed.stream_events():
            pass
        assert streamed.final_output == "Bergen is rainy, as ever."
        assert cities == ["Bergen", "Bergen"]
