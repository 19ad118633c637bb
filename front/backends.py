"""Runs in the front: one chat in the form each worker's backend reads, and who may serve it.

A runtime-backend worker gets the flattened messages with the tool instructions (its tools are
emulated over text); a cloud-backend worker gets the structured turns and the tools natively.
Each form is built once, on first use, so a retry on an account of the other backend works.
Images travel in both forms: with their bytes a worker of either backend takes them; an image
that is only a URL (not fetched by the front, front/image_fetch.py) goes to cloud workers only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from front.errors import ApiError, ErrorKind
from front.plan import ChatPlan
from front.turns import url_images
from front.worker_pool import WorkerLink
from protocol.chat import ChatRequest
from protocol.vocabulary import Backend

IMAGE_URLS_NEED_CLOUD = (
    "image URLs are not fetched by this gateway ([limits] fetch_image_urls = false) and its "
    "accounts chat through the runtime, which needs the image's bytes: send the image as "
    'base64 (a data: URL, or a base64 source), or use an account with backend = "cloud"'
)


class RequestForms:
    __slots__ = ("_built", "_request_id", "_scope", "plan")  # one per open chat

    def __init__(self, plan: ChatPlan, *, request_id: str, scope: str) -> None:
        self.plan = plan
        self._request_id, self._scope = request_id, scope
        self._built: dict[Backend, ChatRequest] = {}

    def for_backend(self, backend: Backend, deadline: float | None) -> ChatRequest:
        """The request for a worker of `backend`; `deadline` is event-loop time (None: none)."""
        built = self._built.get(backend)
        if built is None:
            built = self._built[backend] = self._build(backend, deadline)
        return built

    def _build(self, backend: Backend, deadline: float | None) -> ChatRequest:
        plan = self.plan
        cloud = backend is Backend.CLOUD
        return ChatRequest(
            id=0,
            model=plan.model,
            messages=[] if cloud else plan.messages,
            tools=plan.tools,
            tool_choice=plan.tool_choice,
            max_tokens=plan.max_tokens,
            stream=plan.stream,
            deadline=_wall_clock(deadline),
            turns=plan.turns if cloud else [],
            temperature=plan.temperature if cloud else None,
            reasoning_effort=plan.reasoning_effort if cloud else "",
            request_id=self._request_id,
            scope=self._scope,
        )

    def eligible(self, links: list[WorkerLink], known: Iterable[WorkerLink]) -> list[WorkerLink]:
        """The links that can serve this plan; 400 when no account ever could (image URLs)."""
        if not url_images(self.plan.turns):
            return links
        if not any(link.backend is Backend.CLOUD for link in known):
            raise ApiError(ErrorKind.BAD_REQUEST, IMAGE_URLS_NEED_CLOUD, param="messages")
        return [link for link in links if link.backend is Backend.CLOUD]


def _wall_clock(deadline: float | None) -> float:
    """An event-loop deadline as the epoch time a worker reads; 0 = none."""
    if deadline is None:
        return 0.0
    remaining = deadline - asyncio.get_running_loop().time()
    return time.time() + max(0.001, remaining)
