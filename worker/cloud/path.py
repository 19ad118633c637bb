"""Runs in the worker: how a chat is answered through Lingma's cloud API (lingma-protocol.md §14).

Under the runner's slot and deadline (worker/chat.py): Delta / Reasoning events as the stream
delivers them, native tool calls as `ToolCall` events with the cloud's call ids once the
answer is complete, and how it ended. Error rules (§14.10): an auth refusal re-reads the
credential once and retries once if it changed; a rate limit cools the account down (the
runner does); a 5xx, a cut stream or an empty answer before any output is retried once here,
then reported as retryable so the front tries another account; after output, a cut stream is
an error, never a complete answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from protocol.chat import (
    ChatRequest,
    ChatTurn,
    Delta,
    FinishReason,
    Reasoning,
    ToolCall,
    Usage,
)
from protocol.specs import WorkerSpec
from protocol.tokens import estimate_tokens
from protocol.vocabulary import ErrorCode
from worker.chat import Answered, ChatError, Emit
from worker.cloud import sse
from worker.cloud.access import CloudAccess
from worker.cloud.body import AUTO_MODEL, BodyInput, build_body
from worker.cloud.calls import ToolCallAssembler
from worker.cloud.client import CloudClient
from worker.cloud.credential import Credential, CredentialError
from worker.cloud.errors import CloudFailure, FailureKind, failure_for
from worker.models import ModelResolver, UnknownModel

log = logging.getLogger(__name__)

LOCAL_RETRY_PAUSE_S = 0.5


@dataclass
class StreamEnd:
    """What one attempt's stream said about its end (reset for every attempt)."""

    calls: ToolCallAssembler = field(default_factory=ToolCallAssembler)
    finish_reason: str = ""
    usage: Usage | None = None
    done: bool = False  # `[DONE]` arrived

    @property
    def complete(self) -> bool:
        return self.done or bool(self.finish_reason)


@dataclass
class CloudChat:
    """One chat's progress on the cloud path."""

    request: ChatRequest
    model_key: str
    started: float
    emit: Emit
    answer: list[str] = field(default_factory=list)
    reasoning_chars: int = 0
    first_token_at: float | None = None  # also: something reached the front, no silent retry
    stream: StreamEnd = field(default_factory=StreamEnd)
    tool_calls: int = 0

    def usage(self) -> Usage:
        usage = self.stream.usage
        if usage is not None and (usage.prompt_tokens or usage.completion_tokens):
            return usage
        return Usage(
            prompt_tokens=estimate_tokens(turns_text(self.request.turns)),
            completion_tokens=estimate_tokens("".join(self.answer)) + self.reasoning_chars // 4,
        )

    def log_fields(self) -> dict[str, Any]:
        return {}


def turns_text(turns: list[ChatTurn]) -> str:
    return "\n".join(t.text for t in turns) + "".join(
        c.arguments_json for t in turns for c in t.tool_calls
    )


