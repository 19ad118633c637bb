"""Runs in the worker: native tool-call fragments assembled into whole calls (§14.8).

Fragments are keyed by `index`; the first usually carries `id`, `type` and the name, the later
ones only argument pieces, concatenated in arrival order. Variants handled: the id arriving
after the name (QD, Kimi), a fragment without `index` (matched by id, else the latest call),
a missing id (synthesised, as LP and TAP do), and arguments that are not a JSON object
(kept as `{"raw_arguments": text}` like LP, so every API can still render an object).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import msgspec

from worker.cloud.sse import ToolFragment

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder()


@dataclass(frozen=True)
class AssembledCall:
    call_id: str
    name: str
    arguments_json: str


@dataclass
class _Partial:
    call_id: str = ""
    name: str = ""
    pieces: list[str] = field(default_factory=list)


def arguments_object(text: str) -> str:
    """Concatenated argument text as a JSON object's text (`{}` when empty)."""
    if not text.strip():
        return "{}"
    try:
        parsed = _decode.decode(text)
    except msgspec.DecodeError:
        parsed = None
    if isinstance(parsed, dict):
        return _encode(parsed).decode()
    return _encode({"raw_arguments": text}).decode()


class ToolCallAssembler:
    def __init__(self) -> None:
        self._calls: dict[int, _Partial] = {}
        self._latest: int | None = None

    def __bool__(self) -> bool:
        return any(call.name for call in self._calls.values())

    def add(self, fragment: ToolFragment) -> None:
        index = self._index_for(fragment)
        call = self._calls.setdefault(index, _Partial())
        self._latest = index
        if fragment.call_id:
            call.call_id = fragment.call_id
        if fragment.name:
            call.name = fragment.name
        if fragment.arguments:
            call.pieces.append(fragment.arguments)

    def _index_for(self, fragment: ToolFragment) -> int:
        if fragment.index is not None:
            return fragment.index
        if fragment.call_id:
            for index, call in self._calls.items():
                if call.call_id == fragment.call_id:
                    return index
        if fragment.name or self._latest is None:  # a new call without an index
            return max(self._calls, default=-1) + 1
        return self._latest

    def calls(self) -> list[AssembledCall]:
        """Every call that got a name, in index order; calls without a name are dropped."""
        return [
            AssembledCall(
                call_id=call.call_id or f"call_{secrets.token_hex(12)}",
                name=call.name,
                arguments_json=arguments_object("".join(call.pieces)),
            )
            for _index, call in sorted(self._calls.items())
            if call.name
        ]
