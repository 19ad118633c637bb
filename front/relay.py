"""Runs in the front: one chat from admission to last byte (routing, retries, deadline, metrics).

`run_chat` yields the client-visible events of one chat and ends with its `Outcome`, or raises
`ApiError`. Before a worker has produced anything the request may move to the next worker
(UNAVAILABLE, OVERLOADED, upstream 429, connection lost); after that a failure ends the reply.
`stream_response` delays the HTTP headers until the first event, so a failure that happens
before it is still a proper HTTP status; after it, an in-band error event in the API's format.
Events travel in batches, from the worker's socket to the client's: whatever of a chat arrived
together goes through each step (and into the client's socket) at once, so a streamed answer's
cost per chunk is the rendering, not a generator step per layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator

import msgspec
from aiohttp import web

from front.admission import AdmissionRejected
from front.backends import RequestForms
from front.candidates import candidate_links
from front.context import FrontContext
from front.errors import ApiError, ErrorKind, from_failure, no_ready_account_message
from front.forced import needs_call, reply_with_call
from front.pipeline import Collected, EventPipeline, FrontEvent, Outcome
from front.plan import ChatPlan, RequestMeta
from front.sse import StreamRenderer, open_stream
from front.usage import settle
from protocol.chat import Delta, Failure, Finish, Reasoning, ToolCall
from protocol.framing import FrameError
from protocol.vocabulary import Backend, ErrorCode

log = logging.getLogger(__name__)

RETRYABLE = frozenset(
    {
        ErrorCode.UNAVAILABLE,
        ErrorCode.OVERLOADED,
        ErrorCode.UPSTREAM_RATE_LIMITED,
        ErrorCode.NOT_LOGGED_IN,
    }
)
CLIENT_GONE = 499  # nginx's convention for "client closed the request", metrics only


class Restart:
    """Yielded when a non-streamed chat's worker died mid-reply: drop what was collected.

    Nothing of a non-streamed reply reaches the client before it is complete, so a worker
    lost half-way is still "before the first byte": the chat starts over on the next worker.
    """


RESTART = Restart()


def _no_worker_error(failures: list[Failure]) -> ApiError:
    limited = [
        f for f in failures if f.code in (ErrorCode.UPSTREAM_RATE_LIMITED, ErrorCode.OVERLOADED)
    ]
    if limited:
        waits = [f.retry_after for f in limited if f.retry_after is not None]
        worst = min(limited, key=lambda f: f.code != ErrorCode.UPSTREAM_RATE_LIMITED)
        err = from_failure(worst)
        if waits:
            err.retry_after = min(waits)
        return err
    upstream = [f for f in failures if f.retryable and f.code is not ErrorCode.NOT_LOGGED_IN]
    if upstream:  # every account tried failed upstream before answering: say what happened
        return from_failure(upstream[-1])
    detail = "; ".join(f"{f.served_by or '?'}: {f.message}" for f in failures[-3:])
    return ApiError(ErrorKind.UNAVAILABLE, no_ready_account_message(detail), retry_after=5.0)


async def worker_events(
    ctx: FrontContext, forms: RequestForms, meta: RequestMeta
) -> AsyncGenerator[list[object], None]:
    """The chat's events, a burst at a time, from the first worker that starts answering."""
    links = await candidate_links(ctx, forms, meta.affinity, meta.deadline)
    failures: list[Failure] = []
    for attempt, link in enumerate(links):
        if attempt:
            ctx.metrics.retries.labels(failures[-1].code.value).inc()
        started = False
        ctx.pool.acquire(link)
        try:
            chat = forms.for_backend(link.backend, meta.deadline)
            request = msgspec.structs.replace(chat, id=link.client.next_id())
            async with contextlib.aclosing(link.client.stream_batches(request)) as batches:
                async for batch in batches:
                    if not started and _retry_elsewhere(batch[0]):
                        assert isinstance(batch[0], Failure)
                        failures.append(msgspec.structs.replace(batch[0], served_by=link.name))
                        break
                    started = True
                    meta.served_by, meta.backend = link.name, link.backend
                    yield batch
                else:
                    return
        except (FrameError, OSError) as exc:
            link.mark_unreachable()
            if started and forms.plan.stream:
                raise ApiError(
                    ErrorKind.UPSTREAM, f"worker {link.name} went away mid-reply"
                ) from exc
            if started:
                yield [RESTART]
            failures.append(
                Failure(
                    id=0, code=ErrorCode.UNAVAILABLE, message="unreachable", served_by=link.name
                )
            )
        finally:
            ctx.pool.release(link)
    raise _no_worker_error(failures)


