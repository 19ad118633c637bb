"""Runs in the front: a forced tool choice ends in a tool call or a clear error, never in prose.

With `tool_choice` naming a function, or `required`, clients (LangChain's
`with_structured_output`, agents) cannot use a plain-text answer. The runtime has no native
notion of a forced call (lingma-protocol.md §9.2: client tools are emulated in text), so a
model may answer in prose anyway. Then, as lingma-proxy does (`applyToolEmulation`,
docs/tool-emulation-methodology.md "Retry Guidance"):

1. one retry, asking again with the prose as the assistant's turn and a stricter instruction
   as a new user turn. On the worker that first answer's upstream session continues (a
   session-cache hit on the same account), so the model sees what it wrote, like lingma-proxy's
   retry on the same ACP session;
2. if the retry is prose too, the call is built from the replies where the tool's JSON Schema
   allows it: a JSON object in the text that fits the schema, or, for a tool whose only
   required parameter is a string, the first reply's text (it answers the user's question;
   the retry's answers our instruction);
3. else a 502 that says so.

Prose is never shown: streamed clients see reasoning as it comes and the call at the end.
Each ask is a whole `run_chat` (admission, routing, retries on another worker), within the
request's one deadline; the same affinity normally brings the retry to the same account.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec

from front.errors import ApiError, ErrorKind
from front.pipeline import FrontEvent, Outcome, new_call_id
from front.plan import ChatPlan
from front.tools import ParsedCall, ToolNames, calls_from_json, forced_call_instruction
from protocol.chat import ChatTurn, Delta, Message, Reasoning, ToolCall, ToolSpec

Marker = TypeVar("Marker")  # the relay's RESTART: passed through, and the attempt starts over

_FENCED = re.compile(r"```[^\n`]*\n(.*?)\n?```", flags=re.DOTALL)
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "null": (type(None),),
}
MAX_OBJECT_STARTS = 64  # `{` positions tried per reply: prose with many braces stays cheap


def needs_call(plan: ChatPlan) -> bool:
    return plan.parses_tools and plan.tool_choice not in ("auto", "none")


@dataclass(slots=True)
class _Attempt:
    prose: list[str] = field(default_factory=list)
    calls: int = 0
    outcome: Outcome | None = None

    @property
    def text(self) -> str:
        return "".join(self.prose)


Items = AsyncGenerator[FrontEvent | Outcome | Marker, None]


async def reply_with_call(
    plan: ChatPlan, ask: Callable[[ChatPlan], Items[Marker]]
) -> Items[Marker]:
    """`ask(plan)`'s events, held and completed so that the reply is a tool call."""
    first = _Attempt()
    async for item in _relayed(ask(plan), first):
        yield item
    if first.calls:
        yield _outcome(first)
        return
    strict = _whole_reply_call(first.text, plan)  # a reply that is only the arguments
    if strict is not None:
        yield _event(strict, plan)
        yield _outcome(first, calls=True)
        return
    second = _Attempt()
    async for item in _relayed(ask(retry_plan(plan, first.text)), second):
        yield item
    built = None if second.calls else call_from_replies(second.text, first.text, plan)
    if not second.calls and built is None:
        raise ApiError(ErrorKind.UPSTREAM, _no_call_message(plan))
    if built is not None:
        yield _event(built, plan)
    yield _merged(first, second)


async def _relayed(items: Items[Marker], attempt: _Attempt) -> Items[Marker]:
    """Pass reasoning and calls on; keep text and the outcome in `attempt`."""
    async with contextlib.aclosing(items):  # a client that leaves cancels the worker's answer
        async for item in items:
            if type(item) is Delta:
                attempt.prose.append(item.text)
            elif isinstance(item, Outcome):
                attempt.outcome = item
            else:
                if isinstance(item, ToolCall):
                    attempt.calls += 1
                elif not isinstance(item, Reasoning):  # RESTART: the worker was lost
                    attempt.prose.clear()
                    attempt.calls = 0
                yield item


def retry_plan(plan: ChatPlan, prose: str) -> ChatPlan:
    turns = [Message(role="assistant", text=prose)] if prose.strip() else []
    turns.append(Message(role="user", text=forced_call_instruction(plan.tool_choice)))
    structured = [ChatTurn(role=t.role, text=t.text) for t in turns]  # cloud workers read these
    return dataclasses.replace(
        plan, messages=[*plan.messages, *turns], turns=[*plan.turns, *structured]
    )


def _eligible(plan: ChatPlan) -> list[ToolSpec]:
    forced = plan.forced_tool
    return [t for t in plan.tools if t.name == forced] if forced else list(plan.tools)


def _schema(tool: ToolSpec) -> dict[str, Any]:
    try:
        schema = msgspec.json.decode(tool.parameters_json)
    except msgspec.DecodeError:
        return {}
    return schema if isinstance(schema, dict) else {}


