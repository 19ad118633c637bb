"""LangChain's ChatOpenAI against the gateway: plain, streamed, and a tool round trip."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from tests.harness import Gateway

pytestmark = pytest.mark.clients


@tool
def get_weather(city: str) -> str:
    """Current weather for a city."""
    return f"windy in {city}"


@pytest.fixture
def chat(gw: Gateway) -> Iterator[ChatOpenAI]:
    yield ChatOpenAI(
        base_url=f"{gw.base_url}/v1",
        api_key=SecretStr(gw.api_key),
        model="gpt-4o-mini",
        max_retries=0,
        timeout=30,
    )


def test_invoke_and_stream(chat: ChatOpenAI) -> None:
    assert "You said: hello langchain" in str(chat.invoke("hello langchain").content)
    streamed = "".join(str(chunk.content) for chunk in chat.stream("stream langchain"))
    assert "You said: stream langchain" in streamed


def test_bind_tools_round_trip(gw: Gateway, chat: ChatOpenAI) -> None:
    gw.set_script(
        [
            {"match": "windy in Lisbon", "reply": "Lisbon is windy."},
            {
                "match": "weather",
                "tool_call": {"name": "get_weather", "arguments": {"city": "Lisbon"}},
            },
        ]
    )
    bound = chat.bind_tools([get_weather])
    messages: list[BaseMessage] = [HumanMessage("What's the weather in Lisbon?")]
    first = bound.invoke(messages)
    assert isinstance(first, AIMessage)
    [call] = first.tool_calls
    assert call["name"] == "get_weather" and call["args"] == {"city": "Lisbon"}
    messages += [first, ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])]
    assert bound.invoke(messages).content == "Lisbon is windy."