def _retry_elsewhere(event: object) -> bool:
    """A first event that says "nothing was sent, another account may serve this"."""
    return isinstance(event, Failure) and (event.code in RETRYABLE or event.retryable)


Item = FrontEvent | Outcome | Restart
Batch = list[Item]


async def run_chat(
    ctx: FrontContext, plan: ChatPlan, meta: RequestMeta
) -> AsyncGenerator[Batch, None]:
    """The client-visible items of one chat, a burst of the worker's events at a time."""
    remaining = None if meta.deadline is None else meta.deadline - asyncio.get_running_loop().time()
    try:
        await ctx.admission.acquire(max_wait=remaining)
    except AdmissionRejected as exc:
        ctx.metrics.rejections.labels(exc.reason.value).inc()
        raise ApiError(
            ErrorKind.OVERLOADED,
            "too many requests in flight, retry later",
            retry_after=exc.retry_after,
        ) from None
    try:
        pipeline: EventPipeline | None = None  # built for the backend of the worker that answers
        forms = RequestForms(plan, request_id=meta.request_id, scope=meta.scope)
        async with contextlib.aclosing(worker_events(ctx, forms, meta)) as batches:
            async for batch in batches:
                items: Batch = []
                for event in batch:
                    if event is RESTART:
                        pipeline = None
                        items.append(RESTART)
                        continue
                    if isinstance(event, Failure):
                        if items:
                            yield items  # what came before it still goes out
                        raise from_failure(event)
                    if pipeline is None:
                        pipeline = EventPipeline(plan, native=meta.backend is Backend.CLOUD)
                    if isinstance(event, Finish):
                        tail, outcome = pipeline.finish(event, meta.served_by)
                        yield [*items, *tail, outcome]
                        return
                    items += pipeline.feed(event)
                    if pipeline.limited:
                        break
                if items:
                    yield items
                if pipeline is not None and pipeline.limited:
                    break  # leaving the stream cancels the worker's upstream answer
        pipeline = pipeline or EventPipeline(plan, native=meta.backend is Backend.CLOUD)
        tail, outcome = pipeline.finish(None, meta.served_by)
        yield [*tail, outcome]
    finally:
        ctx.admission.release()


def chat_items(ctx: FrontContext, plan: ChatPlan, meta: RequestMeta) -> AsyncGenerator[Batch, None]:
    """`run_chat`'s batches; a forced tool choice may take a second ask (front/forced.py)."""
    if needs_call(plan):
        forced = reply_with_call(plan, lambda again: _one_by_one(run_chat(ctx, again, meta)))
        return _as_batches(forced)
    return run_chat(ctx, plan, meta)


async def _one_by_one(batches: AsyncGenerator[Batch, None]) -> AsyncGenerator[Item, None]:
    async with contextlib.aclosing(batches):
        async for batch in batches:
            for item in batch:
                yield item


async def _as_batches(items: AsyncGenerator[Item, None]) -> AsyncGenerator[Batch, None]:
    async with contextlib.aclosing(items):
        async for item in items:
            yield [item]


def _record(
    ctx: FrontContext, plan: ChatPlan, meta: RequestMeta, status: int, outcome: Outcome | None
) -> None:
    elapsed = asyncio.get_running_loop().time() - meta.started
    model = outcome.model if outcome and outcome.model else "unknown"
    account = meta.served_by or "none"
    ctx.metrics.requests.labels(plan.api.value, account, model, str(status)).inc()
    ctx.metrics.latency.labels(plan.api.value).observe(elapsed)
    ctx.requests_total += 1
    if status >= 400:
        ctx.failures_total += 1
    settle(ctx.usage, gate=ctx.gate, meta=meta, plan=plan, status=status, outcome=outcome)
    log.info(
        "chat %s model=%s account=%s status=%d in %.0fms",
        plan.api.value,
        plan.model,
        account,
        status,
        elapsed * 1000,
    )


