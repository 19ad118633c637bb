"""Runs in `lingma-gw doctor`: the probes, each answering one question the spec leaves open.

Read-only first (lingma-protocol.md §4, §5.1, §5.2): `initialize` with the merged params,
`auth/status`, `config/queryModels`, `config/getEndpoint`, whether `Cosy-MachineToken` is
needed (§3.3). With chats (`--chat`): whether a second connection is served or evicts the
first, one tiny ACP ask (is `session/new` there, are pushes copied to other connections, what
does `chat_finish.data` hold, how does reasoning arrive), one tiny legacy ask (`chat/finish`
and its `statusCode`, think fences, push ids), and one cancel sent as a request, to see
whether anything answers it. Every answer names the evidence it rests on.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from protocol.specs import WorkerSpec
from worker.acp import prompt_meta
from worker.discovery import machine_token_headers
from worker.doctor_wire import Finding, Message, ProbeWire, Seen, is_acp_finish, params_of
from worker.endings import SUCCESS_REASONS
from worker.legacy import LegacyFlow
from worker.routes import push_request_id
from worker.rpc import RpcClosed, RpcConnection, RpcError, initialize_params
from worker.upstream import Ask

PING = "Reply with exactly: pong"
LONG = "Count from 1 to 300, one number per line, nothing else."
SETTLE_S = 1.0  # how long an eviction or a stray server request gets to show
CANCEL_REPLY_S = 3.0
THINK_MARK = "````think::"


class Probes:
    def __init__(
        self, spec: WorkerSpec, port: int, http: aiohttp.ClientSession, wire: ProbeWire
    ) -> None:
        self.spec = spec
        self.port = port
        self.http = http
        self.wire = wire
        self.workspace = Path(spec.work_dir) / "workspace"
        self.findings: list[Finding] = []
        self.sessions: list[str] = []  # ours, deleted at the end
        self.stray_methods: set[str] = set()
        self.main_name = "conn1"  # the connection the asks go over
        self.logged_in = False
        self.model = spec.default_model
        self._opened = 0

    def found(self, question: str, answer: str, evidence: str = "") -> None:
        self.findings.append(Finding(question, answer, evidence))
        self.wire.transcript.note(f"{question}: {answer} ({evidence})")

    async def connect(self, headers: dict[str, str] | None = None) -> RpcConnection:
        self._opened += 1
        name = f"conn{self._opened}"
        wanted = machine_token_headers(self.spec.work_dir) if headers is None else headers
        return await RpcConnection.open(
            self.http, self.port, timeout=5.0, headers=wanted, tap=self.wire.tap(name)
        )

    async def call(self, conn: RpcConnection, method: str, params: Message) -> Any:
        return await conn.call(method, params, self.spec.rpc_timeout_s)

    # ----------------------------------------------------------------- read-only

    async def handshake(self) -> RpcConnection:
        conn = await self.connect()
        try:
            result = await self.call(conn, "initialize", initialize_params(self.workspace))
            answer = "merged LSP+ACP params accepted"
        except RpcError as exc:
            result = await self.call(conn, "initialize", {})
            answer = f"merged params refused ({exc.code}), `{{}}` accepted"
        info = result.get("serverInfo") if isinstance(result, dict) else None
        self.found("handshake", answer, f"serverInfo {info}")
        registered = await self.wire.until(
            lambda s: s.message.get("method") == "extension/register", SETTLE_S
        )
        self.found(
            "on_connect",
            "extension/register request" if registered else "nothing",
            "server requests right after connect (§3.3)",
        )
        return conn

    async def account(self, conn: RpcConnection) -> None:
        status = await self.call(conn, "auth/status", {})
        status = status if isinstance(status, dict) else {}
        self.logged_in = status.get("status") == 2
        self.found(
            "login",
            "logged in" if self.logged_in else "logged out",
            f"auth/status status={status.get('status')!r}; fields: {', '.join(sorted(status))}",
        )
        models = await self.call(conn, "config/queryModels", {})
        models = models if isinstance(models, dict) else {}
        keys = {i.get("key") for items in models.values() if isinstance(items, list) for i in items}
        reasoning = sorted(
            str(i.get("key"))
            for items in models.values()
            if isinstance(items, list)
            for i in items
            if isinstance(i, dict) and i.get("isReasoning")
        )
        if reasoning:  # a reasoning model shows how thinking text travels
            self.model = reasoning[0]
        self.found("models", f"{len(keys)} models", f"scenes: {', '.join(sorted(models))}")
        endpoint = await self.call(conn, "config/getEndpoint", {})
        value = endpoint.get("endpoint") if isinstance(endpoint, dict) else None
        self.found("endpoint", value or "default", "config/getEndpoint")

    async def machine_token(self) -> None:
        headers = machine_token_headers(self.spec.work_dir)
        if not headers:
            self.found("machine_token", "no token in the work dir", "cache/machine_token.json")
            return
        try:
            bare = await self.connect(headers={})
        except RpcClosed as exc:
            self.found("machine_token", "required", f"a connection without it failed: {exc}")
            return
        await bare.close()
        self.found("machine_token", "not required", "a connection without it was accepted")

    # ----------------------------------------------------------------- chats

    async def clients(self, main: RpcConnection) -> tuple[RpcConnection, RpcConnection | None]:
        """Open a second connection: does the first survive it?"""
        observer = await self.connect()
        await self.call(observer, "initialize", initialize_params(self.workspace))
        await asyncio.sleep(SETTLE_S)
        if main.closed:
            self.found("clients", "one at a time", "a second connection closed the first")
            self.main_name = f"conn{self._opened}"
            return observer, None
        self.found("clients", "many", "two connections stayed open")
        return main, observer

    async def acp(self, main: RpcConnection, observer: RpcConnection | None) -> str:
        """session/new, set_model and a tiny prompt; returns the session id ('' without ACP)."""
        session_id = await self._session_new(main)
        if not session_id:
            return ""
        ask = Ask(uuid.uuid4().hex, session_id, PING, self.model, "agent", False, "")
        try:
            await self.call(
                main,
                "session/set_model",
                {"sessionId": session_id, "modelId": self.model, "_meta": prompt_meta(ask)},
            )
            self.found("set_model", "accepted", f"model {self.model}")
        except (RpcError, TimeoutError) as exc:
            self.found("set_model", "failed", str(exc) or "no answer")
        mark = len(self.wire.seen)
        prompt = await main.begin_call(
            "session/prompt",
            {"sessionId": session_id, "prompt": [{"type": "text", "text": PING}],
             "_meta": prompt_meta(ask)},
        )  # fmt: skip
        finish = await self.wire.until(
            lambda s: s.conn == self.main_name and is_acp_finish(s, ask.request_id),
            self._chat_wait(),
        )
        self._acp_findings(ask.request_id, mark, finish, observer is not None)
        self.found(
            "prompt_reply",
            "answered" if prompt.done() else "no answer (yet)",
            "session/prompt's own JSON-RPC reply (§5.4)",
        )
        prompt.cancel()
        return session_id

    async def _session_new(self, main: RpcConnection) -> str:
        params = {"cwd": str(self.workspace), "mcpServers": [], "_meta": {}, "timestamp": 0}
        try:
            result = await main.call("session/new", params, self.spec.setup_timeout_s)
        except RpcError as exc:
            self.found("acp", "not supported", f"session/new: error {exc.code}: {exc.message}")
            return ""
        except TimeoutError:
            limit = f"{self.spec.setup_timeout_s:.0f}s"
            self.found("acp", "session/new hangs", f"no answer within {limit} (§6.13)")
            return ""
        session_id = str(result.get("sessionId") or result.get("id") or "") if result else ""
        if session_id:
            self.sessions.append(session_id)
        self.found("acp", "supported" if session_id else "no session id", f"session/new {result}")
        return session_id

    def _acp_findings(self, request_id: str, mark: int, finish: Seen | None, two: bool) -> None:
        mine = [s for s in self.wire.pushes(mark) if push_request_id(params_of(s)) == request_id]
        main = [s for s in mine if s.conn == self.main_name]
        if finish is None:
            self.found("acp_finish", "no finish", f"within {self._chat_wait():.0f}s")
        else:
            data = params_of(finish).get("update", {}).get("data", params_of(finish))
            fields = ", ".join(sorted(data)) if isinstance(data, dict) else "?"
            code = "statusCode present" if "statusCode" in data else "no statusCode"
            self.found("acp_finish", f"fields: {fields}", f"{code}; reason {data.get('reason')!r}")
        kinds = {
            str(params_of(s)["update"].get("sessionUpdate"))
            for s in main
            if isinstance(params_of(s).get("update"), dict)
        }
        text = "".join(
            str(params_of(s)["update"].get("content", {}).get("text", ""))
            for s in main
            if params_of(s).get("update", {}).get("sessionUpdate") == "agent_message_chunk"
        )
        thinking = "thought chunks" if "agent_thought_chunk" in kinds else "none seen"
        if THINK_MARK in text:
            thinking = "think fences in the message text"
        self.found("acp_think", thinking, f"update kinds: {', '.join(sorted(kinds))}")
        if two:
            copied = sum(1 for s in mine if s.conn != self.main_name)
            answer = "yes" if copied else "no"
            self.found("pushes_broadcast", answer, f"{copied} of this request's pushes overheard")
        else:
            self.found("pushes_broadcast", "unknown", "only one connection is served")
        self._strays(mark, request_id)

    async def legacy(self, main: RpcConnection) -> None:
        ask = Ask(uuid.uuid4().hex, str(uuid.uuid4()), PING, self.model, "chat", False, "")
        mark = len(self.wire.seen)
        try:
            accepted = await self.call(main, "chat/ask", LegacyFlow().params(ask))
        except (RpcError, TimeoutError) as exc:
            self.found("legacy", "chat/ask failed", str(exc) or "no answer")
            return
        self.sessions.append(ask.session_id)
        self.found("legacy", "chat/ask accepted", f"reply {accepted}")
        finish = await self.wire.until(
            lambda s: (
                s.conn == self.main_name
                and s.message.get("method") == "chat/finish"
                and params_of(s).get("requestId") == ask.request_id
            ),
            self._chat_wait(),
        )
        mine = [
            s
            for s in self.wire.pushes(mark)
            if s.conn == self.main_name and params_of(s).get("requestId") == ask.request_id
        ]
        self._legacy_findings(mine, finish)
        self._strays(mark, ask.request_id)

    def _legacy_findings(self, mine: list[Seen], finish: Seen | None) -> None:
        if finish is None:
            self.found("legacy_finish", "no chat/finish", "the answer must end by silence (§5.3)")
        else:
            data = params_of(finish)
            code = data.get("statusCode", "absent")
            self.found("legacy_finish", f"statusCode {code}", f"reason {data.get('reason')!r}")
        answers = [params_of(s) for s in mine if s.message.get("method") == "chat/answer"]
        text = "".join(str(a.get("text") or "") for a in answers)
        if THINK_MARK in text:
            thinking = "think fences in chat/answer"
        elif any(s.message.get("method") == "chat/think" for s in mine):
            thinking = "chat/think events"
        else:
            thinking = "none seen"
        empty = sum(1 for a in answers if not a.get("text"))
        self.found("legacy_think", thinking, f"{len(answers)} deltas, {empty} empty")
        methods = [s.message.get("method") for s in mine]
        ids = {("id" in s.message) for s in mine}
        shape = {frozenset({True}): "requests with ids", frozenset({False}): "notifications"}
        self.found(
            "push_ids",
            shape.get(frozenset(ids), "mixed"),
            f"legacy pushes: {' '.join(map(str, methods[:6]))} ...",
        )

    async def cancel(self, main: RpcConnection, acp: bool) -> None:
        """A long answer, cancelled (as a request, to see whether anything answers it)."""
        if acp:
            session_id = await self._session_new_quiet(main)
            if session_id:
                await self._cancel_acp(main, session_id)
                return
        await self._stop_legacy(main)

    async def _session_new_quiet(self, main: RpcConnection) -> str:
        params = {"cwd": str(self.workspace), "mcpServers": [], "_meta": {}, "timestamp": 0}
        with_id = await self.call(main, "session/new", params)
        session_id = str(with_id.get("sessionId") or with_id.get("id") or "")
        self.sessions.append(session_id)
        return session_id

    async def _cancel_acp(self, main: RpcConnection, session_id: str) -> None:
        ask = Ask(uuid.uuid4().hex, session_id, LONG, self.model, "", False, "")
        meta = prompt_meta(ask)
        prompt = await main.begin_call(
            "session/prompt",
            {"sessionId": session_id, "prompt": [{"type": "text", "text": LONG}], "_meta": meta},
        )
        await self._first_output(ask.request_id)
        reply = await main.begin_call(
            "session/cancel",
            {"sessionId": session_id, "_meta": {"ai-coding/request-id": ask.request_id}},
        )
        await self._cancel_outcome("session/cancel", reply, ask.request_id)
        prompt.cancel()

    async def _stop_legacy(self, main: RpcConnection) -> None:
        ask = Ask(uuid.uuid4().hex, str(uuid.uuid4()), LONG, self.model, "chat", False, "")
        await self.call(main, "chat/ask", LegacyFlow().params(ask))
        self.sessions.append(ask.session_id)
        await self._first_output(ask.request_id)
        params = {"requestId": ask.request_id, "sessionId": ask.session_id}
        reply = await main.begin_call("chat/stop", params)
        await self._cancel_outcome("chat/stop", reply, ask.request_id)

    async def _first_output(self, request_id: str) -> None:
        await self.wire.until(
            lambda s: (
                push_request_id(params_of(s)) == request_id
                and s.message.get("method") in ("chat/answer", "session/update")
            ),
            self._chat_wait(),
        )

    async def _cancel_outcome(self, method: str, reply: asyncio.Future[Any], rid: str) -> None:
        try:
            async with asyncio.timeout(CANCEL_REPLY_S):
                result = await reply
            self.found("cancel", "answered", f"{method} sent as a request: {result!r}")
        except TimeoutError:
            self.found("cancel", "not answered", f"{method}: no reply in {CANCEL_REPLY_S:.0f}s")
        except RpcError as exc:
            self.found("cancel", "refused", f"{method}: {exc}")
        finish = await self.wire.until(
            lambda s: s.conn == self.main_name and is_acp_finish(s, rid), self._chat_wait()
        )
        if finish is None:
            self.found("cancel_finish", "no finish after the cancel", method)
            return
        data = params_of(finish).get("update", {}).get("data", params_of(finish))
        code = data.get("statusCode", "absent") if isinstance(data, dict) else "?"
        reason = str(data.get("reason") or "")
        answer = f"reason {reason!r}"
        if reason.lower() in SUCCESS_REASONS:
            answer += " (the answer ended before the cancel took effect)"
        self.found("cancel_finish", answer, f"statusCode {code}")

    def _strays(self, mark: int, request_id: str) -> None:
        """Pushes on our connection during a turn that belong to none of our requests."""
        self.stray_methods.update(
            str(s.message.get("method"))
            for s in self.wire.pushes(mark)
            if s.conn == self.main_name
            and push_request_id(params_of(s)) != request_id
            and params_of(s).get("sessionId") not in self.sessions
            and s.message.get("method") != "extension/register"
        )

    def report_strays(self) -> None:
        found = ", ".join(sorted(self.stray_methods)) or "none"
        self.found("unrelated_pushes", found, "pushes during our turns that were for no request")

    async def cleanup(self, main: RpcConnection) -> None:
        for session_id in self.sessions:
            try:
                await self.call(main, "chat/deleteSessionById", {"sessionId": session_id})
            except (RpcError, RpcClosed, TimeoutError):
                continue

    def _chat_wait(self) -> float:
        return max(30.0, self.spec.first_token_timeout_s)
