"""LangChain's ChatOpenAI against the gateway: plain, streamed, a tool round trip, and
`with_structured_output`, which forces a tool call and so must get one even from prose."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, SecretStr

from tests.clients.conftest import BACKENDS
from tests.harness import DirectGateway

pytestmark = pytest.mark.clients


@tool
def get_weather(city: str) -> str:
    """Current weather for a city."""
    return f"windy in {city}"


class Weather(BaseModel):
    """The weather in a city."""

    city: str
    unit: Literal["c", "f"]


RETRY = "did not call a tool"  # in the gateway's stricter retry instruction


@pytest.fixture
def chat(gw: DirectGateway) -> Iterator[ChatOpenAI]:
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


@pytest.mark.parametrize("gw", BACKENDS, indirect=True)
def test_bind_tools_round_trip(gw: DirectGateway, chat: ChatOpenAI) -> None:
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


@pytest.mark.parametrize("streamed", [False, True], ids=["invoke", "stream"])
def test_structured_output_from_a_model_that_first_answers_in_prose(
    gw: DirectGateway, chat: ChatOpenAI, streamed: bool
) -> None:
    arguments = {"city": "Lisbon", "unit": "c"}
    gw.set_script(
        [
            {"match": RETRY, "tool_call": {"name": "Weather", "arguments": arguments}},
            {"match": "Lisbon", "reply": "Lisbon is windy, about 18 degrees."},
        ]
    )
    structured = chat.with_structured_output(Weather, method="function_calling")
    question = "What is the weather in Lisbon?"
    result = list(structured.stream(question))[-1] if streamed else structured.invoke(question)
    assert result == Weather(city="Lisbon", unit="c")


def test_structured_output_built_from_json_in_two_prose_replies(
    gw: DirectGateway, chat: ChatOpenAI
) -> None:
    gw.set_script(
        [
            {"match": RETRY, "reply": "I cannot call tools."},
            {"match": "Oslo", "reply": 'It is {"city": "Oslo", "unit": "f"} as JSON.'},
        ]
    )
    structured = chat.with_structured_output(Weather, method="function_calling")
    assert structured.invoke("Weather in Oslo?") == Weather(city="Oslo", unit="f")
