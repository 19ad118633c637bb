"""A forced tool choice: one retry, then a call built from the replies where the schema allows."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Callable

import pytest

from front.errors import ApiError, ApiFlavor, ErrorKind
from front.forced import call_from_replies, fits, needs_call, reply_with_call, retry_plan
from front.pipeline import FrontEvent, Outcome
from front.plan import ChatPlan
from front.tools import ParsedCall, render_tool_call
from protocol.chat import Delta, Message, Reasoning, ToolCall, ToolSpec

pytestmark = pytest.mark.unit

CITY_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city"],
}
WEATHER = ToolSpec(name="get_weather", parameters_json=json.dumps(CITY_SCHEMA))
ANSWER = ToolSpec(
    name="final_answer",
    parameters_json=json.dumps(
        {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
    ),
)
PING = ToolSpec(name="ping", parameters_json="{}")
FORECAST = ToolSpec(
    name="forecast", parameters_json=json.dumps({**CITY_SCHEMA, "required": ["city", "days"]})
)


def plan(tools: list[ToolSpec], choice: str) -> ChatPlan:
    return ChatPlan(
        api=ApiFlavor.OPENAI,
        model="m",
        messages=[Message(role="user", text="weather in Paris?")],
        tools=tools,
        tool_choice=choice,
    )


Item = FrontEvent | Outcome | str


Ask = Callable[[ChatPlan], AsyncGenerator[Item, None]]


def scripted(*replies: list[Item]) -> tuple[list[ChatPlan], Ask]:
    """An `ask` that answers each call with the next scripted reply; records the plans."""
    asked: list[ChatPlan] = []

    async def ask(p: ChatPlan) -> AsyncGenerator[Item, None]:
        asked.append(p)
        for item in replies[len(asked) - 1]:
            yield item

    return asked, ask


def prose(text: str, prompt_tokens: int = 7) -> list[Item]:
    return [Delta(id=0, text=text), Outcome(finish_reason="stop", prompt_tokens=prompt_tokens)]


async def run(p: ChatPlan, *replies: list[Item]) -> tuple[list[Item], list[ChatPlan]]:
    asked, ask = scripted(*replies)
    items = [item async for item in reply_with_call(p, ask)]
    return items, asked


def calls(items: list[Item]) -> list[tuple[str, dict[str, object]]]:
    return [(i.name, json.loads(i.arguments_json)) for i in items if isinstance(i, ToolCall)]


def test_only_named_or_required_choices_need_a_call() -> None:
    assert needs_call(plan([WEATHER], "get_weather")) and needs_call(plan([WEATHER], "required"))
    assert not needs_call(plan([WEATHER], "auto")) and not needs_call(plan([WEATHER], "none"))


async def test_a_call_on_the_first_ask_needs_no_retry() -> None:
    call = ToolCall(id=0, call_id="call_1", name="get_weather", arguments_json='{"city":"Paris"}')
    done = Outcome(finish_reason="tool_calls")
    items, asked = await run(plan([WEATHER], "get_weather"), [call, done])
    assert len(asked) == 1 and items == [call, done]


async def test_a_reply_that_is_only_the_arguments_is_the_call() -> None:
    items, asked = await run(plan([WEATHER], "get_weather"), prose('{"city": "Paris"}'))
    assert len(asked) == 1 and calls(items) == [("get_weather", {"city": "Paris"})]
    assert isinstance(items[-1], Outcome) and items[-1].finish_reason == "tool_calls"


async def test_prose_is_retried_with_the_prose_and_a_stricter_instruction() -> None:
    retried = [Reasoning(id=0, text="hmm"), *prose(render_tool_call("get_weather", {}))]
    call = ToolCall(id=0, call_id="call_2", name="get_weather", arguments_json='{"city":"Nice"}')
    items, asked = await run(
        plan([WEATHER], "get_weather"),
        prose("It is sunny.", prompt_tokens=7),
        [retried[0], call, Outcome(finish_reason="tool_calls", prompt_tokens=30, total_ms=2.0)],
    )
    assert [m.role for m in asked[1].messages] == ["user", "assistant", "user"]
    assert asked[1].messages[1].text == "It is sunny."
    assert "did not call a tool" in asked[1].messages[2].text
    assert "get_weather" in asked[1].messages[2].text
    assert not [i for i in items if isinstance(i, Delta)]  # the prose never reaches the client
    assert items[:2] == [Reasoning(id=0, text="hmm"), call]
    outcome = items[-1]
    assert isinstance(outcome, Outcome)
    assert (outcome.finish_reason, outcome.prompt_tokens) == ("tool_calls", 7)


async def test_two_prose_replies_become_a_call_when_the_text_holds_fitting_json() -> None:
    items, _ = await run(
        plan([WEATHER], "required"),
        prose('Sure. The arguments are {"city": "Paris", "days": 2}, as asked.'),
        prose("I cannot call tools."),
    )
    assert calls(items) == [("get_weather", {"city": "Paris", "days": 2})]


async def test_two_prose_replies_with_nothing_to_build_from_are_an_error() -> None:
    with pytest.raises(ApiError) as caught:
        await run(plan([FORECAST], "forecast"), prose("It is sunny."), prose("Really."))
    assert caught.value.kind is ErrorKind.UPSTREAM and "'forecast'" in caught.value.message


def test_retry_plan_without_prose_adds_only_the_instruction() -> None:
    again = retry_plan(plan([WEATHER], "required"), "  ")
    assert [m.role for m in again.messages] == ["user", "user"]
    assert "most appropriate" in again.messages[-1].text


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"city": "Paris"}, True),
        ({"city": "Paris", "days": 3}, True),
        ({"days": 3}, False),  # a required key is missing
        ({"city": 3}, False),  # a declared type is wrong
        ({"city": "Paris", "days": True}, False),  # a boolean is not an integer
        ({"name": "x", "age": 3}, False),
    ],
)
def test_fits(arguments: dict[str, object], expected: bool) -> None:
    assert fits(arguments, CITY_SCHEMA) is expected


def test_fits_honours_additional_properties_false() -> None:
    schema = {**CITY_SCHEMA, "additionalProperties": False}
    assert not fits({"city": "Paris", "extra": 1}, schema)


def test_a_single_required_string_parameter_gets_the_first_reply() -> None:
    built = call_from_replies("Fine.", "Paris is sunny today.", plan([ANSWER], "final_answer"))
    assert built == ParsedCall("final_answer", {"text": "Paris is sunny today."})
    built = call_from_replies("Fine.", "", plan([ANSWER], "final_answer"))
    assert built == ParsedCall("final_answer", {"text": "Fine."})


def test_two_required_parameters_are_not_guessed_from_prose() -> None:
    assert call_from_replies("Fine.", "Paris, two days.", plan([FORECAST], "forecast")) is None


def test_json_in_the_retry_wins_over_json_in_the_first_reply() -> None:
    built = call_from_replies(
        '```json\n{"city": "Nice"}\n```', '{"city": "Paris"}', plan([WEATHER], "get_weather")
    )
    assert built == ParsedCall("get_weather", {"city": "Nice"})


def test_a_call_shaped_object_in_prose_names_its_tool() -> None:
    text = 'Calling {"name": "final_answer", "arguments": {"text": "hi"}} now'
    built = call_from_replies(text, "", plan([WEATHER, ANSWER], "required"))
    assert built == ParsedCall("final_answer", {"text": "hi"})


def test_a_tool_without_parameters_is_called_with_none() -> None:
    assert call_from_replies("no", "no", plan([PING], "ping")) == ParsedCall("ping", {})


def test_required_among_several_tools_builds_only_from_fitting_json() -> None:
    assert call_from_replies("no", "It is sunny.", plan([WEATHER, ANSWER], "required")) is None