def fits(arguments: dict[str, Any], schema: dict[str, Any]) -> bool:
    """Do `arguments` plausibly answer `schema`? Required keys present, declared types right."""
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    required = schema.get("required")
    if isinstance(required, list) and any(key not in arguments for key in required):
        return False
    if properties and not set(arguments) & set(properties):
        return False  # an unrelated object that happens to be in the text
    if schema.get("additionalProperties") is False and set(arguments) - set(properties):
        return False
    return all(_type_ok(value, properties.get(key)) for key, value in arguments.items())


def _type_ok(value: Any, schema: Any) -> bool:
    declared = schema.get("type") if isinstance(schema, dict) else None
    names = declared if isinstance(declared, list) else [declared] if declared else []
    kinds = tuple(kind for name in names for kind in _JSON_TYPES.get(str(name), ()))
    if not kinds:
        return True
    if isinstance(value, bool) and bool not in kinds:
        return False
    return isinstance(value, kinds)


def _whole_reply_call(text: str, plan: ChatPlan) -> ParsedCall | None:
    """A reply that is nothing but a JSON object (maybe fenced) fitting the one eligible tool."""
    body = text.strip()
    fenced = _FENCED.fullmatch(body)
    if fenced:
        body = fenced.group(1).strip()
    if not body.startswith("{"):
        return None
    return _object_call(body, _eligible(plan))


def call_from_replies(retry_text: str, first_text: str, plan: ChatPlan) -> ParsedCall | None:
    """The call the schema lets us build from two prose replies, or None."""
    eligible = _eligible(plan)
    for text in (retry_text, first_text):
        for candidate in _json_objects(text):
            call = _object_call(candidate, eligible)
            if call is not None:
                return call
    if len(eligible) != 1:
        return None
    tool, schema = eligible[0], _schema(eligible[0])
    if not schema.get("properties") and not schema.get("required"):
        return ParsedCall(tool.name, {})  # a tool without parameters: calling it is the answer
    string_parameter = _single_required_string(schema)
    answer = first_text.strip() or retry_text.strip()
    if string_parameter is None or not answer:
        return None
    return ParsedCall(tool.name, {string_parameter: answer})


def _single_required_string(schema: dict[str, Any]) -> str | None:
    required = schema.get("required")
    properties = schema.get("properties")
    if not (isinstance(required, list) and len(required) == 1 and isinstance(properties, dict)):
        return None
    name = required[0]
    declared = properties.get(name)
    is_string = isinstance(declared, dict) and declared.get("type") == "string"
    return name if is_string and isinstance(name, str) else None


def _object_call(source: str, eligible: Sequence[ToolSpec]) -> ParsedCall | None:
    """A JSON object's text as a call: a call-shaped object naming an eligible tool, or bare
    arguments that fit exactly one eligible tool's schema."""
    names = ToolNames(t.name for t in eligible)
    calls = calls_from_json(source, names)
    if calls and len(calls) == 1:
        return calls[0]
    try:
        arguments = msgspec.json.decode(source)
    except msgspec.DecodeError:
        return None
    if not isinstance(arguments, dict):
        return None
    matching = [t for t in eligible if fits(arguments, _schema(t))]
    return ParsedCall(matching[0].name, arguments) if len(matching) == 1 else None


def _json_objects(text: str) -> list[str]:
    """The texts of the top-level JSON objects in `text`, fenced blocks first, in order."""
    found = [m.group(1).strip() for m in _FENCED.finditer(text)]
    decoder = json.JSONDecoder()
    position, starts = 0, 0
    while starts < MAX_OBJECT_STARTS:
        start = text.find("{", position)
        if start == -1:
            break
        starts += 1
        try:
            _, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            position = start + 1
            continue
        found.append(text[start:end])
        position = end
    return [candidate for candidate in found if candidate.startswith("{")]


def _event(call: ParsedCall, plan: ChatPlan) -> ToolCall:
    return ToolCall(
        id=0,
        call_id=new_call_id(plan.call_id_prefix),
        name=call.name,
        arguments_json=msgspec.json.encode(call.arguments).decode(),
    )


def _outcome(attempt: _Attempt, *, calls: bool = False) -> Outcome:
    outcome = attempt.outcome or Outcome(finish_reason="stop")
    return msgspec.structs.replace(outcome, finish_reason="tool_calls") if calls else outcome


def _merged(first: _Attempt, second: _Attempt) -> Outcome:
    """The client asked once: its prompt's count, the retry's answer, both attempts' time."""
    one, two = _outcome(first), _outcome(second)
    return msgspec.structs.replace(
        two,
        finish_reason="tool_calls",
        prompt_tokens=one.prompt_tokens,
        first_token_ms=one.first_token_ms,
        total_ms=one.total_ms + two.total_ms,
    )


def _no_call_message(plan: ChatPlan) -> str:
    wanted = "a tool" if plan.forced_tool is None else f"the tool {plan.forced_tool!r}"
    return (
        f"tool_choice requires a call to {wanted}, but the model answered in prose twice "
        "(a retry with a stricter instruction included) and no call could be built from its "
        "text for the tool's parameters"
    )
