"""Runs in the emulator: the optional IDE-tools module (LINGMA_EMULATOR_TOOLS=1, §12.8, §9.1).

Lingma's native tools run in the IDE: the runtime asks its client to execute one with a
`tool/invoke` request and waits for the verdict. With the knob on, an agent-mode turn whose
script rule has an `ide_tool` (scripts.py) does that round trip before its answer text:

legacy  chat/answer with the ```` ```toolCall::<name>::<id>::INIT ```` card, tool/call/sync
        PENDING, RUNNING, then tool/invoke, then tool/call/sync FINISHED (or ERROR)
ACP     session/update tool_call (pending), tool_call_update in_progress, then tool/invoke,
        then tool_call_update completed (or failed)

The verdict is the first of: a reply to tool/invoke that says `success` true/false, an error
reply, or a `tool/invokeResult {toolCallId, name, success, errorMessage, result}` call. A bare
ack (`result: null`, as clients that ack every push send, or the acceptance of an `async` tool)
is no verdict: the turn keeps waiting for tool/invokeResult. Without a verdict within
TOOL_TIMEOUT_MS the tool counts as timed out and the turn goes on, so it never hangs. The
verdict is recorded (`"event": "tool"` line) and mentioned in one line of the answer text.

Agent mode is chat/ask's `mode`, or the ACP turn's mode as recorded (`_meta["ai-coding/mode"]`,
else session/set_mode, else agent). tool/invoke goes to the issuing connection only; with the
broadcast knob the other connections overhear the announcements, never the request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from emulator.connection import INVALID_PARAMS, ClientConnection, MethodError
from emulator.runtime import Method, Runtime, require_str
from emulator.scripts import IdeToolSpec, ScriptedAnswer
from emulator.settings import Knobs
from emulator.turns import Turn

log = logging.getLogger("lingma-emulator.tools")

TOOL_INVOKE = "tool/invoke"
TOOL_CALL_SYNC = "tool/call/sync"
INVOKE_RESULT = "tool/invokeResult"
AGENT_MODE = "agent"
MENTION_CHARS = 160  # how much of the client's result the answer text quotes


class SyncStatus(StrEnum):
    """`toolCallStatus` of tool/call/sync (the subset a single call goes through)."""

    INIT = "INIT"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    ERROR = "ERROR"


class ToolOutcome(StrEnum):
    SUCCEEDED = "succeeded"  # success: true
    DECLINED = "declined"  # success: false (errorMessage says why)
    FAILED = "failed"  # a JSON-RPC error reply to tool/invoke
    TIMED_OUT = "timed_out"  # no verdict within TOOL_TIMEOUT_MS


class Via(StrEnum):
    REPLY = "reply"  # the client's reply to tool/invoke
    INVOKE_RESULT = "invokeResult"  # a tool/invokeResult call
    NOTHING = "nothing"  # timed out


@dataclass(frozen=True)
class ToolVerdict:
    outcome: ToolOutcome
    via: Via
    payload: Any = None  # what the client sent: its result object, error object or call params
    error_message: str = ""

    @property
    def succeeded(self) -> bool:
        return self.outcome is ToolOutcome.SUCCEEDED

    def result(self) -> Any:
        return self.payload.get("result") if isinstance(self.payload, dict) else None


@dataclass(frozen=True)
class IdeCall:
    """One IDE tool call of a turn, under the request/session ids its pushes carry."""

    spec: IdeToolSpec
    request_id: str
    session_id: str
    call_id: str

    @classmethod
    def start(cls, spec: IdeToolSpec, base: dict[str, str]) -> IdeCall:
        call_id = f"toolu_{uuid.uuid4().hex[:16]}"
        return cls(spec, base["requestId"], base["sessionId"], call_id)

    def card(self) -> str:
        """The markdown tool card of the legacy chat/answer text (the plugin's 4-part header)."""
        return f"\n```toolCall::{self.spec.name}::{self.call_id}::{SyncStatus.INIT}\n```\n"

    def invoke_params(self) -> dict[str, Any]:
        return {
            "requestId": self.request_id,
            "toolCallId": self.call_id,
            "name": self.spec.name,
            "parameters": self.spec.parameters,
            "async": self.spec.is_async,
        }

    def sync_params(
        self, status: SyncStatus, project: str, verdict: ToolVerdict | None = None
    ) -> dict[str, Any]:
        failed = verdict is not None and not verdict.succeeded
        return {
            "sessionId": self.session_id,
            "requestId": self.request_id,
            "projectPath": project,
            "toolCallId": self.call_id,
            "toolCallStatus": status.value,
            "parameters": self.spec.parameters,
            "results": [verdict.result()] if verdict is not None and verdict.succeeded else [],
            "errorCode": verdict.outcome.value.upper() if verdict and failed else "",
            "errorMsg": verdict.error_message if verdict and failed else "",
        }

    def acp_meta(self, verdict: ToolVerdict | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {"ai-coding/tool-name": self.spec.name, "ai-coding/tool-kind": "ide"}
        if verdict is not None and not verdict.succeeded:
            meta["ai-coding/tool-call-error-code"] = verdict.outcome.value
            meta["ai-coding/tool-call-error-message"] = verdict.error_message
        return meta

    def mention(self, verdict: ToolVerdict) -> str:
        """One line of answer text saying how the client answered."""
        head = f"[lingma-emulator] IDE tool {self.spec.name} ({self.call_id})"
        if verdict.outcome is ToolOutcome.SUCCEEDED:
            quoted = json.dumps(verdict.result(), ensure_ascii=False)
            if len(quoted) > MENTION_CHARS:
                quoted = quoted[:MENTION_CHARS] + "…"
            return f"{head} succeeded: {quoted}\n\n"
        return f"{head} {verdict.outcome.value}: {verdict.error_message}\n\n"

    def record(self, verdict: ToolVerdict) -> dict[str, Any]:
        return {
            "tool_call_id": self.call_id,
            "name": self.spec.name,
            "parameters": self.spec.parameters,
            "async": self.spec.is_async,
            "outcome": verdict.outcome.value,
            "via": verdict.via.value,
            "reply": verdict.payload,
            "error_message": verdict.error_message,
        }


def wanted(knobs: Knobs, answer: ScriptedAnswer, mode: str) -> IdeToolSpec | None:
    """The rule's IDE tool, if the module is on and the turn is in agent mode."""
    if not knobs.tools or mode != AGENT_MODE:
        return None
    return answer.ide_tool


def _verdict(payload: Any, via: Via) -> ToolVerdict | None:
    """A verdict from the client's answer; None for a bare ack (no `success` in a reply)."""
    if not isinstance(payload, dict):
        return None if via is Via.REPLY else ToolVerdict(ToolOutcome.SUCCEEDED, via, payload)
    success = payload.get("success", payload.get("isSuccess"))
    message = payload.get("errorMessage")
    message = message if isinstance(message, str) else ""
    if not isinstance(success, bool):
        if via is Via.REPLY:
            return None
        success = not message  # tool/invokeResult without the flag: its message decides
    return ToolVerdict(
        ToolOutcome.SUCCEEDED if success else ToolOutcome.DECLINED, via, payload, message
    )


def _from_reply(message: dict[str, Any]) -> ToolVerdict | None:
    error = message.get("error")
    if error:
        text = error.get("message") if isinstance(error, dict) else None
        return ToolVerdict(
            ToolOutcome.FAILED, Via.REPLY, error, text if isinstance(text, str) else ""
        )
    return _verdict(message.get("result"), Via.REPLY)


async def _first_verdict(
    reply: asyncio.Future[dict[str, Any]] | None,
    later: asyncio.Future[dict[str, Any]],
    timeout_s: float,
) -> ToolVerdict:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    waiting: set[asyncio.Future[dict[str, Any]]] = {later} | ({reply} if reply else set())
    while waiting and (remaining := deadline - loop.time()) > 0:
        done, waiting = await asyncio.wait(
            waiting, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
        )
        for future in done:
            if future.cancelled():
                continue
            if future is reply:
                verdict = _from_reply(future.result())
            else:
                verdict = _verdict(future.result(), Via.INVOKE_RESULT)
            if verdict is not None:
                return verdict
    seconds = f"{timeout_s:g}"
    return ToolVerdict(ToolOutcome.TIMED_OUT, Via.NOTHING, None, f"no verdict within {seconds} s")


async def invoke(rt: Runtime, turn: Turn, call: IdeCall) -> ToolVerdict:
    """Send tool/invoke to the turn's client, wait for its verdict, record it."""
    later = rt.tool_verdicts.expect(call.call_id)
    reply = turn.conn.request(TOOL_INVOKE, call.invoke_params())
    try:
        verdict = await _first_verdict(reply, later, rt.knobs.tool_timeout_ms / 1000)
    finally:
        rt.tool_verdicts.forget(call.call_id)
        if reply is not None:
            reply.cancel()
    log.info(
        "EMULATOR tool/invoke %s %s for %s: %s via %s",
        call.spec.name,
        call.call_id,
        call.request_id,
        verdict.outcome.value,
        verdict.via.value,
    )
    rt.recorder.record_tool(
        flow=turn.flow,
        session_id=call.session_id,
        request_id=call.request_id,
        tool=call.record(verdict),
    )
    return verdict


Say = Callable[[str], Awaitable[None]]
Push = Callable[[str, dict[str, Any]], Awaitable[Any]]


async def legacy_round(
    rt: Runtime, turn: Turn, call: IdeCall, *, say: Say, push: Push
) -> ToolVerdict:
    """The legacy chat/ask shape of one IDE tool call (card, tool/call/sync, tool/invoke)."""
    session = rt.sessions.get(call.session_id)
    project = session.workspace if session else ""
    await say(call.card())
    for status in (SyncStatus.PENDING, SyncStatus.RUNNING):
        await push(TOOL_CALL_SYNC, call.sync_params(status, project))
    verdict = await invoke(rt, turn, call)
    final = SyncStatus.FINISHED if verdict.succeeded else SyncStatus.ERROR
    await push(TOOL_CALL_SYNC, call.sync_params(final, project, verdict))
    await say(call.mention(verdict))
    return verdict


async def acp_round(
    rt: Runtime,
    turn: Turn,
    call: IdeCall,
    *,
    say: Callable[[str], None],
    update: Callable[[dict[str, Any]], None],
) -> ToolVerdict:
    """The ACP shape of one IDE tool call (tool_call / tool_call_update around tool/invoke)."""
    update(
        {
            "sessionUpdate": "tool_call",
            "toolCallId": call.call_id,
            "title": call.spec.name,
            "kind": "other",
            "status": "pending",
            "rawInput": call.spec.parameters,
            "_meta": call.acp_meta(),
        }
    )
    progress = {"sessionUpdate": "tool_call_update", "toolCallId": call.call_id}
    update({**progress, "status": "in_progress", "_meta": call.acp_meta()})
    verdict = await invoke(rt, turn, call)
    output = [verdict.result()] if verdict.succeeded else []
    status = "completed" if verdict.succeeded else "failed"
    update({**progress, "status": status, "rawOutput": output, "_meta": call.acp_meta(verdict)})
    say(call.mention(verdict))
    return verdict


async def invoke_result(rt: Runtime, conn: ClientConnection, params: dict[str, Any]) -> Any:
    """tool/invokeResult: the late verdict of an (async) tool/invoke."""
    call_id = require_str(params, "toolCallId")
    if not rt.tool_verdicts.deliver(call_id, params):
        raise MethodError(INVALID_PARAMS, f"no tool call waits for a result: {call_id}")
    return {}


METHODS: dict[str, Method] = {INVOKE_RESULT: Method(invoke_result, "definition.ToolInvokeResult")}