def _deadline_error() -> ApiError:
    return ApiError(ErrorKind.TIMEOUT, "the request's deadline passed before the reply finished")


class _StreamOut:
    """The HTTP side of one streamed reply: headers go out with the first chunk.

    Each batch of items is rendered and written at once by the relaying task itself: a burst
    of the worker's events costs one write, and a stream needs no writer task of its own.
    aiohttp's `write` waits for the client only when its buffer is full, which is the stream's
    backpressure.
    """

    __slots__ = ("outcome", "renderer", "request", "response")  # one per open stream

    def __init__(self, request: web.Request, renderer: StreamRenderer) -> None:
        self.request = request
        self.renderer = renderer
        self.response: web.StreamResponse | None = None
        self.outcome: Outcome | None = None

    @property
    def started(self) -> bool:
        return self.response is not None

    async def send(self, batch: Batch) -> None:
        renderer = self.renderer
        chunks: list[bytes] = []
        for item in batch:
            if isinstance(item, Outcome):
                self.outcome = item
                chunks.append(renderer.close(item))
            elif not isinstance(item, Restart):  # never for a streamed chat: it fails in-band
                chunks.append(renderer.event(item))
        if not chunks:
            return
        if self.response is None:
            self.response = await open_stream(self.request)
            chunks.insert(0, renderer.open())
        await self.response.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    async def fail(self, error: ApiError) -> None:
        """An in-band error event: the stream has started, so the status is already 200."""
        log.warning("stream ended by an error after the first byte: %s", error.message)
        assert self.response is not None
        with contextlib.suppress(ConnectionResetError):
            await self.response.write(self.renderer.error(error))

    async def end(self) -> web.StreamResponse:
        if self.response is None:
            return web.Response(status=204)  # the client left before the headers: nobody reads it
        with contextlib.suppress(ConnectionResetError):
            await self.response.write_eof()
        return self.response


async def stream_response(
    request: web.Request,
    ctx: FrontContext,
    plan: ChatPlan,
    meta: RequestMeta,
    renderer: StreamRenderer,
) -> web.StreamResponse:
    out = _StreamOut(request, renderer)
    error: ApiError | None = None
    status = CLIENT_GONE
    try:
        try:
            meta.ticket = ctx.gate.admit(meta.key)  # a key over its limits: 429 before anything
            async with asyncio.timeout_at(meta.deadline):
                async with contextlib.aclosing(chat_items(ctx, plan, meta)) as batches:
                    async for batch in batches:
                        started = out.started
                        await out.send(batch)
                        if not started and out.started:
                            elapsed = asyncio.get_running_loop().time() - meta.started
                            ctx.metrics.ttft.labels(plan.api.value).observe(elapsed)
            status = 200
        except TimeoutError:
            error = _deadline_error()
        except ApiError as exc:
            error = exc
        except ConnectionResetError:
            log.info("client went away mid-stream")
        if error is not None:
            status = error.status
            if not out.started:
                raise error  # nothing sent yet: a real HTTP status, rendered by the middleware
            await out.fail(error)
    finally:
        _record(ctx, plan, meta, status, out.outcome)
    return await out.end()


async def collect(ctx: FrontContext, plan: ChatPlan, meta: RequestMeta) -> Collected:
    result = Collected()
    status = CLIENT_GONE
    try:
        meta.ticket = ctx.gate.admit(meta.key)
        async with asyncio.timeout_at(meta.deadline):
            async with contextlib.aclosing(chat_items(ctx, plan, meta)) as batches:
                async for batch in batches:
                    for item in batch:
                        if type(item) is Delta:
                            result.text.append(item.text)
                        elif type(item) is Reasoning:
                            result.reasoning.append(item.text)
                        elif isinstance(item, ToolCall):
                            result.calls.append(item)
                        elif isinstance(item, Outcome):
                            result.outcome = item
                        elif item is RESTART:
                            result = Collected()
        status = 200
    except TimeoutError:
        status = ErrorKind.TIMEOUT.status
        raise _deadline_error() from None
    except ApiError as err:
        status = err.status
        raise
    finally:
        _record(ctx, plan, meta, status, result.outcome)
    return result
