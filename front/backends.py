"""Runs in the front: one chat in the form each worker's backend reads, and who may serve it.

A runtime-backend worker gets the flattened messages with the tool instructions (its tools are
emulated over text); a cloud-backend worker gets the structured turns and the tools natively.
Each form is built once, on first use, so a retry on an account of the other backend works.
A request with images can only go to cloud-backend workers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from front.errors import ApiError, ErrorKind
from front.plan import ChatPlan
from front.worker_pool import WorkerLink
from protocol.chat import ChatRequest
from protocol.vocabulary import Backend

IMAGES_NEED_CLOUD = (
    'image input needs an account with backend = "cloud" (lingma-protocol.md §14); this '
    "gateway's accounts chat through the runtime, which takes text only"
)


class RequestForms:
    def __init__(self, plan: ChatPlan, *, request_id: str, scope: str) -> None:
        self.plan = plan
        self._fields = {"request_id": request_id, "scope": scope}
        self._built: dict[Backend, ChatRequest] = {}

    def for_backend(self, backend: Backend, deadline: float) -> ChatRequest:
        """The request for a worker of `backend`; `deadline` is event-loop time."""
        built = self._built.get(backend)
        if built is None:
            built = self._built[backend] = self._build(backend, deadline)
        return built

    def _build(self, backend: Backend, deadline: float) -> ChatRequest:
        plan = self.plan
        remaining = deadline - asyncio.get_running_loop().time()
        cloud = backend is Backend.CLOUD
        return ChatRequest(
            id=0,
            model=plan.model,
            messages=[] if cloud else plan.messages,
            tools=plan.tools,
            tool_choice=plan.tool_choice,
            max_tokens=plan.max_tokens,
            stream=plan.stream,
            deadline=time.time() + max(0.0, remaining),
            turns=plan.turns if cloud else [],
            temperature=plan.temperature if cloud else None,
            reasoning_effort=plan.reasoning_effort if cloud else "",
            **self._fields,
        )

    def eligible(self, links: list[WorkerLink], known: Iterable[WorkerLink]) -> list[WorkerLink]:
        """The links that can serve this plan; 400 when no account ever could (images)."""
        if not self.plan.images:
            return links
        if not any(link.backend is Backend.CLOUD for link in known):
            raise ApiError(ErrorKind.BAD_REQUEST, IMAGES_NEED_CLOUD, param="messages")
        return [link for link in links if link.backend is Backend.CLOUD]
