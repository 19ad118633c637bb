"""The event pipeline: tool calls out of text, tool_choice policy, stop sequences, token budget."""

from __future__ import annotations

import pytest

from front.errors import ApiFlavor
from front.limits import LimitHit, OutputLimiter
from front.pipeline import EventPipeline, FrontEvent, Outcome
from front.plan import ChatPlan
from front.tools import render_tool_call
from protocol.chat import Delta, Finish, FinishReason, Message, Reasoning, ToolCall, ToolSpec, Usage
from protocol.tokens import estimate_messages_tokens

pytestmark = pytest.mark.unit

WEATHER = ToolSpec(name="get_weather", description="", parameters_json="{}")


def plan(**kw: object) -> ChatPlan:
    base: dict[str, object] = {
        "api": ApiFlavor.OPENAI,
        "model": "m",
        "messages": [Message(role="user", text="x" * 40)],
    }
    return ChatPlan(**(base | kw))  # type: ignore[arg-type]


def run(
    p: ChatPlan, chunks: list[str], finish: Finish | None = None
) -> tuple[list[FrontEvent], Outcome]:
    pipeline = EventPipeline(p)
    out: list[FrontEvent] = []
    for chunk in chunks:
        out += pipeline.feed(Delta(id=1, text=chunk))
        if pipeline.limited:
            break
    tail, outcome = pipeline.finish(finish)
    return out + tail, outcome


def text_of(events: list[FrontEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, Delta))


def test_plain_text_passes_through_unchanged() -> None:
    events, outcome = run(
        plan(),
        ["Hel", "lo"],
        Finish(id=1, usage=Usage(prompt_tokens=7, completion_tokens=2), served_by="a"),
    )
    assert [e.text for e in events if isinstance(e, Delta)] == ["Hel", "lo"]
    assert outcome.finish_reason == "stop"
    assert (outcome.prompt_tokens, outcome.completion_tokens, outcome.served_by) == (7, 2, "a")


def test_usage_is_estimated_when_the_worker_reports_none() -> None:
    p = plan()
    _, outcome = run(p, ["x" * 10], Finish(id=1))
    assert outcome.prompt_tokens == estimate_messages_tokens(p.messages) == 10
    assert outcome.completion_tokens == 3


def test_tool_call_is_extracted_with_an_id() -> None:
    call = render_tool_call("get_weather", {"city": "Paris"})
    events, outcome = run(
        plan(tools=[WEATHER]), ["I'll check.\n", call[:10], call[10:]], Finish(id=1)
    )
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert calls[0].arguments_json == '{"city":"Paris"}'
    assert calls[0].call_id.startswith("call_") and len(calls[0].call_id) == 29
    assert text_of(events) == "I'll check."
    assert outcome.finish_reason == "tool_calls"


def test_tool_choice_none_does_not_parse() -> None:
    call = render_tool_call("get_weather", {"city": "Paris"})
    events, outcome = run(plan(tools=[WEATHER], tool_choice="none"), [call], Finish(id=1))
    assert text_of(events) == call and outcome.finish_reason == "stop"


def test_forced_tool_holds_text_until_the_end() -> None:
    p = plan(tools=[WEATHER], tool_choice="get_weather")
    pipeline = EventPipeline(p)
    assert pipeline.feed(Delta(id=1, text='{"city": ')) == []
    assert pipeline.feed(Delta(id=1, text='"Paris"}')) == []
    tail, _ = pipeline.finish(Finish(id=1))
    assert text_of(tail) == '{"city": "Paris"}'


def test_forced_tool_drops_prose_around_a_call() -> None:
    p = plan(tools=[WEATHER], tool_choice="required")
    call = render_tool_call("get_weather", {"city": "Paris"})
    events, _ = run(p, ["Sure!\n", call, "\nDone."], Finish(id=1))
    assert [type(e) for e in events] == [ToolCall]


def test_required_without_a_call_returns_the_text() -> None:
    p = plan(tools=[WEATHER, ToolSpec(name="other")], tool_choice="required")
    events, outcome = run(p, ["I cannot."], Finish(id=1))
    assert text_of(events) == "I cannot." and outcome.finish_reason == "stop"


def test_native_tool_calls_only_for_declared_tools() -> None:
    pipeline = EventPipeline(plan(tools=[WEATHER]))
    assert pipeline.feed(ToolCall(id=1, call_id="x", name="read_file")) == []
    [call] = pipeline.feed(ToolCall(id=1, call_id="x", name="get_weather", arguments_json="{}"))
    assert isinstance(call, ToolCall) and call.call_id != "x"


def test_reasoning_passes_through() -> None:
    pipeline = EventPipeline(plan())
    assert pipeline.feed(Reasoning(id=1, text="hmm")) == [Reasoning(id=1, text="hmm")]


def test_stop_sequence_cuts_and_reports() -> None:
    events, outcome = run(plan(stop=["END"]), ["abc E", "ND def"])
    assert text_of(events) == "abc " and outcome.finish_reason == "stop_sequence"
    assert outcome.stop_sequence == "END"


def test_max_tokens_budget_truncates() -> None:
    events, outcome = run(plan(max_tokens=2), ["0123", "4567", "89"])
    assert text_of(events) == "01234567" and outcome.finish_reason == "length"


def test_worker_length_finish_maps_to_length() -> None:
    _, outcome = run(plan(), ["x"], Finish(id=1, reason=FinishReason.LENGTH))
    assert outcome.finish_reason == "length"


def test_limiter_holds_only_a_possible_prefix() -> None:
    limiter = OutputLimiter(["STOP"], None)
    assert limiter.feed("abc ST") == "abc "
    assert limiter.feed("ART") == "START"
    assert limiter.feed("xS") == "x"
    assert limiter.flush() == "S"
    assert limiter.hit is None


def test_limiter_earliest_stop_wins() -> None:
    limiter = OutputLimiter(["b", "a"], None)
    assert limiter.feed("xab") == "x"
    assert limiter.hit is LimitHit.STOP_SEQUENCE and limiter.stop_sequence == "a"
    assert limiter.feed("more") == ""