class CloudPath:
    def __init__(
        self,
        spec: WorkerSpec,
        *,
        access: CloudAccess,
        client: CloudClient,
        runtime_models: ModelResolver,
    ) -> None:
        self.spec = spec
        self.access = access
        self.client = client
        self.runtime_models = runtime_models

    # ----------------------------------------------------------------- ChatPath

    def begin(self, request: ChatRequest, emit: Emit) -> CloudChat:
        return CloudChat(request, self._resolve(request), time.monotonic(), emit)

    async def answer(self, chat: CloudChat) -> Answered:
        try:
            await self._attempts(chat)
        except CloudFailure as exc:
            retryable = chat.first_token_at is None and (
                exc.may_succeed_elsewhere or exc.kind is FailureKind.AUTH
            )
            raise ChatError(
                exc.error_code, exc.message, exc.retry_after, retryable=retryable
            ) from None
        if chat.tool_calls:
            reason = FinishReason.TOOL_CALLS
        elif chat.stream.finish_reason == "length":
            reason = FinishReason.LENGTH
        else:
            reason = FinishReason.STOP
        return Answered(reason=reason, usage=chat.usage())

    async def stop(self, chat: CloudChat) -> None:
        """Nothing to send: leaving the stream closes its connection, which stops the cloud."""

    async def release(self, chat: CloudChat) -> None:
        """Nothing held beyond the stream, which is closed already."""

    def ended(self, chat: CloudChat) -> None:
        """The cloud keeps no session for us."""

    # ----------------------------------------------------------------- one chat

    def _resolve(self, request: ChatRequest) -> str:
        if not any(t.text.strip() or t.images or t.tool_calls for t in request.turns):
            raise ChatError(ErrorCode.BAD_REQUEST, "the conversation has no content")
        resolver = self.access.resolver if self.access.models else self.runtime_models
        try:
            return resolver.resolve(request.model)
        except UnknownModel as exc:
            if request.model.strip().lower() == AUTO_MODEL:  # the cloud's own choice (key "")
                return AUTO_MODEL
            raise ChatError(ErrorCode.UNKNOWN_MODEL, str(exc)) from None

    def _credential(self) -> Credential:
        try:
            return self.access.credential()
        except CredentialError as exc:
            message = f"cloud credential unusable: {exc}"
            raise ChatError(ErrorCode.NOT_LOGGED_IN, message, retryable=True) from None

    async def _attempts(self, chat: CloudChat) -> None:
        credential = self._credential()
        base_url = self.access.base_url
        images = await self._upload_images(chat.request, base_url, credential)
        auth_retried = server_retried = False
        while True:
            try:
                await self._attempt(chat, base_url, credential, images)
            except CloudFailure as exc:
                if chat.first_token_at is not None:
                    raise
                if exc.kind is FailureKind.AUTH and not auth_retried:
                    auth_retried = True
                    fresh = self.access.after_auth_failure(credential, exc)
                    if fresh is None:
                        raise
                    credential = fresh
                    continue
                if exc.may_succeed_elsewhere and not server_retried:
                    server_retried = True
                    log.info("cloud attempt failed before any output (%s): once more", exc)
                    await asyncio.sleep(LOCAL_RETRY_PAUSE_S)
                    continue
                raise
            return

    async def _upload_images(
        self, request: ChatRequest, base_url: str, credential: Credential
    ) -> dict[int, list[str]]:
        urls: dict[int, list[str]] = {}
        for index, chat_turn in enumerate(request.turns):
            for image in chat_turn.images:
                uploaded = await self.client.upload_image(base_url, credential, image)
                urls.setdefault(index, []).append(uploaded)
        return urls

    async def _attempt(
        self,
        chat: CloudChat,
        base_url: str,
        credential: Credential,
        images: dict[int, list[str]],
    ) -> None:
        request = chat.request
        model = next((m for m in self.access.models if m.key == chat.model_key), None)
        _rid, body = build_body(
            BodyInput(
                turns=request.turns,
                model_key=chat.model_key,
                model=model,
                tools=request.tools,
                tool_choice=request.tool_choice,
                temperature=request.temperature,
                reasoning_effort=request.reasoning_effort,
                image_urls=images,
            )
        )
        chat.stream = StreamEnd()
        async with self.client.chat(base_url, credential, body) as events:
            await self._relay(chat, events)
        self._complete(chat)

    async def _relay(self, chat: CloudChat, events: AsyncIterator[sse.CloudEvent]) -> None:
        rid, stream = chat.request.id, chat.stream
        async for event in events:
            if isinstance(event, sse.TextPiece):
                _first_output(chat)
                chat.answer.append(event.text)
                chat.emit(Delta(id=rid, text=event.text))
            elif isinstance(event, sse.ReasoningPiece):
                _first_output(chat)
                chat.reasoning_chars += len(event.text)
                chat.emit(Reasoning(id=rid, text=event.text))
            elif isinstance(event, sse.ToolFragment):
                stream.calls.add(event)
            elif isinstance(event, sse.FinishSeen):
                stream.finish_reason = event.reason
            elif isinstance(event, sse.UsageSeen):
                stream.usage = Usage(
                    prompt_tokens=event.prompt_tokens, completion_tokens=event.completion_tokens
                )
            elif isinstance(event, sse.DoneSeen):
                stream.done = True
                return
            elif isinstance(event, sse.InBandError):
                if stream.finish_reason:  # an error after a complete answer does not undo it (QD)
                    log.info("in-band error %d after the finish: ignored", event.status)
                    continue
                raise failure_for(event.status, event.code, event.message, where="chat stream")

    @staticmethod
    def _complete(chat: CloudChat) -> None:
        """The stream ended: a whole answer emits its tool calls; anything else is a failure."""
        if not chat.stream.complete:
            where = "mid-answer" if chat.first_token_at is not None else "before any output"
            message = f"the cloud stream ended without a finish ({where})"
            raise CloudFailure(FailureKind.CUT, message)
        calls = chat.stream.calls.calls()
        if not chat.answer and not calls:
            raise CloudFailure(FailureKind.EMPTY, "the cloud finished with an empty answer")
        for call in calls:
            _first_output(chat)
            chat.emit(
                ToolCall(
                    id=chat.request.id,
                    call_id=call.call_id,
                    name=call.name,
                    arguments_json=call.arguments_json,
                )
            )
        chat.tool_calls = len(calls)


def _first_output(chat: CloudChat) -> None:
    if chat.first_token_at is None:
        chat.first_token_at = time.monotonic()
