"""A corpus of model outputs for the emulated tool-call parser, whole and split at every point."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from front.tool_stream import Segment, ToolTextParser, parse_tool_text
from front.tools import (
    ACTION_FENCE_OPEN,
    ParsedCall,
    ToolNames,
    calls_from_json,
    render_tool_call,
    tool_instructions,
)
from protocol.chat import ToolSpec

pytestmark = pytest.mark.unit

NAMES = ToolNames(["get_weather", "search_files", "list_dir"])
WEATHER = ParsedCall("get_weather", {"city": "Paris"})
SEARCH = ParsedCall("search_files", {"pattern": "*.py", "limit": 3})


@dataclass(frozen=True)
class Case:
    name: str
    text: str
    expected: list[Segment]


CORPUS = [
    Case("plain prose", "Hello, world. No tools here.", ["Hello, world. No tools here."]),
    Case("rendered call", render_tool_call("get_weather", {"city": "Paris"}), [WEATHER]),
    Case(
        "prose then action fence",
        "Let me check.\n\n```json action\n"
        '{"tool": "get_weather", "parameters": {"city": "Paris"}}\n```',
        ["Let me check.", WEATHER],
    ),
    Case(
        "two calls",
        render_tool_call("get_weather", {"city": "Paris"})
        + "\n"
        + render_tool_call("search_files", {"pattern": "*.py", "limit": 3}),
        [WEATHER, SEARCH],
    ),
    Case(
        "plain json fence",
        '```json\n{"tool": "get_weather", "parameters": {"city": "Paris"}}\n```',
        [WEATHER],
    ),
    Case(
        "bare fence without language",
        '```\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```',
        [WEATHER],
    ),
    Case(
        "bare object tool/parameters",
        'Sure: {"tool": "get_weather", "parameters": {"city": "Paris"}} done',
        ["Sure:", WEATHER, " done"],
    ),
    Case(
        "bare object name/arguments as JSON string",
        '{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}',
        [WEATHER],
    ),
    Case(
        "openai style function object",
        '{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}',
        [WEATHER],
    ),
    Case(
        "list of calls in one fence",
        '```json\n[{"tool": "get_weather", "parameters": {"city": "Paris"}},'
        ' {"tool": "search_files", "parameters": {"pattern": "*.py", "limit": 3}}]\n```',
        [WEATHER, SEARCH],
    ),
    Case(
        "tool_calls wrapper",
        '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}',
        [WEATHER],
    ),
    Case(
        "fuzzy name",
        '```json action\n{"tool": "Get-Weather", "parameters": {"city": "Paris"}}\n```',
        [WEATHER],
    ),
    Case(
        "functions. prefix",
        '{"tool": "functions.get_weather", "parameters": {"city": "Paris"}}',
        [WEATHER],
    ),
    Case(
        "missing parameters means no arguments",
        '```json action\n{"tool": "list_dir"}\n```',
        [ParsedCall("list_dir", {})],
    ),
    Case(
        "unknown tool stays text",
        '```json action\n{"tool": "rm_rf", "parameters": {}}\n```',
        ['```json action\n{"tool": "rm_rf", "parameters": {}}\n```'],
    ),
    Case(
        "invalid json in fence stays text",
        '```json action\n{"tool": "get_weather", "parameters": {"city": }\n```',
        ['```json action\n{"tool": "get_weather", "parameters": {"city": }\n```'],
    ),
    Case(
        "unterminated fence stays text",
        'Here: ```json action\n{"tool": "get_weather", "parameters": {"city": "Pa',
        ['Here: ```json action\n{"tool": "get_weather", "parameters": {"city": "Pa'],
    ),
    Case(
        "unbalanced bare object stays text",
        'config {"a": {"b": 1}',
        ['config {"a": {"b": 1}'],
    ),
    Case(
        "data json is not a call",
        'The result is {"name": "Bob", "age": 3}.',
        ['The result is {"name": "Bob", "age": 3}.'],
    ),
    Case(
        "python code fence streams as text",
        "Code:\n```python\ndef f():\n    return {'tool': 1}\n```\nEnd.",
        ["Code:\n```python\ndef f():\n    return {'tool': 1}\n```\nEnd."],
    ),
    Case(
        "code fence containing a call is not a call",
        '```python\nx = {"tool": "get_weather", "parameters": {}}\n```',
        ['```python\nx = {"tool": "get_weather", "parameters": {}}\n```'],
    ),
    Case(
        "braces and quotes inside strings",
        '{"tool": "search_files", "parameters": {"pattern": "a}\\"{b", "limit": 3}}',
        [ParsedCall("search_files", {"pattern": 'a}"{b', "limit": 3})],
    ),
    Case("brace without quote is text", "f(x) = {x | x > 0}", ["f(x) = {x | x > 0}"]),
    Case("single backticks are text", "use `ls` and ``pwd``", ["use `ls` and ``pwd``"]),
    Case(
        "inline triple backticks are text",
        "a ```b``` c",
        ["a ```b``` c"],
    ),
    Case(
        "whitespace between calls dropped",
        render_tool_call("get_weather", {"city": "Paris"}) + "\n\n",
        [WEATHER],
    ),
    Case("whitespace-only reply kept", "\n  \n", ["\n  \n"]),
    Case(
        "prose after a call",
        render_tool_call("get_weather", {"city": "Paris"}) + "\nI will wait for the result.",
        [WEATHER, "\nI will wait for the result."],
    ),
    Case(
        "unicode arguments",
        '```json action\n{"tool": "get_weather", "parameters": {"city": "北京"}}\n```',
        [ParsedCall("get_weather", {"city": "北京"})],
    ),
]


def merged(segments: list[Segment]) -> list[Segment]:
    out: list[Segment] = []
    for segment in segments:
        if isinstance(segment, str) and out and isinstance(out[-1], str):
            out[-1] += segment
        elif segment != "":
            out.append(segment)
    return out


def feed_chunks(chunks: list[str]) -> list[Segment]:
    parser = ToolTextParser(NAMES)
    out: list[Segment] = []
    for chunk in chunks:
        out += parser.feed(chunk)
    return merged(out + parser.finish())


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.name)
def test_whole_text(case: Case) -> None:
    assert merged(parse_tool_text(case.text, NAMES)) == case.expected


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.name)
def test_every_two_way_split(case: Case) -> None:
    for cut in range(len(case.text) + 1):
        got = feed_chunks([case.text[:cut], case.text[cut:]])
        assert got == case.expected, f"split at {cut}"


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.name)
def test_character_by_character(case: Case) -> None:
    assert feed_chunks(list(case.text)) == case.expected


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_random_chunking_matches_whole(data: st.DataObject) -> None:
    case = data.draw(st.sampled_from(CORPUS))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(case.text)), max_size=8)))
    pieces = [case.text[a:b] for a, b in zip([0, *cuts], [*cuts, len(case.text)], strict=True)]
    assert feed_chunks(pieces) == case.expected


def test_text_before_a_candidate_is_released_immediately() -> None:
    parser = ToolTextParser(NAMES)
    # Trailing whitespace waits: it is dropped if a call follows.
    assert parser.feed("Checking the weather ") == ["Checking the weather"]
    assert parser.feed("```js") == []  # may be the start of a call: held
    assert parser.feed("on action\n") == []
    body = '{"tool": "get_weather", "parameters": {"city": "Paris"}}\n```'
    assert parser.feed(body) == [WEATHER]


def test_foreign_fence_streams_while_open() -> None:
    parser = ToolTextParser(NAMES)
    assert parser.feed("```python\n") == ["```python"]
    assert parser.feed("print(1)\n") == ["\nprint(1)"]
    assert parser.feed("```") == ["\n```"]


def test_calls_seen_counts() -> None:
    parser = ToolTextParser(NAMES)
    parser.feed(render_tool_call("get_weather", {"city": "Paris"}))
    parser.finish()
    assert parser.calls_seen == 1


def test_calls_from_json_rejects_mixed_lists() -> None:
    text = '[{"tool": "get_weather", "parameters": {}}, {"x": 1}]'
    assert calls_from_json(text, NAMES) is None


def test_instructions_teach_the_exact_fence() -> None:
    tools = [ToolSpec(name="get_weather", description="Weather by city", parameters_json="{}")]
    text = tool_instructions(tools, "get_weather")
    assert ACTION_FENCE_OPEN in text
    assert "get_weather: Weather by city" in text
    assert "You MUST call the tool `get_weather`" in text
    assert "at least one tool" in tool_instructions(tools, "required")
